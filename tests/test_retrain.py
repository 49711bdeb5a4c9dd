"""Retraining: the combined table, and starting a training run through the KFP API."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp.dsl import Artifact

from ctloop.components.decisions.record import read_record
from ctloop.components.retrain.component import keep_champion, route_retraining
from ctloop.components.retrain.decision import (
    RetrainModeError,
    RouteInputError,
    not_retrained_summary,
    replay_route,
    retrained_summary,
    retraining_route,
)
from ctloop.components.retrain.kfp_runs import RetrainingTriggerError, start_training_run
from ctloop.components.retrain.retraining_data import RetrainingDataError, retraining_table
from ctloop.components.table_io import DatasetError, write_parquet_uri

REFERENCE = pa.table(
    {"tenure": pa.array([1.0, 2.0, 3.0]), "plan": ["a", "b", "a"], "churn": [0, 1, 0]}
).replace_schema_metadata({b"pandas": b"{}"})
CURRENT = pa.table(
    {"churn": [1, 1], "plan": ["c", "a"], "tenure": pa.array([40, 50]), "extra": [1, 2]}
)


def test_reference_plus_current_appends_the_window_in_the_reference_schema():
    table = retraining_table(REFERENCE, CURRENT, target="churn", mode="reference+current")
    assert table.column_names == ["tenure", "plan", "churn"]
    assert table.schema.field("tenure").type == pa.float64()
    assert table.column("tenure").to_pylist() == [1.0, 2.0, 3.0, 40.0, 50.0]
    assert table.column("plan").to_pylist() == ["a", "b", "a", "c", "a"]


def test_sliding_keeps_the_newest_rows_and_current_keeps_only_the_window():
    sliding = retraining_table(REFERENCE, CURRENT, target="churn", mode="sliding", max_rows=3)
    assert sliding.column("tenure").to_pylist() == [3.0, 40.0, 50.0]
    alone = retraining_table(REFERENCE, CURRENT, target="churn", mode="current")
    assert alone.num_rows == 2 and "extra" in alone.column_names


@pytest.mark.parametrize(
    ("current", "mode", "message"),
    [
        (CURRENT.drop_columns(["churn"]), "current", "no label column 'churn'"),
        (
            CURRENT.drop_columns(["plan"]),
            "reference+current",
            r"lacks reference column\(s\) \['plan'\]",
        ),
        (
            CURRENT.set_column(2, "tenure", pa.array(["x", "y"])),
            "reference+current",
            "column 'tenure'",
        ),
        (CURRENT, "sliding", "needs max_rows > 0"),
        (CURRENT, "everything", "expected one of"),
    ],
)
def test_a_window_that_cannot_be_appended_says_why(current, mode, message):
    with pytest.raises(RetrainingDataError, match=message):
        retraining_table(REFERENCE, current, target="churn", mode=mode)


def test_write_parquet_uri_writes_local_paths_and_file_uris(tmp_path):
    written = write_parquet_uri(REFERENCE, str(tmp_path / "a" / "r.parquet"))
    assert pq.read_table(written).num_rows == 3
    uri = (tmp_path / "b" / "r.parquet").as_uri()
    assert write_parquet_uri(REFERENCE, uri) == uri
    assert pq.read_table(tmp_path / "b" / "r.parquet").num_rows == 3
    with pytest.raises(DatasetError, match="must name a Parquet file"):
        write_parquet_uri(REFERENCE, str(tmp_path / "r.csv"))


# -- the API trigger ------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def training_yaml(compiled_pipelines):
    return compiled_pipelines / "pipelines" / "training.yaml"


@pytest.fixture
def kfp_api(kfp_api, training_yaml):
    """The stand-in with the compiled training pipeline uploaded as `ctloop-training`."""
    kfp_api.pipeline_id = kfp_api.add_pipeline("ctloop-training", training_yaml)
    return kfp_api


def _trigger(kfp_api, cooldown_hours=6.0):
    return start_training_run(
        kfp_api.host,
        pipeline_name="ctloop-training",
        experiment="retraining",
        arguments={"data_uri": "s3://b/retrain.parquet", "target": "churn"},
        cooldown_hours=cooldown_hours,
        run_name="retrain after drift",
        now=NOW,
    )


def test_trigger_starts_a_run_of_the_newest_version_with_the_arguments(kfp_api):
    outcome = _trigger(kfp_api)
    assert outcome.action == "started"
    run = kfp_api.runs[outcome.run_id]
    assert run["runtime_config"]["parameters"] == {
        "data_uri": "s3://b/retrain.parquet",
        "target": "churn",
    }
    newest = kfp_api.versions[kfp_api.pipeline_id][-1]["pipeline_version_id"]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == newest
    assert kfp_api.experiments[run["experiment_id"]]["display_name"] == "retraining"


def test_no_second_run_while_one_is_running_or_within_the_cooldown(kfp_api):
    first = _trigger(kfp_api)
    assert first.action == "started"
    second = _trigger(kfp_api)  # the first is still PENDING
    assert second.action == "skipped" and "still PENDING" in second.reason

    kfp_api.runs[first.run_id]["state"] = "SUCCEEDED"
    kfp_api.runs[first.run_id]["created_at"] = "2026-11-25T05:00:00Z"  # 3 h ago
    third = _trigger(kfp_api)
    assert third.action == "skipped" and "within the 6 h cooldown" in third.reason

    kfp_api.runs[first.run_id]["created_at"] = "2026-11-25T01:00:00Z"  # 7 h ago
    assert _trigger(kfp_api).action == "started"
    assert len(kfp_api.runs) == 2


def test_runs_of_other_pipelines_do_not_block_retraining(kfp_api, training_yaml):
    other = kfp_api.add_pipeline("someone-else", training_yaml)
    experiment = kfp_api._create_experiment({}, {"display_name": "retraining"})[1]
    kfp_api.add_run(other, experiment["experiment_id"], "RUNNING", "2026-11-25T07:59:00Z")
    assert _trigger(kfp_api).action == "started"


def test_trigger_sends_the_service_account_token(kfp_api, tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("sa-token-7\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    _trigger(kfp_api)
    assert kfp_api.tokens and set(kfp_api.tokens) == {"sa-token-7"}


def test_trigger_for_a_pipeline_never_uploaded_names_it(kfp_api):
    with pytest.raises(RetrainingTriggerError, match="'nope' is not uploaded"):
        start_training_run(
            kfp_api.host,
            pipeline_name="nope",
            experiment="retraining",
            arguments={},
            cooldown_hours=0,
            run_name="x",
        )


# -- the route, its record and the summaries -------------------------------------------------


@pytest.mark.parametrize(
    ("drifted", "mode", "route"),
    [(True, "nested", "nested"), (True, "api", "api"), (False, "nested", "none")],
)
def test_route_follows_the_drift_decision_and_the_mode(drifted, mode, route):
    assert retraining_route(drifted, mode).route == route


def test_an_unknown_mode_fails_even_without_drift():
    with pytest.raises(RetrainModeError, match="retrain_mode 'later'"):
        retraining_route(False, "later")


def test_a_performance_alert_alone_retrains_and_says_so():
    route = retraining_route(False, "api", performance_alert=True)
    assert route.outcome() == {"route": "api", "triggers": ["performance"]}
    assert route.reasons == (
        "no drift detected in the window",
        "the performance estimate crossed its bound",
        "0 new labelled rows; no data-volume trigger (min_new_labelled_rows 0)",
    )


@pytest.mark.parametrize(
    ("labelled", "minimum", "triggers", "volume_reason"),
    [
        (1000, 1000, ["data_volume"], "1000 new labelled rows >= min_new_labelled_rows 1000"),
        (999, 1000, [], "999 new labelled rows < min_new_labelled_rows 1000"),
        (5000, 0, [], "5000 new labelled rows; no data-volume trigger (min_new_labelled_rows 0)"),
    ],
)
def test_enough_new_labelled_rows_retrain_without_drift(labelled, minimum, triggers, volume_reason):
    route = retraining_route(False, "nested", labelled_rows=labelled, min_new_labelled_rows=minimum)
    assert route.triggers == tuple(triggers)
    assert route.route == ("nested" if triggers else "none")
    assert route.reasons[2] == volume_reason


def test_every_trigger_that_fired_is_named():
    route = retraining_route(
        True, "nested", performance_alert=True, labelled_rows=20, min_new_labelled_rows=10
    )
    assert route.outcome() == {
        "route": "nested",
        "triggers": ["drift", "performance", "data_volume"],
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"labelled_rows": -1}, r"labelled_rows -1: expected 0 or more rows"),
        ({"min_new_labelled_rows": 2.5}, r"min_new_labelled_rows 2.5: expected a whole number"),
        ({"labelled_rows": "10"}, r"labelled_rows '10': expected a whole number"),
        ({"labelled_rows": float("nan")}, r"labelled_rows nan: expected a whole number"),
        ({"performance_alert": "false"}, r"performance_alert 'false': expected true or false"),
    ],
)
def test_a_bad_row_count_is_refused_naming_it(arguments, message):
    with pytest.raises(RouteInputError, match=message):
        retraining_route(False, "nested", **arguments)


def test_row_counts_handed_over_as_whole_floats_are_taken():
    route = retraining_route(False, "nested", labelled_rows=12.0, min_new_labelled_rows=10)
    assert route.triggers == ("data_volume",) and route.inputs["labelled_rows"] == 12


def test_the_route_component_writes_a_record_that_replays_to_the_same_outcome(tmp_path):
    record_file = tmp_path / "record.json"
    branch = route_retraining.python_func(
        drift_detected=False,
        record=Artifact(uri=str(record_file)),
        retrain_mode="api",
        performance_alert=False,
        labelled_rows=1500,
        min_new_labelled_rows=1000,
        registered_model_name="churn",
        kfp_run_id="run-7",
    )
    assert branch == "api"
    record = read_record(record_file)
    assert record.kind == "retraining_route"
    assert record.subject["registered_model"] == "churn"
    assert record.subject["kfp_run_id"] == "run-7"
    assert record.inputs == {
        "drift_detected": False,
        "performance_alert": False,
        "labelled_rows": 1500,
        "min_new_labelled_rows": 1000,
        "retrain_mode": "api",
    }
    assert record.policy == ""
    assert record.outcome == {"route": "api", "triggers": ["data_volume"]}
    assert record.reasons[2] == "1500 new labelled rows >= min_new_labelled_rows 1000"
    assert replay_route(record.inputs, record.policy) == (record.outcome, record.reasons)


def test_the_route_is_logged_to_mlflow_when_a_tracking_uri_is_given(tmp_path, monkeypatch):
    from ctloop.components.decisions import store

    logged = []
    monkeypatch.setattr(store, "log_record", lambda uri, record: logged.append((uri, record)))
    route_retraining.python_func(
        drift_detected=True,
        record=Artifact(uri=str(tmp_path / "record.json")),
        registered_model_name="churn",
        mlflow_tracking_uri="http://mlflow:5000",
    )
    assert logged == [("http://mlflow:5000", read_record(tmp_path / "record.json"))]
    route_retraining.python_func(
        drift_detected=True, record=Artifact(uri=str(tmp_path / "again.json"))
    )
    assert len(logged) == 1  # no tracking URI: the artifact only


def test_replay_takes_a_changed_input_into_account_and_names_a_missing_one():
    inputs = {
        "drift_detected": False,
        "performance_alert": False,
        "labelled_rows": 10,
        "min_new_labelled_rows": 0,
        "retrain_mode": "nested",
    }
    assert replay_route(inputs, "")[0] == {"route": "none", "triggers": []}
    assert replay_route({**inputs, "drift_detected": True}, "")[0]["route"] == "nested"
    with pytest.raises(RouteInputError, match=r"lacks input\(s\) \['labelled_rows'\]"):
        replay_route({k: v for k, v in inputs.items() if k != "labelled_rows"}, "")


def test_summaries_carry_the_action_and_decoded_training_outputs():
    retrained = json.loads(
        retrained_summary(True, "[]", '{"roc_auc": 0.84}', '{"model_version": "3"}')
    )
    assert retrained == {
        "action": "retrained",
        "gate_passed": True,
        "gate_failures": [],
        "metrics": {"roc_auc": 0.84},
        "deployment": {"model_version": "3"},
    }
    assert json.loads(not_retrained_summary(0.05)) == {
        "action": "none",
        "reason": "no drift detected (drift share 0.050); the performance estimate is within "
        "its bound; 0 new labelled rows; no data-volume trigger (min_new_labelled_rows 0)",
    }


def test_keep_champion_says_what_each_trigger_found():
    kept = json.loads(
        keep_champion.python_func(drift_share=0.1, labelled_rows=40, min_new_labelled_rows=100)
    )
    assert kept["reason"] == (
        "no drift detected (drift share 0.100); the performance estimate is within its bound; "
        "40 new labelled rows < min_new_labelled_rows 100"
    )


def test_an_empty_kfp_host_is_refused_naming_the_parameter():
    """Local runs leave kfp_host empty: retrain_mode api there says what is missing."""
    from ctloop.components.kfp_api_client import KfpHostError

    with pytest.raises(KfpHostError, match="kfp_host is empty"):
        start_training_run(
            " ",
            pipeline_name="ctloop-training",
            experiment="ctloop",
            arguments={},
            cooldown_hours=0,
            run_name="retrain",
        )


def test_dvc_reference_data_needs_an_explicit_retraining_table_uri():
    from ctloop.components.retrain.retraining_data import retraining_data_uri

    with pytest.raises(RetrainingDataError, match="give retraining_data_uri"):
        retraining_data_uri("", "dvc:///srv/data?path=churn.parquet&rev=v1", "run-1")
    assert retraining_data_uri("s3://lake/r.parquet", "dvc:///srv/data?path=x", "run-1") == (
        "s3://lake/r.parquet"
    )


def test_a_window_joined_through_feast_retrains_on_entity_rows(tmp_path):
    """The retraining table of a model trained through Feast is entity rows (the champion's
    entity table, then the window's, read from where its load step recorded it), which the
    retraining's load step joins again: not the window's joined features."""
    from types import SimpleNamespace

    from ctloop.components.retrain.component import prepare_retraining_data

    stamp = pa.array([dt.datetime(2026, 1, day, tzinfo=dt.UTC) for day in (1, 2)])
    entities = {"customer_id": [1, 2], "event_timestamp": stamp, "churn": ["No", "Yes"]}
    write_parquet_uri(pa.table(entities), str(tmp_path / "reference.parquet"))
    write_parquet_uri(pa.table(entities), str(tmp_path / "window_entities.parquet"))
    joined = tmp_path / "window_features.parquet"
    write_parquet_uri(pa.table({"tenure": [3, 4], "churn": ["No", "Yes"]}), str(joined))
    window = SimpleNamespace(
        path=str(joined), metadata={"source_uri": str(tmp_path / "window_entities.parquet")}
    )
    arguments = dict(
        reference_uri=str(tmp_path / "reference.parquet"), current=window, target="churn"
    )

    through_feast = prepare_retraining_data.python_func(
        **arguments, output_uri=str(tmp_path / "feast.parquet"), feature_repo="s3://b/feast"
    )
    table = pq.read_table(through_feast)
    assert table.column_names == ["customer_id", "event_timestamp", "churn"]
    assert table.num_rows == 4
    with pytest.raises(RetrainingDataError, match="lacks reference column"):
        prepare_retraining_data.python_func(**arguments, output_uri=str(tmp_path / "t.parquet"))


def test_an_api_retraining_of_a_feast_model_joins_through_the_same_service(kfp_api):
    from ctloop.components.retrain.component import start_retraining_run

    outcome = json.loads(
        start_retraining_run.python_func(
            kfp_host=kfp_api.host,
            training_pipeline="ctloop-training",
            experiment="retraining",
            data_uri="s3://b/entities.parquet",
            training_arguments='{"target": "churn", "feature_repo": "stale"}',
            feature_repo="s3://b/feast",
            feature_service="churn_features",
        )
    )
    parameters = kfp_api.runs[outcome["run_id"]]["runtime_config"]["parameters"]
    assert parameters == {
        "data_uri": "s3://b/entities.parquet",
        "target": "churn",
        "feature_repo": "s3://b/feast",
        "feature_service": "churn_features",
    }
