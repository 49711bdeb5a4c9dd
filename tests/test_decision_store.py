"""Decision records kept in MLflow: logged whole, found by model, version or run, and a server
that fails is one clear error."""

import mlflow
import pytest
import sqlalchemy
from mlflow import MlflowClient

from ctloop.components.decisions.record import DecisionRecordError, new_record
from ctloop.components.decisions.store import (
    DECISIONS_EXPERIMENT,
    RECORD_ARTIFACT,
    DecisionNotFoundError,
    DecisionStoreError,
    TrackingUriError,
    load_record,
    log_record,
    records_for,
)
from ctloop.components.registry import mlflow_registry
from tests.sqlite_registry import tracking_uri  # noqa: F401  (fixture)
from tests.unanswering_endpoint import closed_port_url, silent_endpoint


def _record(kind, model="churn", version=None, run_id=None, passed=True):
    return new_record(
        kind,
        subject={"registered_model": model, "model_version": version, "run_id": run_id},
        inputs={"candidate": {"roc_auc": 0.8}},
        policy="",
        outcome={"passed": passed},
        reasons=[f"{kind} decided"],
    )


def _model_run(uri) -> str:
    """A run with a (trivial) model artifact, for a registered version to come from."""
    experiment_id = mlflow_registry.ensure_experiment(uri, "store-test")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("model", "model/MLmodel")
    return run.info.run_id


@pytest.mark.parametrize("model", ["O'Brien's churn", 'churn "v2" ünï'])
def test_models_named_with_quotes_or_unicode_are_found(tracking_uri, model):  # noqa: F811
    record = _record("gate", model=model, version="1")
    log_record(tracking_uri, record)
    assert records_for(tracking_uri, model) == [record]
    assert records_for(tracking_uri, model, "1") == [record]


def test_a_logged_record_reads_back_equal_and_is_tagged_for_search(tracking_uri):  # noqa: F811
    record = _record("gate", version="1", run_id="abc")
    run_id = log_record(tracking_uri, record)
    run = mlflow_registry.client(tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ctloop.decision.kind"] == "gate"
    assert run.data.tags["ctloop.decision.id"] == record.id
    assert run.data.tags["ctloop.decision.outcome"] == '{"passed": true}'
    assert run.data.tags["ctloop.registered_model"] == "churn"
    assert run.data.tags["ctloop.model_version"] == "1"
    assert run.data.tags["ctloop.run_id"] == "abc"
    experiment = mlflow_registry.client(tracking_uri).get_experiment(run.info.experiment_id)
    assert experiment.name == DECISIONS_EXPERIMENT
    assert experiment.artifact_location.endswith("/mlartifacts")  # beside the database
    assert load_record(tracking_uri, run_id) == record
    assert load_record(tracking_uri, record.id) == record


def test_records_for_a_version_include_those_naming_its_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first_run, second_run = _model_run(uri), _model_run(uri)
    client = mlflow_registry.client(uri)
    client.create_registered_model("churn")
    client.create_model_version("churn", f"runs:/{first_run}/model", first_run)
    client.create_model_version("churn", f"runs:/{second_run}/model", second_run)
    gate_one = _record("gate", model=None, run_id=first_run)  # before it had a version
    canary_one = _record("canary", version="1")
    gate_two = _record("gate", model=None, run_id=second_run)
    rollback_two = _record("rollback", version="2", run_id=second_run)
    other_model = _record("promotion", model="fraud", version="1")
    for record in (gate_one, canary_one, gate_two, rollback_two, other_model):
        log_record(uri, record)

    assert records_for(uri, "churn", "1") == [gate_one, canary_one]
    assert records_for(uri, "churn", "2") == [gate_two, rollback_two]
    assert records_for(uri, "churn") == [gate_one, canary_one, gate_two, rollback_two]
    assert records_for(uri, "fraud") == [other_model]
    assert records_for(uri, "nobody") == []


def test_no_decisions_experiment_yet_means_no_records(tmp_path):
    assert records_for(f"sqlite:///{tmp_path / 'mlflow.db'}", "churn") == []


def test_an_unknown_id_is_refused_naming_it(tracking_uri):  # noqa: F811
    with pytest.raises(DecisionNotFoundError, match="no decision record with id or run id 'f00'"):
        load_record(tracking_uri, "f00")


def test_a_run_that_failed_before_its_record_was_written_is_not_a_record(tracking_uri):  # noqa: F811
    client = mlflow_registry.client(tracking_uri)
    experiment_id = mlflow_registry.ensure_experiment(tracking_uri, DECISIONS_EXPERIMENT)
    half = client.create_run(
        experiment_id, tags={"ctloop.registered_model": "half", "ctloop.decision.id": "h1"}
    )
    client.set_terminated(half.info.run_id, "FAILED")
    assert records_for(tracking_uri, "half") == []
    with pytest.raises(DecisionNotFoundError):
        load_record(tracking_uri, "h1")


def test_a_broken_stored_record_is_refused_naming_the_run(tracking_uri):  # noqa: F811
    client = mlflow_registry.client(tracking_uri)
    experiment_id = mlflow_registry.ensure_experiment(tracking_uri, DECISIONS_EXPERIMENT)
    run = client.create_run(experiment_id, tags={"ctloop.registered_model": "broken"})
    client.log_text(run.info.run_id, '{"schema": "ctloop.decision/1"}', RECORD_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(DecisionRecordError, match=f"MLflow run {run.info.run_id}.*'kind'"):
        records_for(tracking_uri, "broken")


def test_a_database_stores_error_is_one_runtime_error_naming_the_store(
    tracking_uri,  # noqa: F811
    monkeypatch,
):
    """E.g. two processes opening a new SQLite store at once both run its migrations."""

    def racing_client(uri):
        raise sqlalchemy.exc.OperationalError("ALTER TABLE", {}, Exception("duplicate column"))

    monkeypatch.setattr(mlflow_registry, "client", racing_client)
    with pytest.raises(DecisionStoreError) as raised:
        log_record(tracking_uri, _record("gate"))
    assert str(raised.value).startswith(f"MLflow at {tracking_uri}: cannot log the gate decision")
    assert str(raised.value).endswith("(builtins.Exception) duplicate column")


def test_a_server_that_refuses_is_one_runtime_error_naming_it_without_its_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = closed_port_url().replace("http://", "http://ci:s3cret@")
    with pytest.raises(DecisionStoreError) as raised:
        records_for(uri, "churn")
    assert isinstance(raised.value, RuntimeError)
    shown = uri.replace(":s3cret@", ":***@")
    message = str(raised.value)
    assert message.startswith(f"MLflow at {shown}: cannot read the decisions about churn: ")
    assert "s3cret" not in message
    assert "\n" not in message


def test_a_server_that_never_answers_is_given_up(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    record = _record("gate")
    with silent_endpoint() as endpoint, pytest.raises(DecisionStoreError) as raised:
        log_record(endpoint.url, record)
    message = str(raised.value)
    assert message.startswith(f"MLflow at {endpoint.url}: cannot log the gate decision {record.id}")
    assert "Read timed out" in message


def test_a_step_that_loses_the_race_to_create_the_experiment_logs_into_the_winners(
    tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = mlflow_registry.client(uri).create_experiment(DECISIONS_EXPERIMENT)
    unseen = iter([None])  # the loser looked before the winner created it
    looked_up = MlflowClient.get_experiment_by_name
    monkeypatch.setattr(
        MlflowClient,
        "get_experiment_by_name",
        lambda self, name: next(unseen, looked_up(self, name)),
    )
    run_id = log_record(uri, _record("gate"))
    assert mlflow_registry.client(uri).get_run(run_id).info.experiment_id == winner


def test_a_tracking_uri_mlflow_has_no_store_for_is_bad_input():
    with pytest.raises(
        TrackingUriError, match="MLflow tracking URI 'foo://x': MLflow has no store"
    ):
        records_for("foo://x", "churn")
