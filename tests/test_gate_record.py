"""The quality gate step on record: it writes its decision record, logs it to MLflow when a
tracking URI is given, and the record replays to the same outcome."""

import json
from pathlib import Path
from types import SimpleNamespace

from ctloop.components.decisions.record import read_record
from ctloop.components.decisions.store import records_for
from ctloop.components.gate.component import quality_gate
from ctloop.components.gate.decision import GATE_INPUTS, replay_gate
from tests.sqlite_registry import tracking_uri  # noqa: F401  (fixture)

POLICY = json.dumps({"thresholds": {"roc_auc": {"min": 0.8}}})
EVALUATION = {
    "task": "binary",
    "rows": 2113,
    "candidate": {"roc_auc": 0.78, "log_loss": 0.42},
    "champion": {"roc_auc": 0.80, "log_loss": 0.41},
    "champion_version": "3",
    "latency": None,
    "slices": None,
    "unseen_categories": {},
    "roc_curve": [{"fpr": 0.0, "tpr": 0.0, "threshold": 1.0}],
}


def _run_gate(tmp_path, **parameters):
    source = tmp_path / "evaluation.json"
    source.write_text(json.dumps(EVALUATION))
    decision = SimpleNamespace(path=str(tmp_path / "decision.md"), metadata={})
    record = SimpleNamespace(path=str(tmp_path / "record.json"), metadata={})
    passed, failures = quality_gate.python_func(
        evaluation=SimpleNamespace(path=str(source)),
        decision=decision,
        record=record,
        policy=POLICY,
        **parameters,
    )
    return passed, json.loads(failures), read_record(record.path)


def test_the_gate_step_writes_a_record_that_replays_to_its_outcome(tmp_path):
    passed, failures, record = _run_gate(
        tmp_path, run_id="r7", registered_model_name="churn", kfp_run_id="kfp-1"
    )

    assert (passed, [f["metric"] for f in failures]) == (False, ["roc_auc"])
    assert record.kind == "gate" and record.policy == POLICY
    assert record.subject == {
        "registered_model": "churn",
        "model_version": None,
        "run_id": "r7",
        "kfp_run_id": "kfp-1",
    }
    assert record.inputs == {key: EVALUATION[key] for key in GATE_INPUTS}
    assert record.outcome == {"passed": False, "failures": ["threshold roc_auc"]}
    assert record.reasons == ["threshold roc_auc: roc_auc 0.78 < min 0.8"]
    assert replay_gate(record.inputs, record.policy) == (record.outcome, record.reasons)
    assert Path(tmp_path / "decision.md").read_text().startswith("## Quality gate FAILED")


def test_with_a_tracking_uri_the_record_is_logged_for_the_model(tmp_path, tracking_uri):  # noqa: F811
    _, _, record = _run_gate(
        tmp_path, run_id="r8", registered_model_name="churn", mlflow_tracking_uri=tracking_uri
    )
    assert records_for(tracking_uri, "churn") == [record]


def test_without_a_tracking_uri_nothing_is_logged(tmp_path, tracking_uri):  # noqa: F811
    _run_gate(tmp_path, registered_model_name="quiet")
    assert records_for(tracking_uri, "quiet") == []
