"""Batch scoring: the same scores as in-process scoring, streamed, from a folder or the registry.

`churn_champion` (also used by the drift tests) trains on half of the Telco churn rows the
way the training step does (`train_and_log`, SQLite MLflow), logs the scored profile the way
evaluation does, and registers the model as `churn@champion`.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from ctloop.components.batch_scoring.scoring import (
    ScoringError,
    load_scoring_model,
    write_predictions,
)
from ctloop.components.data.dataset_io import DatasetError, read_table, write_parquet
from ctloop.components.data.profile import with_prediction_distribution
from ctloop.components.drift.monitor import profile_table
from ctloop.components.evaluate.metrics import classification_metrics
from ctloop.components.registry import mlflow_registry
from ctloop.components.train.trainer import feature_schema, predict_scores, to_frame
from ctloop.components.train.training_run import train_and_log
from ctloop.serving.model_loading import ModelLoadingError, load_model

FAST = '{"num_boost_round": 60, "early_stopping_rounds": 10, "max_depth": 3, "eta": 0.3}'


@dataclass(frozen=True)
class ChurnChampion:
    """A trained churn model, its data halves and where MLflow keeps it."""

    folder: Path
    tracking_uri: str
    profile: dict
    reference: pa.Table
    current: pa.Table


def churn_champion(root: Path, telco_parquet: Path) -> ChurnChampion:
    """Train on a random half of Telco churn (churn as 0/1, plus a row_id) and register it."""
    table = read_table(str(telco_parquet))
    churn = pc.cast(pc.equal(table.column("churn"), "Yes"), pa.int64())
    table = table.set_column(table.schema.get_field_index("churn"), "churn", churn)
    table = table.append_column("row_id", pa.array(np.arange(table.num_rows)))
    order = np.random.default_rng(7).permutation(table.num_rows)
    reference = table.take(order[: table.num_rows // 2])
    current = table.take(order[table.num_rows // 2 :])
    profile = profile_table(reference.drop_columns(["row_id"]), "churn")
    write_parquet(reference.slice(0, 3000), root / "train.parquet")
    write_parquet(reference.slice(3000), root / "validation.parquet")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    outcome = train_and_log(
        train_path=str(root / "train.parquet"),
        validation_path=str(root / "validation.parquet"),
        profile=profile,
        hyperparameters=FAST,
        device="cpu",
        tracking_uri=tracking_uri,
        experiment="batch-scoring",
        model_dir=str(root / "model"),
        artifact_location=(root / "mlartifacts").as_uri(),
    )
    validation = reference.slice(3000)
    scores = predict_scores(
        load_model(root / "model").booster, to_frame(validation, feature_schema(profile))
    )
    evaluation = {"candidate": classification_metrics(validation.column("churn"), scores)}
    scored = with_prediction_distribution(profile, scores)
    mlflow_registry.log_evaluation(tracking_uri, outcome.run_id, evaluation, scored)
    mlflow_registry.register_version(tracking_uri, "churn", outcome.run_id, outcome.model_uri, {})
    return ChurnChampion(root / "model", tracking_uri, profile, reference, current)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, telco_churn_parquet) -> ChurnChampion:
    return churn_champion(tmp_path_factory.mktemp("champion"), telco_churn_parquet)


def _in_process_scores(champion: ChurnChampion, table: pa.Table) -> np.ndarray:
    booster = load_model(champion.folder).booster
    return predict_scores(booster, to_frame(table, feature_schema(champion.profile)))


def test_scores_equal_in_process_scoring_and_stream_in_several_batches(champion, tmp_path, caplog):
    source = tmp_path / "current.parquet"
    pq.write_table(champion.current, source)  # one row group: batches are exactly 1000 rows
    caplog.set_level(logging.INFO, logger="ctloop.components.batch_scoring.scoring")
    summary = write_predictions(
        str(source),
        load_scoring_model(str(champion.folder)),
        tmp_path / "predictions.parquet",
        key_columns=["row_id"],
        batch_rows=1000,
        log_every_rows=1500,
    )
    predictions = pq.read_table(tmp_path / "predictions.parquet")
    rows = champion.current.num_rows
    assert summary.rows == rows and summary.batches == -(-rows // 1000) >= 3
    assert predictions.column_names == ["row_id", "score", "model_version"]
    assert predictions.column("row_id").equals(champion.current.column("row_id"))
    np.testing.assert_array_equal(
        predictions.column("score").to_numpy(), _in_process_scores(champion, champion.current)
    )
    assert set(predictions.column("model_version").to_pylist()) == {"unknown"}
    progress = [r.getMessage() for r in caplog.records if "batches with version" in r.message]
    assert progress[0].startswith("scored 2000 rows in 2 batches") and len(progress) == 3


def test_registered_champion_is_scored_from_csv_with_its_version(champion, tmp_path):
    source = tmp_path / "current.csv"
    pa_csv.write_csv(champion.current, source)
    model = load_scoring_model("models:/churn@champion", champion.tracking_uri)
    assert model.version == "1"
    assert model.profile["prediction"]["bin_edges"][:2] == [0.0, 0.05]  # the evaluated profile
    summary = write_predictions(str(source), model, tmp_path / "predictions.parquet")
    predictions = pq.read_table(tmp_path / "predictions.parquet")
    assert predictions.column_names == ["score", "model_version"]
    assert set(predictions.column("model_version").to_pylist()) == {"1"}
    assert summary.model_version == "1" and summary.rows == champion.current.num_rows
    np.testing.assert_allclose(
        predictions.column("score").to_numpy(),
        _in_process_scores(champion, read_table(str(source))),
        rtol=1e-6,
    )


def test_a_missing_feature_column_fails_naming_it_and_writes_nothing(champion, tmp_path):
    source = tmp_path / "window.parquet"
    pq.write_table(champion.current.drop_columns(["tenure"]), source)
    with pytest.raises(DatasetError, match="tenure"):
        write_predictions(
            str(source), load_scoring_model(str(champion.folder)), tmp_path / "out.parquet"
        )
    assert list(tmp_path.iterdir()) == [source]


def test_bad_key_columns_and_unknown_models_are_refused(champion, tmp_path):
    model = load_scoring_model(str(champion.folder))
    with pytest.raises(ScoringError, match="score"):
        write_predictions("unused.parquet", model, tmp_path / "out.parquet", key_columns=["score"])
    with pytest.raises(ModelLoadingError, match="not a folder"):
        load_scoring_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadingError, match="models:/churn@retired"):
        load_scoring_model("models:/churn@retired", champion.tracking_uri)
