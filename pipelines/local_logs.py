"""kfp.local's output during a local run: the whole log to one stream, one line per task to another.

kfp.local has no per-task hook. It reports through two channels, both aimed at `sys.stdout`:
the orchestrator logs each task's start and end as records of the root logger (its handler,
re-created for every task, writes to whatever `sys.stdout` is then), and each task's
subprocess output is re-printed line by line with `print`. So a run swaps `sys.stdout` for a
`TaskLog`, which passes everything on to the full log, and hangs the same object on the root
logger as a filter: a logger's filters survive kfp clearing its handlers, and they see the
task records before they are written, with the time each was made. From those a person gets
one line per task (name, status, duration) and, when a task fails, the end of that task's
output; the whole log stays where it was sent.

When a task fails, kfp.local raises a RuntimeError that names only the task. A person (or a
script reading `--json`) wants the reason, the exception message the step raised, e.g.
"target column 'churn' not found": `failure_reason` finds it in the task's output.
"""

import collections
import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Timeout)): (.+)$")
FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")
TASK_STARTED = re.compile(r"^Executing task '([^']+)'$")
TASK_FINISHED = re.compile(r"^Task '([^']+)' finished with status (\w+)$")
TAIL_LINES = 30
"""Lines of a failing task's output shown on the console: its traceback and what led to it."""


class LocalRunError(RuntimeError):
    """A pipeline step failed in a local run; the message names the step and its error."""


class TaskLog(io.TextIOBase):
    """`sys.stdout` during a local run, and a logging filter on the root logger.

    Every line goes to `stream`, as kfp.local wrote it (its colours kept only when `stream`
    is a terminal). When `console` is given, each finished task adds one line there, and a
    failed one the last `tail_lines` lines of its output.
    """

    def __init__(self, stream: TextIO, console: TextIO | None = None, tail_lines=TAIL_LINES):
        self.stream = stream
        self.console = console
        self.tail_lines = tail_lines
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        """The run's last lines, where `failure_reason` looks for the step's exception."""
        self._task_lines: collections.deque[str] = collections.deque(maxlen=tail_lines)
        """The running task's last lines that are not blank."""
        self._started: dict[str, float] = {}
        self._partial = ""
        self._colour = bool(getattr(stream, "isatty", lambda: False)())

    def write(self, text: str) -> int:
        self.stream.write(text if self._colour else ANSI.sub("", text))
        *complete, self._partial = (self._partial + text).split("\n")
        plain = [ANSI.sub("", line) for line in complete]
        self.lines.extend(plain)
        self._task_lines.extend(line for line in plain if line.strip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def filter(self, record: logging.LogRecord) -> bool:
        """Note kfp.local's task records on their way to `write`; let every record through."""
        message = ANSI.sub("", record.getMessage())
        if started := TASK_STARTED.match(message):
            self._started[started.group(1)] = record.created
            self._task_lines.clear()
        elif finished := TASK_FINISHED.match(message):
            self._report(*finished.groups(), record.created)
        return True

    def _report(self, task: str, status: str, finished: float) -> None:
        if self.console is None:
            return
        seconds = finished - self._started.pop(task, finished)
        self.console.write(f"   {task:<30} {status:<8} {seconds:6.1f} s\n")
        if status != "SUCCESS":
            self.console.write(f"   --- the end of {task}'s output:\n")
            self.console.writelines(f"   | {line}\n" for line in self._task_lines)
        self.console.flush()


def failure_reason(error: RuntimeError, lines: list[str]) -> str:
    """'step validate-dataset failed: DataValidationError: …' from kfp.local's output."""
    task = FAILED_TASK.search(ANSI.sub("", str(error)))
    step = task.group(1) if task else "a step"
    for line in reversed(lines):
        match = EXCEPTION_LINE.match(ANSI.sub("", line))
        if match:
            return f"step {step} failed: {match.group(1)}: {match.group(2)}"
    return f"step {step} failed: {ANSI.sub('', str(error))}"


@contextlib.contextmanager
def local_run_output(stream: TextIO | None = None, console: TextIO | None = None) -> Iterator[None]:
    """Send kfp.local's output to `stream` (default stdout) and, when `console` is given, one
    line per task there; turn a failed run into LocalRunError."""
    log = TaskLog(stream or sys.stdout, console)
    root = logging.getLogger()
    original = sys.stdout
    sys.stdout = log
    root.addFilter(log)
    try:
        yield
    except RuntimeError as error:
        raise LocalRunError(failure_reason(error, list(log.lines))) from error
    finally:
        root.removeFilter(log)
        sys.stdout = original
