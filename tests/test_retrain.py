"""Retraining: the combined table, and starting a training run through the KFP API."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctloop.components.retrain.decision import (
    RetrainModeError,
    not_retrained_summary,
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


# -- the route and the summaries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("drifted", "mode", "route"),
    [(True, "nested", "nested"), (True, "api", "api"), (False, "nested", "none")],
)
def test_route_follows_the_drift_decision_and_the_mode(drifted, mode, route):
    assert retraining_route(drifted, mode) == route


def test_an_unknown_mode_fails_even_without_drift():
    with pytest.raises(RetrainModeError, match="retrain_mode 'later'"):
        retraining_route(False, "later")


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
        "reason": "no drift detected (drift share 0.050)",
    }
