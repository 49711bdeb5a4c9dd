"""The Feast integration against a real local store (file offline store, SQLite online store).

Needs the `feast` package: `make test` runs this module inside `.venv-feast`
(tests/test_feast_environment.py), where Feast is installed beside ctloop.
"""

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("feast")

from kfp import dsl, local  # noqa: E402
from kfp.dsl import Dataset  # noqa: E402

from ctloop.components.data.component import load_dataset, validate_dataset  # noqa: E402
from ctloop.components.features.component import materialize_features  # noqa: E402
from ctloop.components.features.demo_source import write_demo_source  # noqa: E402
from ctloop.components.features.materialize import materialize  # noqa: E402
from ctloop.components.features.repo import (  # noqa: E402
    ENTITY_KEY,
    FEATURE_SERVICE,
    FEATURES,
    PROFILE_FEATURES,
    SERVICE_FEATURES,
    TIMESTAMP,
    TTL,
    FeatureRepoError,
    create_repo,
)
from ctloop.components.features.training_table import (  # noqa: E402
    EntityTableError,
    build_training_table,
)
from ctloop.serving.feature_lookup import FeatureLookup  # noqa: E402
from ctloop.serving.local_server import free_port, running_server  # noqa: E402
from ctloop.serving.request_decoding import InvalidRequest  # noqa: E402
from tests.served_model import train_model_folder  # noqa: E402

AS_OF = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
"""The demo snapshot's time: recent, since a first materialization looks back one TTL from now."""
KINDS = {**PROFILE_FEATURES, **SERVICE_FEATURES}


def snapshot_values(seed: int) -> dict:
    """One customer snapshot whose every feature value depends on `seed`."""
    values = {"int": seed, "float": seed + 0.5, "str": f"v{seed}"}
    return {name: values[kind] for name, kind in KINDS.items()}


@pytest.fixture()
def small_case(tmp_path):
    """Three customers with snapshots at several times; label rows between, before and after."""
    day = timedelta(days=1)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    snapshots = [
        (1, t0, 10),
        (1, t0 + 10 * day, 11),
        (1, t0 + 20 * day, 12),
        (2, t0 + 5 * day, 20),
        (3, t0, 30),
    ]
    source = pd.DataFrame(
        [{ENTITY_KEY: c, TIMESTAMP: t, **snapshot_values(s)} for c, t, s in snapshots]
    )
    source.to_parquet(tmp_path / "source.parquet", index=False)
    entity = pd.DataFrame(
        {
            ENTITY_KEY: [1, 1, 1, 2, 2, 3, 3],
            TIMESTAMP: [
                t0 + 15 * day,  # between the second and third snapshot: the second
                t0 + 20 * day,  # exactly at the third: the third
                t0 - day,  # before any snapshot: nothing
                t0 + 6 * day,
                t0 + 4 * day,  # before customer 2's only snapshot: nothing
                t0 + 300 * day,  # within the TTL
                t0 + TTL + 2 * day,  # older than the TTL: nothing
            ],
            "churn": ["No", "Yes", "No", "Yes", "No", "No", "Yes"],
        }
    )
    store = create_repo(tmp_path / "repo", tmp_path / "source.parquet")
    return store, source, entity


def hand_made_join(source: pd.DataFrame, entity: pd.DataFrame) -> pd.DataFrame:
    """The latest snapshot at or before each entity row, no older than the TTL; rows with none
    are left out."""
    ordered = entity.assign(row=range(len(entity))).sort_values(TIMESTAMP)
    joined = pd.merge_asof(
        ordered,
        source.sort_values(TIMESTAMP),
        on=TIMESTAMP,
        by=ENTITY_KEY,
        direction="backward",
        tolerance=pd.Timedelta(TTL),
    )
    joined = joined.dropna(subset=FEATURES, how="all").sort_values("row")
    return joined[[*FEATURES, "churn"]].reset_index(drop=True)


def test_training_through_feast_equals_a_hand_made_point_in_time_join(small_case, tmp_path):
    store, source, entity = small_case
    built = build_training_table(
        pa.Table.from_pandas(entity, preserve_index=False),
        str(tmp_path / "repo"),
        FEATURE_SERVICE,
        "churn",
    )
    expected = hand_made_join(source, entity)
    got = built.table.to_pandas()
    assert got.columns.tolist() == [*FEATURES, "churn"]
    assert got["tenure"].tolist() == [11, 12, 20, 30]
    assert built.rows_without_features == 3
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert built.feature_service["name"] == FEATURE_SERVICE
    assert built.feature_service["version"] == "1"
    assert len(built.feature_service["features"]) == len(FEATURES)


def test_a_window_without_labels_gets_its_features_alone(small_case, tmp_path):
    """A monitoring window's outcomes may not be known yet: the same join, no label."""
    _, source, entity = small_case
    unlabelled = pa.Table.from_pandas(entity.drop(columns="churn"), preserve_index=False)
    built = build_training_table(unlabelled, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")
    assert built.table.column_names == FEATURES
    expected = hand_made_join(source, entity)[FEATURES]
    pd.testing.assert_frame_equal(built.table.to_pandas(), expected, check_dtype=False)


def test_an_entity_table_with_features_of_its_own_is_refused(small_case, tmp_path):
    _, _, entity = small_case
    table = pa.Table.from_pandas(entity.assign(tenure=1), preserve_index=False)
    with pytest.raises(EntityTableError, match=r"\['tenure'\] besides"):
        build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")


def test_an_unknown_feature_service_is_named_with_the_known_ones(small_case, tmp_path):
    _, _, entity = small_case
    table = pa.Table.from_pandas(entity, preserve_index=False)
    with pytest.raises(FeatureRepoError, match=r"'fraud'.*\['churn_features'\]"):
        build_training_table(table, str(tmp_path / "repo"), "fraud", "churn")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, telco_churn_parquet):
    """The demo's table as a Feast repository, materialized, and its entity table."""
    folder = tmp_path_factory.mktemp("feast_demo")
    write_demo_source(
        str(telco_churn_parquet), folder / "source.parquet", folder / "entity.parquet", AS_OF
    )
    create_repo(folder / "repo", folder / "source.parquet")
    return folder


@dsl.pipeline
def feast_then_validate(entity_uri: str, feature_repo: str) -> Dataset:
    built = load_dataset(
        uri=entity_uri,
        feature_repo=feature_repo,
        feature_service=FEATURE_SERVICE,
        target="churn",
    )
    return validate_dataset(dataset=built.outputs["dataset"], target="churn").outputs["validated"]


def test_the_validate_step_takes_the_table_and_keeps_the_feature_service(
    demo_store, telco_churn_parquet, tmp_path
):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    validated = feast_then_validate(
        entity_uri=str(demo_store / "entity.parquet"), feature_repo=str(demo_store / "repo")
    ).output

    original = pq.read_table(telco_churn_parquet).select([*FEATURES, "churn"]).to_pandas()
    table = pq.read_table(validated.path).to_pandas()
    assert table[FEATURES].equals(original[FEATURES])
    assert validated.metadata["feature_service"] == FEATURE_SERVICE
    assert validated.metadata["feature_service_version"] == "1"
    assert validated.metadata["feature_references"][0] == "customer_profile:female"
    assert validated.metadata["rows"] == len(original)
    assert validated.metadata["rows_without_features"] == 0


def test_an_entity_key_request_is_scored_as_the_same_request_with_its_features(
    demo_store, tmp_path
):
    ends = materialize(str(demo_store / "repo"), AS_OF + timedelta(days=2))
    assert set(ends) == {"customer_profile", "customer_services"}
    training = build_training_table(
        pq.read_table(demo_store / "entity.parquet"),
        str(demo_store / "repo"),
        FEATURE_SERVICE,
        "churn",
    )
    train_model_folder(tmp_path / "model", training.table)
    customers = [3, 70, 7043]
    features = training.table.to_pandas().drop(columns="churn")
    with_features = [features.iloc[c - 1].to_dict() for c in customers]
    port = free_port()
    command = [sys.executable, "-m", "ctloop", "serve", "--model-uri", str(tmp_path / "model")]
    command += ["--port", str(port), "--feast-repo", str(demo_store / "repo"), "--name", "churn"]

    with running_server(command, port, start_timeout_s=120) as served:
        url = f"{served.url}/v1/models/churn:predict"
        by_key = httpx.post(url, json={"instances": [{ENTITY_KEY: c} for c in customers]})
        by_features = httpx.post(url, json={"instances": with_features})
        unknown = httpx.post(url, json={"instances": [{ENTITY_KEY: 99999}]})

    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["predictions"] == by_features.json()["predictions"]
    assert len(set(np.round(by_key.json()["predictions"], 6))) == len(customers)
    assert unknown.status_code == 400
    assert "no features for [{'customer_id': 99999}]" in unknown.text


def test_the_materialization_step_records_how_far_each_view_got(demo_store):
    until = AS_OF + timedelta(days=3)
    ends = materialize_features.python_func(
        feature_repo=str(demo_store / "repo"), end=until.isoformat()
    )
    assert json.loads(ends) == {
        "customer_profile": until.isoformat(),
        "customer_services": until.isoformat(),
    }


def test_a_materialization_end_that_is_not_a_time_is_refused_naming_it(demo_store):
    with pytest.raises(ValueError, match=r"end 'yesterday' is not an ISO 8601 time"):
        materialize_features.python_func(feature_repo=str(demo_store / "repo"), end="yesterday")


def test_an_empty_feature_service_or_label_is_refused_naming_what_is_there(small_case, tmp_path):
    _, _, entity = small_case
    table = pa.Table.from_pandas(entity, preserve_index=False)
    with pytest.raises(FeatureRepoError, match=r"no feature service named.*\['churn_features'\]"):
        build_training_table(table, str(tmp_path / "repo"), "", "churn")
    with pytest.raises(EntityTableError, match=r"no label column named.*'churn'\]"):
        build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "")


def test_a_repository_given_by_uri_is_read_as_the_same_repository(small_case, tmp_path):
    """A step in a pod reads the repository by URI (s3://, gs://; file:// here): the same
    table as through the folder itself."""
    _, _, entity = small_case
    table = pa.Table.from_pandas(entity, preserve_index=False)
    by_path = build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")
    by_uri = build_training_table(table, (tmp_path / "repo").as_uri(), FEATURE_SERVICE, "churn")
    assert by_uri.table.equals(by_path.table)
    assert by_uri.feature_service == by_path.feature_service


def test_a_repository_by_uri_with_a_relative_registry_or_no_config_is_refused(small_case, tmp_path):
    table = pa.Table.from_pandas(small_case[2], preserve_index=False)
    relative = tmp_path / "relative"
    relative.mkdir()
    (relative / "feature_store.yaml").write_text("project: p\nregistry: data/registry.db\n")
    with pytest.raises(FeatureRepoError, match=r"relative path 'data/registry.db'"):
        build_training_table(table, relative.as_uri(), FEATURE_SERVICE, "churn")
    with pytest.raises(FeatureRepoError, match=r"is not a Feast repository: cannot read"):
        build_training_table(table, (tmp_path / "none").as_uri(), FEATURE_SERVICE, "churn")


def test_the_predictor_reads_a_repository_given_by_uri_as_the_same_repository(tmp_path):
    """A predictor pod reads the repository by URI (s3://, gs://; file:// here): the same
    features as through the folder itself; a URI with no repository is refused naming it."""
    customers = pd.DataFrame(
        [{ENTITY_KEY: c, TIMESTAMP: AS_OF, **snapshot_values(10 * c)} for c in (1, 2)]
    )
    customers.to_parquet(tmp_path / "source.parquet", index=False)
    create_repo(tmp_path / "repo", tmp_path / "source.parquet")
    materialize(str(tmp_path / "repo"), AS_OF + timedelta(days=1))
    instances = [{ENTITY_KEY: 2}, {ENTITY_KEY: 1}]
    found = []
    for repo in (str(tmp_path / "repo"), (tmp_path / "repo").as_uri()):
        lookup = FeatureLookup(repo, FEATURE_SERVICE)
        lookup.open()
        found.append(lookup.features_for(instances))

    by_path, by_uri = found
    assert by_uri == by_path
    assert [row["tenure"] for row in by_uri] == [20, 10]
    with pytest.raises(FeatureRepoError, match=r"/none is not a Feast repository: cannot read"):
        FeatureLookup((tmp_path / "none").as_uri(), FEATURE_SERVICE).open()


def test_the_whole_loop_trains_serves_monitors_and_retrains_through_feast(demo_store, tmp_path):
    """Training joins the entity table through the service and deploys a predictor that looks
    features up; monitoring materializes, joins its window, and retrains on entity rows joined
    again: both versions name the service they were trained through."""
    from mlflow import MlflowClient

    from ctloop.pipelines.local_run import run_monitoring_pipeline, run_training_pipeline

    create_repo(tmp_path / "repo", demo_store / "source.parquet")
    entities = pq.read_table(demo_store / "entity.parquet")
    pq.write_table(entities.slice(0, 5000), tmp_path / "train.parquet")
    pq.write_table(entities.slice(5000), tmp_path / "window.parquet")
    feast = {
        "feature_repo": str(tmp_path / "repo"),
        "feature_service": FEATURE_SERVICE,
        "serving_runtime": "ctloop-xgboost-feast",
    }
    work = tmp_path / "work"
    with open(tmp_path / "runs.log", "w") as log:
        training = run_training_pipeline(
            str(tmp_path / "train.parquet"), "churn", work, feast, log_stream=log
        )
        monitoring = run_monitoring_pipeline(
            str(tmp_path / "window.parquet"),
            str(tmp_path / "train.parquet"),
            "churn",
            work,
            {**feast, "min_new_labelled_rows": 100, "key_columns": [ENTITY_KEY]},
            log_stream=log,
        )

    assert training["gate_passed"], training["gate_failures"]
    manifest = Path(training["inference_service_manifest"]).read_text()
    assert f"--feast-repo={tmp_path / 'repo'}" in manifest
    assert "runtime: ctloop-xgboost-feast" in manifest
    assert monitoring["retrained"], monitoring["retraining"]
    # The window kept its keys: the champion's predictions name each customer.
    [predictions] = (work / "pipeline-root").glob("ctloop-monitoring-*/score-dataset/predictions")
    assert pq.read_table(predictions).column(ENTITY_KEY).to_pylist() == list(range(5001, 7044))
    store = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)  # not the registry an earlier test set
    versions = client.search_model_versions("name='ctloop-model'")
    assert {v.tags["ctloop.dataset.feature_service"] for v in versions} == {FEATURE_SERVICE}
    retrained = max(versions, key=lambda version: int(version.version))
    retraining_uri = client.get_run(retrained.run_id).data.tags["ctloop.dataset.uri"]
    retraining_rows = pq.read_table(retraining_uri)
    assert retraining_rows.column_names == [ENTITY_KEY, TIMESTAMP, "churn"]
    assert retraining_rows.num_rows == entities.num_rows


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("project: [unclosed\n  : :\n", "is not valid YAML"),
        ("- project\n- registry\n", "holds a list, not a Feast configuration"),
        ("project: p\nprovider: local\n", "names no registry"),
    ],
)
def test_a_malformed_feature_store_yaml_is_refused_naming_it_by_path_and_by_uri(
    tmp_path, text, problem
):
    from ctloop.components.features.repo import open_store

    (tmp_path / "feature_store.yaml").write_text(text)
    for repo in (str(tmp_path), tmp_path.as_uri()):
        with pytest.raises(FeatureRepoError, match=rf"{tmp_path}/feature_store.yaml {problem}"):
            open_store(repo)


@pytest.fixture()
def served_repo(tmp_path):
    """Customers 1 and 2, snapshotted at AS_OF and materialized: what a predictor looks up."""
    customers = pd.DataFrame(
        [{ENTITY_KEY: c, TIMESTAMP: AS_OF, **snapshot_values(10 * c)} for c in (1, 2)]
    )
    customers.to_parquet(tmp_path / "source.parquet", index=False)
    create_repo(tmp_path / "repo", tmp_path / "source.parquet")
    materialize(str(tmp_path / "repo"), AS_OF + timedelta(days=1))
    return str(tmp_path / "repo")


def test_the_predictor_refuses_an_unknown_feature_service_naming_the_known_ones(served_repo):
    with pytest.raises(FeatureRepoError, match=r"'fraud' is not in.*\['churn_features'\]"):
        FeatureLookup(served_repo, "fraud").open()


@pytest.mark.parametrize("key", ["1", 1.5, True, None, 2**70])
def test_an_entity_key_of_the_wrong_type_is_refused_naming_the_instance(served_repo, key):
    """Feast would cast "1", 1.5 and true to customer 1 and answer with its features."""
    lookup = FeatureLookup(served_repo, FEATURE_SERVICE)
    lookup.open()
    with pytest.raises(InvalidRequest, match=r"instance 1: entity key 'customer_id' is .* an int"):
        lookup.features_for([{ENTITY_KEY: 2}, {ENTITY_KEY: key}])


def test_a_request_mixing_entity_keys_and_features_is_refused_naming_which(served_repo):
    lookup = FeatureLookup(served_repo, FEATURE_SERVICE)
    lookup.open()
    mixed = [{ENTITY_KEY: 1}, snapshot_values(1), {ENTITY_KEY: 2}]
    with pytest.raises(InvalidRequest, match=r"instances \[0, 2\] hold only .* instances \[1\]"):
        lookup.asks_for_lookup(mixed)
    assert lookup.asks_for_lookup([{ENTITY_KEY: 1}, {ENTITY_KEY: 2}])
    assert not lookup.asks_for_lookup([snapshot_values(1)])


def test_a_batch_of_keys_over_the_predictors_limit_is_refused_before_the_lookup(served_repo):
    lookup = FeatureLookup(served_repo, FEATURE_SERVICE, max_rows=2)
    lookup.open()
    assert len(lookup.features_for([{ENTITY_KEY: 1}, {ENTITY_KEY: 2}])) == 2
    with pytest.raises(InvalidRequest, match=r"3 entity-key instances, over max_batch_rows=2"):
        lookup.features_for([{ENTITY_KEY: 1}, {ENTITY_KEY: 2}, {ENTITY_KEY: 1}])


def test_a_materialization_end_in_the_future_is_refused_leaving_the_store_as_it_was(
    served_repo,
):
    """Feast would record the views as loaded up to then: later runs would start there."""
    from ctloop.components.features.repo import open_store

    before = {
        view.name: view.most_recent_end_time
        for view in open_store(served_repo).list_feature_views()
    }
    with pytest.raises(ValueError, match=r"is in the future"):
        materialize(served_repo, datetime.now(UTC) + timedelta(days=1))
    after = open_store(served_repo).list_feature_views(allow_cache=False)
    assert {view.name: view.most_recent_end_time for view in after} == before


def test_a_registry_whose_folder_does_not_exist_is_refused_naming_the_file(tmp_path):
    from ctloop.components.features.repo import open_store

    registry = tmp_path / "nowhere" / "registry.db"
    (tmp_path / "feature_store.yaml").write_text(f"project: p\nregistry: {registry}\n")
    for repo in (str(tmp_path), tmp_path.as_uri()):
        with pytest.raises(FeatureRepoError, match=rf"yaml names the registry '{registry}', whose"):
            open_store(repo)
    (tmp_path / "feature_store.yaml").write_text("project: p\nregistry: data/registry.db\n")
    with pytest.raises(FeatureRepoError, match=rf"whose folder {tmp_path}/data does not exist"):
        open_store(str(tmp_path))


def entity_rows(keys, times, labels=True) -> pa.Table:
    """An entity table of `keys` at `times`, labelled alternately No and Yes."""
    columns = {ENTITY_KEY: keys, TIMESTAMP: times}
    if labels:
        columns["churn"] = ["No", "Yes"] * (len(keys) // 2) + ["No"] * (len(keys) % 2)
    return pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)


@pytest.mark.parametrize("labels", [True, False], ids=["training", "window"])
def test_entity_rows_that_all_precede_the_features_are_refused_not_joined_to_nothing(
    small_case, tmp_path, labels
):
    early = datetime(2024, 6, 1, tzinfo=UTC)
    table = entity_rows([1, 2, 3], [early] * 3, labels)
    with pytest.raises(EntityTableError, match=r"none of the entity table's 3 rows has a value"):
        build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")


@pytest.mark.parametrize(
    ("keys", "times", "problem"),
    [
        (["1", "2"], [datetime(2025, 2, 1, tzinfo=UTC)] * 2, r"'customer_id' is string;.*Int64"),
        ([1.0, 2.0], [datetime(2025, 2, 1, tzinfo=UTC)] * 2, r"'customer_id' is double;.*Int64"),
        ([1, 2], [datetime(2025, 2, 1)] * 2, r"'event_timestamp' has no time zone"),
        ([1, 2], [datetime(2025, 2, 1, tzinfo=UTC), None], r"\['event_timestamp'\] have missing"),
        ([], pd.Series([], dtype="datetime64[us, UTC]"), r"has no rows"),
    ],
    ids=["string keys", "float keys", "naive times", "missing time", "no rows"],
)
def test_an_entity_table_the_join_would_misread_is_refused_naming_the_column(
    small_case, tmp_path, keys, times, problem
):
    table = entity_rows(pd.array(keys, dtype=object) if keys else pd.array([], "int64"), times)
    with pytest.raises(EntityTableError, match=problem):
        build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")


def test_duplicate_entity_rows_each_get_their_features_and_keep_their_labels(small_case, tmp_path):
    """Feast's file offline store keeps one row per (keys, timestamp): the join must not."""
    t = datetime(2025, 1, 16, tzinfo=UTC)
    table = entity_rows([1, 1, 2, 1], [t, t, t, t - timedelta(days=30)])
    built = build_training_table(table, str(tmp_path / "repo"), FEATURE_SERVICE, "churn")
    got = built.table.to_pandas()
    assert got["tenure"].tolist() == [11, 11, 20]
    assert got["churn"].tolist() == ["No", "Yes", "No"]
    assert built.rows_without_features == 1
