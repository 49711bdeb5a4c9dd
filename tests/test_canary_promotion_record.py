"""Promotions and rollbacks on record: their trigger, the versions before and after, and replay.

The service and the registry are those of `tests.test_canary_promotion` (the Kubernetes API
stand-in and a SQLite MLflow registry); records are read back from files or from MLflow
(`ctloop.components.decisions.store`) before they are replayed.
"""

import json
from types import SimpleNamespace

import pytest
import yaml
from kfp import compiler, dsl

from ctloop.components.canary.component import (
    promote_version,
    roll_back_variants,
    roll_back_version,
)
from ctloop.components.canary.promotion import replay_promotion, replay_rollback
from ctloop.components.canary.promotion_record import (
    action_record,
    applied_text,
    canary_analysis_records,
    manual_trigger,
    unrecorded_trigger,
)
from ctloop.components.canary.record_keeping import RecordNotLoggedError, keep_records
from ctloop.components.decisions.record import (
    DecisionRecord,
    DecisionRecordError,
    new_record,
    read_record,
    write_record,
)
from ctloop.components.decisions.store import records_for
from ctloop.pipelines.cli import main
from tests import test_canary_promotion as promotion_tests
from tests.prometheus_standin import version_figures
from tests.test_canary_promotion import NAMESPACE, conclude

# The service, registry, metrics and kubeconfig of the promotion tests, as fixtures here.
standin, tracking_uri = promotion_tests.standin, promotion_tests.tracking_uri
deployment, prometheus = promotion_tests.deployment, promotion_tests.prometheus
kubeconfig = promotion_tests.kubeconfig


def stored(record, tmp_path, name="record.json"):
    write_record(record, tmp_path / name)
    return read_record(tmp_path / name)


def analysis(kind: str, outcome: dict) -> DecisionRecord:
    """An analysis record, as analyze_shadow or analyze_ab writes it."""
    return new_record(
        kind, subject={"model_version": "2"}, inputs={}, policy="", outcome=outcome, reasons=[]
    )


def test_a_promoted_canary_records_the_analysis_as_the_promotions_trigger(
    deployment, prometheus, tmp_path
):
    served = deployment("Serverless")
    decision, outcome = conclude(served, prometheus)

    canary, promotion = canary_analysis_records(
        decision, outcome, policy_text="", registered_model=served.model, kfp_run_id="run-1"
    )
    promotion = stored(promotion, tmp_path)

    assert (promotion.kind, promotion.outcome) == (
        "promotion",
        {"action": "promote", "version": "2"},
    )
    assert promotion.inputs["trigger"] == {
        "kind": "canary",
        "record_id": canary.id,
        "outcome": {"verdict": "promote", "action": "promote"},
    }
    assert promotion.inputs["before"] == {"champion": "1", "canary": "2"}
    assert promotion.inputs["after"] == {"champion": "2", "canary": None}
    assert "alias champion moved to version 2" in promotion.inputs["changes"]
    assert promotion.subject["kfp_run_id"] == "run-1"
    assert replay_promotion(promotion.inputs, promotion.policy)[0] == promotion.outcome
    assert canary.inputs["champion"] == "1" and canary.inputs["serving_canary"] == "2"


def test_a_rolled_back_canary_replays_to_rollback_with_the_analysis_reasons(
    deployment, prometheus, tmp_path
):
    served = deployment("Standard")
    prometheus.figures["2"] = version_figures(ok=9.0, error=1.0)
    decision, outcome = conclude(served, prometheus)

    _canary, rollback = canary_analysis_records(decision, outcome, policy_text="")
    rollback = stored(rollback, tmp_path)

    assert rollback.outcome == {"action": "rollback", "version": "2"}
    assert rollback.inputs["before"] == {"champion": "1", "canary": "2"}
    assert rollback.inputs["after"] == {"champion": "1", "canary": None}
    assert rollback.reasons[1:] == ["error_rate 0.1 > max 0.01"]
    assert replay_rollback(rollback.inputs, "")[0] == rollback.outcome


def test_the_champion_path_is_on_record_as_a_promotion_triggered_by_no_analysis(
    deployment, prometheus, tmp_path
):
    served = deployment("Serverless")
    served_promotion = conclude(served, prometheus)[1]  # version 2 promoted
    decision, outcome = conclude(served, prometheus)  # again: the champion already

    canary, promotion = canary_analysis_records(decision, outcome, policy_text="")

    assert decision is None and served_promotion["changed"]
    assert canary.outcome == {"verdict": "champion", "action": "promote"}
    assert promotion.inputs["trigger"]["outcome"] == canary.outcome
    assert promotion.inputs["changes"] == []
    assert replay_promotion(stored(promotion, tmp_path).inputs, "")[0] == promotion.outcome


@pytest.mark.parametrize(
    ("kind", "analysed", "replayed"),
    [
        ("shadow", {"verdict": "go_on", "action": "go_on"}, "promote"),
        ("shadow", {"verdict": "reject", "action": "reject"}, "rollback"),
        ("ab", {"action": "promote", "winner": "3"}, "promote"),
        ("ab", {"action": "rollback", "winner": "1"}, "rollback"),
        ("ab", {"action": "continue", "winner": ""}, "none"),
    ],
)
def test_replay_derives_the_action_from_the_triggering_analysis(kind, analysed, replayed):
    trigger = {"kind": kind, "record_id": "abc", "outcome": analysed}
    inputs = {"trigger": trigger, "version": "2"}

    outcome, reasons = replay_promotion(inputs, "")

    assert outcome["action"] == replayed
    # An A/B promotion promotes the winner: a record naming another version would differ.
    assert outcome["version"] == ("3" if analysed.get("winner") == "3" else "2")
    assert reasons == [f"{kind} analysis abc: {analysed}"]


def test_a_trigger_the_code_does_not_know_is_refused_by_name():
    inputs = {"trigger": {"kind": "canary", "outcome": {"action": "pause"}}, "version": "2"}
    with pytest.raises(DecisionRecordError, match="leads to no action this code knows"):
        replay_promotion(inputs, "")
    with pytest.raises(DecisionRecordError, match="rollback record: an input is missing"):
        replay_rollback({"version": "2"}, "")


def test_cli_promote_and_rollback_record_a_manual_decision_in_mlflow(
    deployment, kubeconfig, capsys, tmp_path
):
    served = deployment("Standard")
    argv = ["--name", served.name, "--namespace", NAMESPACE, "--registered-model", served.model]
    argv += ["--mlflow-tracking-uri", served.tracking_uri, "--timeout", "5"]

    assert main(["rollback", *argv, "--version", "2", "--reason", "paged at 3am"]) == 0
    rolled_back = json.loads(capsys.readouterr().out)
    record_file = tmp_path / "promotion.json"
    assert main(["promote", *argv, "--version", "1", "--record", str(record_file)]) == 0
    promoted = json.loads(capsys.readouterr().out)

    rollback, promotion = records_for(served.tracking_uri, served.model)[-2:]
    assert (rollback.id, promotion.id) == (
        rolled_back["decision_record"],
        promoted["decision_record"],
    )
    assert read_record(record_file) == promotion
    trigger = rollback.inputs["trigger"]
    assert (trigger["kind"], trigger["command"]) == ("manual", "rollback")
    assert trigger["flags"]["reason"] == "paged at 3am" and trigger["flags"]["version"] == "2"
    assert "mlflow_tracking_uri" not in trigger["flags"]
    assert rollback.inputs["before"] == {"champion": "1", "canary": "2"}
    outcome, reasons = replay_rollback(rollback.inputs, rollback.policy)
    assert outcome == rollback.outcome == {"action": "rollback", "version": "2"}
    assert reasons[0] == "manual decision, nothing to re-decide"


def test_promote_version_names_the_shadow_record_that_triggered_it(
    deployment, kubeconfig, tmp_path
):
    served = deployment("Serverless")
    shadow = analysis("shadow", {"verdict": "go_on", "action": "go_on"})
    write_record(shadow, tmp_path / "shadow.json")
    record = SimpleNamespace(path=str(tmp_path / "promotion.json"), metadata={})

    summary = promote_version.python_func(
        model_version="2",
        registered_model_name=served.model,
        mlflow_tracking_uri=served.tracking_uri,
        record=record,
        trigger=SimpleNamespace(path=str(tmp_path / "shadow.json")),
        inference_service_name=served.name,
        namespace=NAMESPACE,
        timeout_s=5,
    )

    promotion = read_record(record.path)
    assert json.loads(summary)["after"] == {"champion": "2", "canary": None}
    assert promotion.inputs["trigger"]["record_id"] == shadow.id
    assert replay_promotion(promotion.inputs, "")[0] == promotion.outcome
    assert records_for(served.tracking_uri, served.model, "2")[-1] == promotion


def test_roll_back_variants_writes_one_record_per_version_rolled_back(
    deployment, kubeconfig, tmp_path
):
    served = deployment("Standard")
    record = SimpleNamespace(path=str(tmp_path / "rollbacks"), metadata={})
    ab = analysis("ab", {"action": "rollback", "winner": "1"})
    write_record(ab, tmp_path / "ab.json")

    roll_back_variants.python_func(
        reason="A/B analysis: control variant 1 won",
        registered_model_name=served.model,
        mlflow_tracking_uri=served.tracking_uri,
        record=record,
        trigger=SimpleNamespace(path=str(tmp_path / "ab.json")),
        inference_service_name=served.name,
        namespace=NAMESPACE,
        deployment_mode="Standard",
        timeout_s=5,
    )

    rollback = read_record(tmp_path / "rollbacks" / "2.json")
    assert rollback.inputs["trigger"]["record_id"] == ab.id
    assert rollback.reasons[1:] == ["A/B analysis: control variant 1 won"]
    assert replay_rollback(rollback.inputs, "")[0] == {"action": "rollback", "version": "2"}
    assert records_for(served.tracking_uri, served.model, "2")[-1] == rollback


def test_a_step_refuses_a_trigger_that_is_not_an_analysis_before_changing_anything(
    deployment, kubeconfig, tmp_path
):
    served = deployment("Serverless")
    gate = new_record("gate", subject={}, inputs={}, policy="", outcome={}, reasons=[])
    write_record(gate, tmp_path / "gate.json")

    with pytest.raises(DecisionRecordError, match="a gate decision record"):
        promote_version.python_func(
            model_version="2",
            registered_model_name=served.model,
            mlflow_tracking_uri=served.tracking_uri,
            record=SimpleNamespace(path=str(tmp_path / "promotion.json")),
            trigger=SimpleNamespace(path=str(tmp_path / "gate.json")),
            inference_service_name=served.name,
            namespace=NAMESPACE,
            timeout_s=5,
        )
    assert served.aliases() == {"champion": "1", "challenger": "2"}


def test_a_record_that_cannot_be_logged_fails_saying_the_promotion_was_applied(tmp_path, capsys):
    outcome = {
        "action": "promote",
        "version": "2",
        "inference_service": "ml/churn",
        "deployment_mode": "Serverless",
        "changes": ["alias champion moved to version 2"],
        "before": {"champion": "1", "canary": "2"},
        "after": {"champion": "2", "canary": None},
    }
    record = action_record(outcome, unrecorded_trigger("blue-green switch"))

    def refused(uri, record):
        raise RuntimeError("MLflow http://mlflow:5000 answered 503")

    with pytest.raises(RecordNotLoggedError) as raised:
        keep_records(
            [(record, str(tmp_path / "r.json"))],
            "http://mlflow:5000",
            applied=applied_text(outcome),
            log=refused,
        )

    assert str(raised.value).startswith(
        "version 2 WAS promoted (alias champion moved to version 2), but its decision "
        f"record(s) (promotion {record.id}) could not be logged to MLflow: MLflow "
        "http://mlflow:5000 answered 503"
    )
    assert json.loads(capsys.readouterr().err)["id"] == record.id  # the log keeps it
    assert read_record(tmp_path / "r.json") == record  # so does the artifact
    assert (
        replay_promotion(record.inputs, "")[1][0] == "no analysis on record, nothing to re-decide"
    )


def test_the_action_steps_compile_without_a_trigger_and_declare_their_records(tmp_path):
    @dsl.pipeline(name="actions-without-trigger")
    def actions(version: str = "2"):
        service = {"registered_model_name": "churn", "mlflow_tracking_uri": "http://mlflow:5000"}
        promote_version(model_version=version, **service)
        roll_back_version(model_version=version, reason="rejected", **service)
        roll_back_variants(reason="control won", **service)

    path = tmp_path / "actions.yaml"
    compiler.Compiler().compile(actions, str(path))

    components = yaml.safe_load(path.read_text())["components"]
    for name in ("promote-version", "roll-back-version", "roll-back-variants"):
        component = components[f"comp-{name}"]
        trigger = component["inputDefinitions"]["artifacts"]["trigger"]
        assert trigger["isOptional"] is True
        assert component["inputDefinitions"]["parameters"]["kfp_run_id"]["defaultValue"] == ""
        record = component["outputDefinitions"]["artifacts"]["record"]
        assert record["artifactType"]["schemaTitle"] == "system.Artifact"


def test_a_manual_trigger_names_a_user_without_a_passwd_entry_by_uid(monkeypatch):
    def no_name():
        raise KeyError("getpwuid(): uid not found: 1000680000")

    monkeypatch.setattr("getpass.getuser", no_name)

    trigger = manual_trigger("promote", {"version": "2"})

    assert trigger["user"].startswith("uid ")
