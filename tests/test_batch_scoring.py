"""Batch scoring: the same scores as in-process scoring, streamed, from a folder or the registry.

The model is `tests.registered_champion`'s churn champion.
"""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from ctloop.components.batch_scoring.scoring import ScoringError, run_scoring
from ctloop.components.contract.model_folder import ModelLoadingError, load_model
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.model_uri import load_model_uri
from ctloop.components.contract.profile import feature_schema
from ctloop.components.table_io import DatasetError, read_table
from tests.registered_champion import ChurnChampion, churn_champion


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
    summary = run_scoring(
        str(source),
        load_model_uri(str(champion.folder)),
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
    model = load_model_uri("models:/churn@champion", champion.tracking_uri)
    assert model.version == "1"
    assert model.profile["prediction"]["bin_edges"][:2] == [0.0, 0.05]  # the evaluated profile
    summary = run_scoring(str(source), model, tmp_path / "predictions.parquet")
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
        run_scoring(str(source), load_model_uri(str(champion.folder)), tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == [source]


def test_bad_key_columns_and_unknown_models_are_refused(champion, tmp_path):
    model = load_model_uri(str(champion.folder))
    with pytest.raises(ScoringError, match="score"):
        run_scoring("unused.parquet", model, tmp_path / "out.parquet", key_columns=["score"])
    with pytest.raises(ModelLoadingError, match="not a folder"):
        load_model_uri(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadingError, match="models:/churn@retired"):
        load_model_uri("models:/churn@retired", champion.tracking_uri)
