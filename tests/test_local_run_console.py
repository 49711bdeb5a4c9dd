"""What a person sees of a local run (`make demo`): one line per task, a failing task's tail.

Two tiny pipelines run through the real kfp.local, so the test pins how kfp.local reports
tasks (root-logger records, subprocess lines re-printed to `sys.stdout`) without the cost
of the real ones.
"""

import io
import re

import pytest
from kfp import dsl, local

from ctloop.pipelines.local_logs import TAIL_LINES, LocalRunError, local_run_output

CHATTY_LINES = 200
TASK_LINE = re.compile(r"^   (\S+) +(SUCCESS|FAILURE) +\d+\.\d s$")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def chatty(lines: int) -> int:
    for number in range(lines):
        print(f"chatty line {number}")
    return lines


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def failing(after: int):
    for number in range(2 * after):
        print(f"failing line {number}")
    raise ValueError(f"column 'churn' has {after} nulls")


@dsl.pipeline(name="chatty-twice")
def chatty_twice(lines: int = CHATTY_LINES):
    first = chatty(lines=lines)
    chatty(lines=first.output)


@dsl.pipeline(name="chatty-then-failing")
def chatty_then_failing(lines: int = CHATTY_LINES):
    first = chatty(lines=lines)
    failing(after=first.output)


@pytest.fixture(autouse=True)
def local_runner(tmp_path):
    """kfp.local set up as `run_training_pipeline` sets it up."""
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        raise_on_error=True,
    )


def test_the_console_gets_one_line_per_task_and_the_log_everything():
    log, console = io.StringIO(), io.StringIO()

    with local_run_output(log, console):
        chatty_twice()

    tasks = [TASK_LINE.match(line).groups() for line in console.getvalue().splitlines()]
    assert tasks == [("chatty", "SUCCESS"), ("chatty-2", "SUCCESS")]
    assert log.getvalue().count("chatty line 199") == 2
    assert "\x1b[" not in log.getvalue()  # kfp's colours are for terminals, not files


def test_a_failing_task_shows_the_end_of_its_output_on_the_console():
    log, console = io.StringIO(), io.StringIO()

    with pytest.raises(LocalRunError) as raised, local_run_output(log, console):
        chatty_then_failing()

    assert str(raised.value) == "step failing failed: ValueError: column 'churn' has 200 nulls"
    first, second, heading, *tail = console.getvalue().splitlines()
    assert TASK_LINE.match(first).groups() == ("chatty", "SUCCESS")
    assert TASK_LINE.match(second).groups() == ("failing", "FAILURE")
    assert heading == "   --- the end of failing's output:"
    assert len(tail) == TAIL_LINES
    assert re.fullmatch(r"   \| +ValueError: column 'churn' has 200 nulls", tail[-1])
    assert not any("chatty line" in line for line in tail)
    assert "failing line 0\n" in log.getvalue()  # the whole output stays in the log
