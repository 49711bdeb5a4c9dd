"""Replaying real gate decisions with `ctloop replay`: a fresh record is taken again the same,
and a stricter policy tried on it says which check would now fail."""

import json

from ctloop.components.decisions.record import KINDS, write_record
from ctloop.components.gate.decision import gate_record, run_gate
from ctloop.pipelines import replay
from ctloop.pipelines.cli import main

EVALUATION = {
    "task": "binary",
    "rows": 1000,
    "candidate": {"roc_auc": 0.8, "log_loss": 0.5},
    "champion": {"roc_auc": 0.79, "log_loss": 0.52},
    "champion_version": "1",
    "latency": {
        "candidate": {"median_ms": 2.0, "min_ms": 1.5},
        "champion": {"median_ms": 2.1, "min_ms": 1.6},
    },
}


def _gate_file(tmp_path, policy=""):
    record = gate_record(
        policy, EVALUATION, run_gate(policy, EVALUATION), registered_model="churn", run_id="r7"
    )
    write_record(record, tmp_path / "gate.json")
    return record, str(tmp_path / "gate.json")


def test_every_kind_of_decision_has_a_replay_function_named():
    assert sorted(replay.REPLAY_FUNCTIONS) == sorted(KINDS)


def test_a_fresh_gate_record_replays_the_same(tmp_path, capsys):
    record, path = _gate_file(tmp_path)
    assert record.outcome == {"passed": True, "failures": []}
    assert main(["replay", path]) == 0
    assert capsys.readouterr().out.startswith("SAME          gate churn run r7")


def test_a_stricter_gate_policy_changes_the_decision_naming_the_failing_check(tmp_path, capsys):
    _, path = _gate_file(tmp_path)
    stricter = '{"thresholds": {"roc_auc": {"min": 0.85}}}'
    assert main(["replay", path, "--policy", stricter, "--json"]) == 1
    [result] = json.loads(capsys.readouterr().out)["replays"]
    assert result["differing_keys"] == ["failures", "passed"]
    assert result["replayed"]["outcome"] == {"passed": False, "failures": ["threshold roc_auc"]}
    assert result["replayed"]["reasons"] == ["threshold roc_auc: roc_auc 0.8 < min 0.85"]


def test_a_policy_the_gate_refuses_is_not_replayed_naming_why(tmp_path, capsys):
    _, path = _gate_file(tmp_path)
    assert main(["replay", path, "--policy", '{"thresholds": {"roc_auc": {}}}']) == 2
    out = capsys.readouterr().out
    assert out.startswith("NOT REPLAYED")
    assert "replay_gate refused the inputs or the policy: GatePolicyError: " in out
