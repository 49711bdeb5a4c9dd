"""`ctloop replay`: a recorded decision taken again says SAME or CHANGED (with what changed), exits
0/1 so CI can test a policy against past decisions, and refuses bad input naming it."""

import json

import pytest

from ctloop.components.decisions import store
from ctloop.components.decisions.record import new_record, write_record
from ctloop.components.decisions.store import log_record
from ctloop.pipelines import replay
from ctloop.pipelines.cli import main


def min_auc_gate(inputs, policy):
    """A gate small enough to reason about: pass when roc_auc reaches the policy's minimum."""
    minimum = json.loads(policy)["min_roc_auc"] if policy else 0.7
    value = inputs["candidate"]["roc_auc"]
    passed = value >= minimum
    return {"passed": passed}, [f"roc_auc {value} {'>=' if passed else '<'} min {minimum}"]


@pytest.fixture(autouse=True)
def min_auc_gate_replays_gates(monkeypatch):
    """Gate records replay through `min_auc_gate`, the hook tests use for a kind of their own."""
    monkeypatch.setitem(replay.REPLAY_FUNCTIONS, "gate", f"{__name__}.min_auc_gate")


def _gate(roc_auc, policy="", model="churn", version="2"):
    outcome, reasons = min_auc_gate({"candidate": {"roc_auc": roc_auc}}, policy)
    return new_record(
        "gate",
        subject={"registered_model": model, "model_version": version, "run_id": "r1"},
        inputs={"candidate": {"roc_auc": roc_auc}},
        policy=policy,
        outcome=outcome,
        reasons=reasons,
    )


def _file(tmp_path, record, name=None):
    path = tmp_path / (name or f"{record.id}.json")
    write_record(record, path)
    return str(path)


def test_an_unchanged_decision_replays_the_same_and_exits_0(tmp_path, capsys):
    code = main(["replay", _file(tmp_path, _gate(0.8))])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("SAME          gate churn v2 run r1 (record ")
    assert "recorded: passed=true" in out and "replayed: passed=true" in out
    assert out.splitlines()[-1] == "1 decision: 1 same, 0 changed, 0 not replayed"


def test_a_stricter_policy_changes_a_past_decision_and_exits_1(tmp_path, capsys):
    files = [_file(tmp_path, _gate(0.8)), _file(tmp_path, _gate(0.95))]
    code = main(["replay", *files, "--policy", '{"min_roc_auc": 0.9}'])
    out = capsys.readouterr().out
    assert code == 1
    changed, same = out.split("SAME")
    assert changed.startswith("CHANGED")
    assert "recorded: passed=true" in changed and "replayed: passed=false" in changed
    assert "differs: passed" in changed
    assert "- roc_auc 0.8 < min 0.9" in changed  # the new reasons
    assert "differs" not in same
    assert out.splitlines()[-1] == "2 decisions: 1 same, 1 changed, 0 not replayed"


def test_policy_from_a_file_and_json_output(tmp_path, capsys):
    policy = tmp_path / "gate.json"
    policy.write_text('{"min_roc_auc": 0.9}')
    record = _gate(0.8)
    code = main(["replay", _file(tmp_path, record), "--policy", f"@{policy}", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert summary["exit_code"] == 1 and summary["changed"] == 1
    [result] = summary["replays"]
    assert result["record"] == record.id
    assert result["status"] == "CHANGED"
    assert result["policy_replaced"] is True
    assert result["differing_keys"] == ["passed"]
    assert result["replayed"]["outcome"] == {"passed": False}
    assert result["replayed"]["code"]["ctloop_version"]


def test_every_record_of_a_model_in_mlflow_replays_by_id_or_all(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = _gate(0.8, version="1"), _gate(0.75, version="2")
    run_id = log_record(uri, first)
    log_record(uri, second)
    log_record(uri, _gate(0.99, model="fraud"))

    assert main(["replay", run_id, "--mlflow-tracking-uri", uri, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["replays"]
    assert result["record"] == first.id

    args = ["replay", "--all", "--registered-model", "churn", "--mlflow-tracking-uri", uri]
    assert main([*args, "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)["replays"]
    assert [r["record"] for r in replayed] == [first.id, second.id]
    assert main([*args, "--policy", '{"min_roc_auc": 0.78}', "--kind", "gate"]) == 1


def test_a_kind_whose_replay_function_is_missing_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(replay.REPLAY_FUNCTIONS, "gate", "ctloop.components.gate.decision.nope")
    code = main(["replay", _file(tmp_path, _gate(0.8))])
    out = capsys.readouterr().out
    assert code == 2
    assert out.splitlines()[0].startswith("NOT REPLAYED  gate churn v2")
    assert (
        "cannot replay 'gate' decisions: ctloop.components.gate.decision has no function nope "
        "in this code"
    ) in out
    monkeypatch.setitem(replay.REPLAY_FUNCTIONS, "gate", "ctloop.components.nowhere.replay_gate")
    result = replay.replay(_gate(0.8))
    assert result.status == replay.NOT_REPLAYED
    assert "ctloop.components.nowhere.replay_gate is not in this code" in result.problem


def test_inputs_the_replay_function_refuses_are_not_replayed_naming_the_error(tmp_path, capsys):
    record = _gate(0.8)
    broken = new_record(
        "gate",
        subject=record.subject,
        inputs={"champion": None},
        policy="",
        outcome=record.outcome,
        reasons=[],
    )
    assert main(["replay", _file(tmp_path, broken)]) == 2
    assert "min_auc_gate refused the inputs or the policy: KeyError: 'candidate'" in (
        capsys.readouterr().out
    )


def crashing_gate(inputs, policy):
    """A replay function with a bug of a kind replay does not expect."""
    return {"passed": 1 / 0}, []


def test_a_replay_function_that_crashes_is_not_replayed_and_every_record_is_answered(
    tmp_path, monkeypatch, capsys
):
    files = [_file(tmp_path, _gate(0.8)), _file(tmp_path, _gate(0.9))]
    monkeypatch.setitem(replay.REPLAY_FUNCTIONS, "gate", f"{__name__}.crashing_gate")
    assert main(["replay", *files]) == 2
    out = capsys.readouterr().out
    assert out.count("NOT REPLAYED  gate churn v2") == 2
    assert "crashing_gate failed: ZeroDivisionError: division by zero" in out
    assert out.splitlines()[-1] == "2 decisions: 0 same, 0 changed, 2 not replayed"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{tmp}/missing.json"], "cannot read decision record {tmp}/missing.json"),
        (["{tmp}/broken.json"], "decision record {tmp}/broken.json: 'outcome' is missing"),
        (["f00d"], "RECORD 'f00d': no such file, and no --mlflow-tracking-uri"),
        ([], "name a RECORD (file or record id) or use --all --registered-model NAME"),
        (["--all"], "--all and --registered-model go together"),
        (["{tmp}/good.json", "--policy", "@{tmp}/none.json"], "--policy @{tmp}/none.json: cannot"),
        (
            ["{tmp}/good.json", "--policy", "min_roc_auc=0.9"],
            "--policy is not JSON: Expecting value",
        ),
        (["{tmp}/good.json", "--policy", "@{tmp}/a.bin"], "--policy @{tmp}/a.bin: not UTF-8 text"),
        (["{tmp}/good.json", "--policy", "@/dev/zero"], "--policy @/dev/zero: larger than 1 MiB"),
        (["{tmp}/good.json", "--kind", "vote"], "--kind 'vote' is not one of gate, drift"),
        (["{tmp}/good.json", "--kind", "drift"], "none of the records is a 'drift' decision"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    tmp_path, monkeypatch, capsys, arguments, message
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = _gate(0.8)
    write_record(good, tmp_path / "good.json")
    document = json.loads(good.to_json())
    del document["outcome"]
    (tmp_path / "broken.json").write_text(json.dumps(document))
    (tmp_path / "a.bin").write_bytes(b"\x89PNG\xff\xfe")
    code = main(["replay", *(argument.format(tmp=tmp_path) for argument in arguments)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("ctloop replay: ")
    assert message.format(tmp=tmp_path) in line


def test_a_model_without_records_is_named_and_the_servers_password_is_not(monkeypatch, capsys):
    monkeypatch.setattr(store, "records_for", lambda uri, model: [])
    uri = "https://ci:s3cret@mlflow.example.com"
    args = ["replay", "--all", "--registered-model", "fraud", "--mlflow-tracking-uri", uri]
    assert main(args) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "ctloop replay: no decision records about 'fraud' at https://ci:***@mlflow.example.com"
    )


def test_one_policy_for_records_of_several_kinds_is_refused(tmp_path, capsys):
    drift = new_record(
        "drift", subject={}, inputs={}, policy="", outcome={"drift": False}, reasons=[]
    )
    files = [_file(tmp_path, _gate(0.8)), _file(tmp_path, drift)]
    assert main(["replay", *files, "--policy", "{}"]) == 2
    assert "the records are of kinds drift, gate: choose one with --kind" in (
        capsys.readouterr().err
    )


def meddling_gate(inputs, policy):
    """A replay function that changes the inputs it was given."""
    inputs["candidate"]["roc_auc"] = 0.0
    return {"passed": True}, []


def test_a_replay_function_cannot_change_the_record_it_replays(monkeypatch):
    monkeypatch.setitem(replay.REPLAY_FUNCTIONS, "gate", f"{__name__}.meddling_gate")
    record = _gate(0.8)
    result = replay.replay(record)
    assert record.inputs == {"candidate": {"roc_auc": 0.8}}
    assert result.replayed.inputs == record.inputs
