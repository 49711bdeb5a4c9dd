"""kfp.local's console output: where it goes, and the one line that says why a step failed.

kfp.local streams every task's output to `sys.stdout` and, when a task fails, raises a
RuntimeError that names only the task. A person (or a script reading `--json`) wants the
reason: the exception message the step raised, e.g. "target column 'churn' not found".
"""

import collections
import contextlib
import io
import re
import sys
from collections.abc import Iterator

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Timeout)): (.+)$")
FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")


class LocalRunError(RuntimeError):
    """A pipeline step failed in a local run; the message names the step and its error."""


class _Tee(io.TextIOBase):
    """Writes through to `stream` and keeps the last lines for the failure message."""

    def __init__(self, stream, keep_lines: int = 400):
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


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
def local_run_output(stream=None) -> Iterator[None]:
    """Send kfp.local's output to `stream` (default stdout); turn failures into LocalRunError."""
    tee = _Tee(stream or sys.stdout)
    original = sys.stdout
    sys.stdout = tee
    try:
        yield
    except RuntimeError as error:
        raise LocalRunError(failure_reason(error, list(tee.lines))) from error
    finally:
        sys.stdout = original
