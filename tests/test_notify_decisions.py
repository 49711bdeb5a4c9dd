"""The word at a run's end lists what the run decided, read from its decision records."""

import json

from ctloop.components.decisions.record import new_record
from ctloop.components.decisions.store import decisions_of_kfp_run, log_record
from ctloop.components.notify.run_end import with_decisions


def _log(tracking_uri, kind, outcome, kfp_run_id, version=None):
    record = new_record(
        kind,
        subject={"registered_model": "churn", "model_version": version, "kfp_run_id": kfp_run_id},
        inputs={},
        policy="",
        outcome=outcome,
        reasons=[],
    )
    log_record(tracking_uri, record)


def test_a_runs_decisions_are_listed_after_the_summary_and_no_other_runs(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log(tracking_uri, "gate", {"passed": True, "failures": []}, "run-1")
    _log(tracking_uri, "canary", {"action": "promote", "verdict": "pass"}, "run-1", version="3")
    _log(tracking_uri, "gate", {"passed": False, "failures": ["threshold roc_auc"]}, "run-2")

    assert [d["kind"] for d in decisions_of_kfp_run(tracking_uri, "run-1")] == ["gate", "canary"]
    lines = json.loads(with_decisions("nightly retraining", tracking_uri, "run-1"))
    assert lines == [
        "nightly retraining",
        'gate (churn): {"failures": [], "passed": true}',
        'canary (churn v3): {"action": "promote", "verdict": "pass"}',
    ]


def test_without_records_or_a_reachable_store_the_summary_goes_out_alone(tmp_path, capsys):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert with_decisions("text", tracking_uri, "run-9") == "text"
    assert with_decisions("text", "", "run-9") == "text"
    assert with_decisions("text", "ftp://nowhere", "run-9") == "text"
    assert "left out of the notification" in capsys.readouterr().out
