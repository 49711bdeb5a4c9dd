"""Stopping a local run: SIGTERM or SIGINT to `ctloop run` stops the running step too.

kfp.local runs each task as a child process (`subprocess.Popen` in
`kfp.local.subprocess_task_handler`), in this process's group and with no signal handling of
its own. A SIGTERM sent to the command alone (`kill PID`, a service manager, a CI timeout) ended
the command and left the step running to its end, its MLflow run logged as finished. Here the
signal is passed on to every process below this one; they get `GRACE_S` to end (the train step
marks its MLflow run KILLED on the way out, see `mlflow_registry.training_run`), and whatever is
left then is killed. The command then fails with LocalRunStopped, whose exit code is the
shell's for that signal (143 for SIGTERM, 130 for SIGINT).

psutil finds the processes below this one: POSIX has no call that lists a process's
children.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import psutil

GRACE_S = 20.0
"""Seconds the steps get to end on their own after the signal before they are killed."""
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LocalRunStopped(RuntimeError):
    """A local run stopped by a signal; `exit_code` is 128 + the signal's number."""

    def __init__(self, signum: int, stopped: list[str]) -> None:
        name = signal.Signals(signum).name
        steps = f"stopped {', '.join(stopped)}" if stopped else "no step was running"
        super().__init__(f"run stopped by {name}: {steps}")
        self.exit_code = 128 + signum


@contextlib.contextmanager
def steps_stopped_on_signal(grace_s: float = GRACE_S) -> Iterator[None]:
    """While the block runs, SIGTERM or SIGINT stops every process below this one, then
    raises LocalRunStopped. Outside the main thread (where Python cannot take signals) it
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signalled: list[psutil.Process] = []
    stopped: list[str] = []

    def stop(signum, frame):
        if received:  # a second signal while the steps end: end them now
            _signal_all(psutil.Process().children(recursive=True), signal.SIGKILL)
            return
        received.append(signum)
        signalled.extend(psutil.Process().children(recursive=True))
        stopped.extend(dict.fromkeys(_describe(process) for process in signalled))
        _signal_all(signalled, signal.SIGTERM)
        # Out of kfp.local's task loop at once: it closes its end of the step's output pipe,
        # so a step that writes while it ends gets an error rather than a full pipe to wait on.
        raise KeyboardInterrupt  # the one exception that loop does not wait out

    previous = {number: signal.signal(number, stop) for number in STOPPING_SIGNALS}
    try:
        yield
    except KeyboardInterrupt:
        if not received:  # raised by something else: Python's own Ctrl-C
            raise
        _, alive = psutil.wait_procs(signalled, timeout=grace_s)
        _signal_all(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
        raise LocalRunStopped(received[0], stopped) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def _describe(process: psutil.Process) -> str:
    """`step train_model` for a kfp.local task (its shell and its Python alike), else
    `process 123 (name)`."""
    try:
        command = process.cmdline()
        name = process.name()
    except psutil.Error:
        return f"process {process.pid}"
    if "--function_to_execute" in command[:-1]:
        return f"step {command[command.index('--function_to_execute') + 1]}"
    return f"process {process.pid} ({name})"
