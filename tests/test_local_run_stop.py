"""Stopping `ctloop run`: a SIGTERM to the command alone stops the running step with it, and
the step's MLflow run ends KILLED, not FINISHED.

One real local training run on the Telco table, made to train for a long time (no early
stopping, a million rounds), is stopped as soon as its train step has opened its MLflow run.
"""

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.e2e

LONG_TRAINING = '{"num_boost_round": 1000000, "early_stopping_rounds": null, "eta": 0.001}'


def _run_statuses(database) -> list[str]:
    try:
        with sqlite3.connect(database) as connection:
            return [status for (status,) in connection.execute("SELECT status FROM runs")]
    except sqlite3.OperationalError:  # not created yet, or its tables not yet
        return []


def _train_step(command: psutil.Process) -> list[psutil.Process]:
    """The train step's processes (kfp.local's shell and the Python it starts)."""
    found = []
    for process in command.children(recursive=True):
        try:
            if "train_model" in process.cmdline():
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def test_sigterm_stops_the_train_step_and_marks_its_mlflow_run_killed(
    telco_churn_parquet, tmp_path
):
    workdir, log = tmp_path / "work", tmp_path / "run.log"
    with log.open("w") as output:
        command = subprocess.Popen(
            [sys.executable, "-m", "ctloop", "run", "training"]
            + ["--data", str(telco_churn_parquet), "--target", "churn"]
            + ["--workdir", str(workdir), "--param", "device=cpu"]
            + ["--param", f"hyperparameters={LONG_TRAINING}"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        train_step = []
        for _ in range(600):  # load, validate and split first: about a minute on two cores
            train_step = train_step or _train_step(psutil.Process(command.pid))
            if train_step and _run_statuses(workdir / "mlflow.db") == ["RUNNING"]:
                break
            assert command.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError(f"the train step never started:\n{log.read_text()[-3000:]}")
        command.send_signal(signal.SIGTERM)
        code = command.wait(timeout=120)
        survivors = [process for process in train_step if process.is_running()]
    finally:
        for process in [command, *train_step]:  # nothing left behind, whatever happened
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                process.kill()
    lines = log.read_text().splitlines()
    assert code == 128 + signal.SIGTERM, lines[-20:]
    assert lines[-1] == "ctloop run: run stopped by SIGTERM: stopped step train_model"
    assert survivors == []
    assert _run_statuses(workdir / "mlflow.db") == ["KILLED"]
