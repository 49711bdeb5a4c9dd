"""Bad input through `ctloop run training`: one clear message, exit non-zero, nothing registered.

The command runs in this process through `main`, as the console script calls it, its output
captured at the file descriptors (a step's output on stdout would still show): a child Python
for each case would only add seconds of start-up.
"""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from ctloop.pipelines.cli import main

pytestmark = pytest.mark.e2e


@pytest.fixture
def ctloop_run(tmp_path, capfd):
    """`ctloop run training --json` on `data` with a work directory under `tmp_path`."""

    def run(data: str, *extra: str, target: str = "churn") -> subprocess.CompletedProcess:
        capfd.readouterr()
        argv = ["run", "training", "--data", data, "--target", target]
        argv += ["--workdir", str(tmp_path / "work"), "--json", *extra]
        code = main(argv)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["ctloop", *argv], code, out, err)

    return run


def _error_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def _nothing_registered(tmp_path: Path) -> bool:
    store = tmp_path / "work" / "mlflow.db"
    if not store.exists():
        return True
    uri = f"sqlite:///{store}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models() == []


def _three_classes(path: Path) -> str:
    frame = pd.DataFrame({"x": range(300), "churn": ["a", "b", "c"] * 100})
    frame.to_parquet(path)
    return str(path)


def _empty(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _png(path: Path) -> str:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return str(path)


@pytest.mark.parametrize(
    ("make_data", "expected"),
    [
        (lambda tmp: str(tmp / "absent.parquet"), "absent.parquet' does not exist"),
        (lambda tmp: _empty(tmp / "empty.csv"), "empty.csv' is empty (0 bytes)"),
        (lambda tmp: _png(tmp / "picture.png"), "picture.png' is neither Parquet"),
    ],
    ids=["missing-uri", "empty-file", "not-a-table"],
)
def test_unreadable_local_data_is_refused_before_any_step_runs(
    tmp_path, ctloop_run, make_data, expected
):
    result = ctloop_run(make_data(tmp_path))
    assert result.returncode == 2
    message = _error_line(result)
    assert message.startswith("ctloop run: --data: dataset ")
    assert expected in message
    assert json.loads(result.stdout) == {
        "error": message.removeprefix("ctloop run: "),
        "exit_code": 2,
    }
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("make_data", "target", "step", "expected"),
    [
        (lambda tmp, churn: str(churn), "no_such_column", "validate-dataset", "'no_such_column'"),
        (
            lambda tmp, churn: _three_classes(tmp / "three.parquet"),
            "churn",
            "validate-dataset",
            "'a', 'b', 'c'",
        ),
    ],
    ids=["missing-target", "three-classes"],
)
def test_bad_data_fails_its_step_with_one_clear_message(
    tmp_path, ctloop_run, telco_churn_parquet, make_data, target, step, expected
):
    result = ctloop_run(make_data(tmp_path, telco_churn_parquet), target=target)
    assert result.returncode == 1
    message = _error_line(result)
    assert message.startswith(f"ctloop run: step {step} failed: ")
    assert expected in message
    # No summary as if the run had succeeded: the failure, as the one JSON line.
    assert json.loads(result.stdout) == {
        "error": message.removeprefix("ctloop run: "),
        "exit_code": 1,
    }
    assert _nothing_registered(tmp_path)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ('hyperparameters={"max_depth": 4,}', "hyperparameters"),
        ('hyperparameters={"max_dept": 4}', "max_dept"),
        ('gate_policy={"thresholds": {"roc_auc": {"min": 0.9, "max": 0.5}}}', "roc_auc"),
        ('gate_policy={"threshold": {}}', "threshold"),
        ('canary_policy={"bake_time": 60}', "bake_time"),
        ('serving_capacity={"min_replicas": 3, "max_replicas": 1}', "serving_capacity"),
    ],
)
def test_malformed_json_parameters_are_rejected_before_any_step_runs(
    tmp_path, ctloop_run, telco_churn_parquet, param, expected
):
    result = ctloop_run(str(telco_churn_parquet), "--param", param)
    assert result.returncode == 2
    assert expected in _error_line(result)
    assert not (tmp_path / "work").exists()
