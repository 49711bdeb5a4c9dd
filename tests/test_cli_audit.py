"""`ctloop audit`: a registered model's history from MLflow, oldest first: versions trained,
registered, replaced, and every decision with its outcome, reasons and the code that decided."""

import json

import mlflow
import pytest

from ctloop.components.decisions.record import new_record
from ctloop.components.decisions.store import log_record
from ctloop.components.registry import mlflow_registry
from ctloop.pipelines.cli import main
from tests.unanswering_endpoint import closed_port_url


def _decide(uri, kind, outcome, reasons, *, version=None, run_id=None):
    subject = {"registered_model": "churn", "model_version": version, "run_id": run_id}
    record = new_record(
        kind,
        subject={**subject, "kfp_run_id": f"kfp-{kind}"},
        inputs={},
        policy="",
        outcome=outcome,
        reasons=reasons,
    )
    log_record(uri, record)
    return record


@pytest.fixture(scope="module")
def churn_history(tmp_path_factory):
    """`churn` with two versions: v1 passed the gate and served; v2 passed, ran as a canary and
    was promoted, replacing v1. Records as the loop writes them (gate before registration)."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path_factory.mktemp('audit') / 'mlflow.db'}"
    client = mlflow_registry.client(uri)
    experiment_id = mlflow_registry.ensure_experiment(uri, "training")
    client.create_registered_model("churn")
    records = []
    for number, roc_auc in ((1, 0.81), (2, 0.84)):
        run_id = client.create_run(experiment_id).info.run_id
        client.log_text(run_id, "model", "model/MLmodel")
        records.append(
            _decide(uri, "gate", {"passed": True}, [f"roc_auc {roc_auc} >= min 0.7"], run_id=run_id)
        )
        client.create_model_version("churn", f"runs:/{run_id}/model", run_id)
        if number == 1:
            client.set_registered_model_alias("churn", "champion", "1")
    records.append(_decide(uri, "canary", {"action": "promote"}, ["errors 0 <= 1%"], version="2"))
    client.set_model_version_tag("churn", "2", "ctloop.lineage.git_commit", "0a1b2c3")
    client.set_model_version_tag("churn", "2", "ctloop.lineage.image", "ctloop:0.1.0")
    mlflow_registry.promote_to_champion(uri, "churn", "2", storage_uri="s3://models/churn/2")
    records.append(_decide(uri, "promotion", {"promoted": True}, ["canary passed"], version="2"))
    client.create_registered_model("fraud")
    yield uri, records
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


def test_audit_prints_versions_and_decisions_oldest_first(churn_history, capsys):
    uri, (gate_one, gate_two, canary, promotion) = churn_history
    assert main(["audit", "--registered-model", "churn", "--mlflow-tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"churn at {uri}: 2 versions, 4 decisions"
    events = [line[27:52].split() for line in lines[1:] if not line.startswith(" ")]
    # The registry tags a replacement to the second: it follows the events of its second.
    assert events.index(["v1", "replaced"]) > events.index(["v2", "canary", "analysed"])
    events.remove(["v1", "replaced"])
    assert events == [
        ["v1", "trained"],
        ["v1", "gated"],
        ["v1", "registered"],
        ["v2", "trained"],
        ["v2", "gated"],
        ["v2", "registered"],
        ["v2", "canary", "analysed"],
        ["v2", "promoted"],
    ]
    text = "\n".join(lines)
    assert "aliases now: champion" in text
    assert "champion moved to version 2" in text
    assert "built by git_commit 0a1b2c3, image ctloop:0.1.0" in text
    assert "served from s3://models/churn/2" in text
    assert "passed=true" in text and 'action="promote"' in text
    assert f"record {canary.id}, by ctloop " in text
    assert text.count(", in KFP run kfp-gate") == 2
    assert "- roc_auc 0.84 >= min 0.7" in text
    assert canary.code["git_commit"][:12] in text


def test_audit_of_one_version_keeps_its_own_and_its_runs_decisions(churn_history, capsys):
    uri, (gate_one, gate_two, canary, promotion) = churn_history
    args = ["audit", "--registered-model", "churn", "--version", "2", "--json"]
    assert main([*args, "--mlflow-tracking-uri", uri]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in history["versions"]] == ["2"]
    assert history["versions"][0]["aliases"] == ["champion"]
    decisions = [e["record"]["id"] for e in history["events"] if e["record"]]
    assert decisions == [gate_two.id, canary.id, promotion.id]
    assert [e["version"] for e in history["events"] if e["record"]] == ["2", "2", "2"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--registered-model", "nope"], "registered model 'nope' does not exist at {uri}; "),
        (["--registered-model", "churn", "--version", "9"], "has no version '9'; its versions: "),
    ],
)
def test_unknown_model_or_version_exits_2_naming_what_there_is(
    churn_history, capsys, arguments, message
):
    uri, _ = churn_history
    assert main(["audit", *arguments, "--mlflow-tracking-uri", uri]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert message.format(uri=uri) in line
    if "nope" in arguments:
        assert line.endswith("registered models (first 20): churn, fraud")
    else:
        assert line.endswith("its versions: 1, 2")


def test_a_tracking_server_that_refuses_exits_1_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = closed_port_url()
    assert main(["audit", "--registered-model", "churn", "--mlflow-tracking-uri", uri]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"ctloop audit: MLflow at {uri}: cannot read the versions of 'churn': ")
    assert captured.out == ""


def test_each_deploy_stage_of_a_version_is_in_its_history(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_registry.client(uri)
    run_id = client.create_run(mlflow_registry.ensure_experiment(uri, "training")).info.run_id
    client.create_registered_model("churn")
    client.create_model_version("churn", f"runs:/{run_id}/model", run_id)
    for stage, serves_as, percent in (("shadow", "shadow", None), ("canary", "canary", 10)):
        deployment = {"namespace": "ml", "name": "churn", "serves_as": serves_as}
        deployment.update({"canary_traffic_percent": percent, "action": "patched"})
        mlflow_registry.record_deployment(uri, "churn", "1", stage, deployment)

    flags = ["--registered-model", "churn", "--mlflow-tracking-uri", uri, "--json"]
    assert main(["audit", *flags]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    deployed = [e["detail"] for e in events if e["event"] == "deployed"]
    assert sorted(deployed) == [
        "canary: canary in ml/churn (10 %, patched)",
        "shadow: shadow in ml/churn (patched)",
    ]
    with pytest.raises(mlflow_registry.RegistryError):
        mlflow_registry.record_deployment(uri, "churn", "7", "canary", deployment)


def test_a_missing_sqlite_store_is_named_and_not_created(tmp_path, capsys):
    missing = tmp_path / "typo" / "mlflow.db"
    uri = f"sqlite:///{missing}"
    assert main(["audit", "--registered-model", "churn", "--mlflow-tracking-uri", uri]) == 2
    assert f"no MLflow store at {uri}" in capsys.readouterr().err
    flags = ["--all", "--registered-model", "churn", "--mlflow-tracking-uri", uri]
    assert main(["replay", *flags]) == 2
    assert not missing.exists()


def test_an_empty_model_name_is_bad_input_not_a_failing_server(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mlflow.db").touch()
    assert main(["audit", "--registered-model", " ", "--mlflow-tracking-uri", uri]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == "ctloop audit: --registered-model is empty: name the registered model"
