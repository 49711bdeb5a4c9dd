"""`ctloop run training --host URL --wait SECONDS`: submit, then wait for the run to end, against
the stateful KFP API v2beta1 stand-in (an orchestrator's task succeeds only with the run)."""

import json

import pytest

from ctloop.pipelines.cli import main

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]


def _run(kfp_api, capsys, *extra: str) -> tuple[int, dict, str]:
    code = main(
        [
            "run",
            "training",
            "--data",
            "s3://bucket/churn.parquet",
            "--target",
            "Churn",
            "--json",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_wait_returns_when_the_run_succeeded_and_says_so(kfp_api, capsys):
    kfp_api.runs_end_as = "SUCCEEDED"
    code, summary, _ = _run(kfp_api, capsys, "--host", kfp_api.host, "--wait", "600")
    [run_id] = kfp_api.runs
    assert code == 0
    assert summary == {"host": kfp_api.host, "run_id": run_id, "state": "SUCCEEDED"}


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_a_run_that_ended_otherwise_fails_the_command_naming_run_and_state(kfp_api, capsys, state):
    kfp_api.runs_end_as = state
    code, summary, err = _run(kfp_api, capsys, "--host", kfp_api.host, "--wait", "600")
    [run_id] = kfp_api.runs
    assert code == 1
    assert f"KFP run {run_id} ended {state}" in err
    assert summary == {"error": f"KFP run {run_id} ended {state}", "exit_code": 1}


def test_a_run_still_going_when_the_wait_is_over_fails_the_command(kfp_api, capsys):
    code, summary, err = _run(kfp_api, capsys, "--host", kfp_api.host, "--wait", "0")
    [run_id] = kfp_api.runs
    assert code == 1 and f"KFP run {run_id} still PENDING after 0 s" in err


def test_wait_without_a_host_is_refused_before_anything_runs(tmp_path, capsys):
    code, summary, err = _run(None, capsys, "--wait", "60", "--workdir", str(tmp_path / "w"))
    assert code == 2 and "--wait waits for a run on a KFP endpoint: give --host" in err
    assert not (tmp_path / "w").exists()
