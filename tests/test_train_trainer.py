import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from ctloop.components.contract.model_input import (
    FeatureSchema,
    ModelInputError,
    predict_scores,
    to_frame,
)
from ctloop.components.contract.profile import feature_schema
from ctloop.components.evaluate.metrics import roc_auc
from ctloop.components.train import trainer
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import TrainingDataError, iter_frames, train_booster

PROFILE = {
    "target": "churn",
    "task": "binary",
    "feature_order": ["tenure", "contract", "charges"],
    "features": {
        "tenure": {"kind": "numeric"},
        "contract": {
            "kind": "categorical",
            "categories": {"month": 0.5, "one_year": 0.3, "two_year": 0.2},
        },
        "charges": {"kind": "numeric"},
    },
}
SCHEMA = feature_schema(PROFILE)
FAST = '{"num_boost_round": 60, "early_stopping_rounds": 10, "max_depth": 3, "eta": 0.3}'


def _write_split(path, rows, seed, *, contracts=("month", "one_year", "two_year"), noise=False):
    """Churn driven by tenure and contract, with ~10% missing values in every feature."""
    rng = np.random.default_rng(seed)
    tenure = rng.normal(size=rows)
    contract = rng.choice(list(contracts), size=rows).astype(object)
    charges = rng.integers(20, 120, size=rows).astype("float64")
    logit = -2.0 * tenure + np.where(contract == "month", 1.5, -1.5)
    if noise:
        logit = np.zeros(rows)
    churn = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    tenure[rng.random(rows) < 0.1] = np.nan
    contract[rng.random(rows) < 0.1] = None
    charges_arrow = pa.array(charges, mask=rng.random(rows) < 0.1)
    table = pa.table(
        {
            "charges": charges_arrow,
            "contract": pa.array(contract, type=pa.string()),
            "tenure": tenure,
            "churn": churn,
            "customer_id": np.arange(rows),
        }
    )
    pq.write_table(table, path, row_group_size=max(rows // 4, 1))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    train = _write_split(folder / "train.parquet", 4000, seed=1)
    validation = _write_split(
        folder / "validation.parquet", 1000, seed=2, contracts=("month", "one_year", "lifetime")
    )
    test = _write_split(folder / "test.parquet", 1000, seed=3)
    params = parse_hyperparameters(FAST, "binary")
    result = train_booster(
        train, validation, target="churn", schema=SCHEMA, params=params, batch_rows=700
    )
    return result, test


def test_schema_keeps_profile_order_and_sorted_categories():
    assert SCHEMA.features == ["tenure", "contract", "charges"]
    assert SCHEMA.categories == {"contract": ["month", "one_year", "two_year"]}
    assert SCHEMA.dtype("tenure") is None
    assert list(SCHEMA.dtype("contract").categories) == ["month", "one_year", "two_year"]


def test_schema_rejects_feature_missing_from_profile_features():
    profile = {"feature_order": ["tenure", "age"], "features": {"tenure": {"kind": "numeric"}}}
    with pytest.raises(ModelInputError, match="feature 'age' is in the profile's 'feature_order'"):
        feature_schema(profile)


def test_schema_rejects_unknown_feature_kind():
    profile = {"feature_order": ["when"], "features": {"when": {"kind": "datetime"}}}
    with pytest.raises(ModelInputError, match="feature 'when' has kind 'datetime'"):
        feature_schema(profile)


def test_frame_has_float32_numerics_and_profile_categories():
    table = pa.table(
        {
            "extra": ["x", "y", "z", "w"],
            "charges": pa.array([1, None, 3, 4], type=pa.int64()),
            "contract": ["two_year", None, "lifetime", "month"],
            "tenure": [0.5, float("nan"), 2.0, None],
        }
    )
    frame = to_frame(table, SCHEMA)
    assert list(frame.columns) == ["tenure", "contract", "charges"]
    assert frame["tenure"].dtype == np.float32
    assert frame["charges"].dtype == np.float32
    np.testing.assert_array_equal(frame["charges"].isna(), [False, True, False, False])
    np.testing.assert_array_equal(frame["tenure"].isna(), [False, True, False, True])
    assert list(frame["contract"].cat.categories) == ["month", "one_year", "two_year"]
    assert frame["contract"].tolist()[0] == "two_year"
    assert frame["contract"].tolist()[3] == "month"
    np.testing.assert_array_equal(frame["contract"].isna(), [False, True, True, False])


def test_frame_rejects_missing_feature_column():
    table = pa.table({"tenure": [1.0], "charges": [2.0]})
    with pytest.raises(ModelInputError, match=r"missing feature column\(s\) \['contract'\]"):
        to_frame(table, SCHEMA)


def test_frame_rejects_text_in_numeric_feature():
    table = pa.table({"tenure": ["long"], "contract": ["month"], "charges": [2.0]})
    with pytest.raises(ModelInputError, match="numeric feature 'tenure' has type string"):
        to_frame(table, SCHEMA)


def test_iter_frames_streams_batches_with_extra_columns(tmp_path):
    path = _write_split(tmp_path / "s.parquet", 1000, seed=4)
    batches = list(iter_frames(path, SCHEMA, ["churn"], batch_rows=300))
    assert [len(frame) for frame, _ in batches] == [300, 300, 300, 100]
    assert all(extra.schema.names == ["churn"] for _, extra in batches)
    assert sum(extra.num_rows for _, extra in batches) == 1000


def test_iter_frames_names_file_and_missing_column(tmp_path):
    path = _write_split(tmp_path / "s.parquet", 10, seed=4)
    with pytest.raises(TrainingDataError, match=r"s.parquet: missing column\(s\) \['label'\]"):
        next(iter_frames(path, SCHEMA, ["label"]))


def test_trained_model_learns_planted_signal(trained):
    result, test = trained
    table = pq.read_table(test)
    scores = predict_scores(result.booster, to_frame(table, SCHEMA))
    assert scores.shape == (1000,)
    assert ((scores > 0) & (scores < 1)).all()
    assert roc_auc(table.column("churn").to_numpy(), scores) > 0.8
    assert result.train_rows == 4000
    assert result.validation_rows == 1000
    assert set(result.evals_result) == {"auc", "logloss"}
    assert len(result.evals_result["auc"]) == result.booster.num_boosted_rounds()


def test_unseen_categories_score_as_missing(trained):
    result, _ = trained
    unseen = pa.table({"tenure": [0.0, 0.0], "contract": ["lifetime", None], "charges": [50, 50]})
    scores = predict_scores(result.booster, to_frame(unseen, SCHEMA))
    assert scores[0] == pytest.approx(scores[1])


def test_early_stopping_on_noise_stops_before_the_round_limit(tmp_path):
    train = _write_split(tmp_path / "train.parquet", 2000, seed=5, noise=True)
    validation = _write_split(tmp_path / "validation.parquet", 1000, seed=6, noise=True)
    params = parse_hyperparameters(
        '{"num_boost_round": 200, "early_stopping_rounds": 5, "max_depth": 4}', "binary"
    )
    result = train_booster(train, validation, target="churn", schema=SCHEMA, params=params)
    assert result.early_stopped
    assert result.best_iteration < 200
    assert result.booster.num_boosted_rounds() == result.best_iteration + 6


def test_predictions_use_the_best_iteration_also_after_reload(trained, tmp_path):
    result, test = trained
    frame = to_frame(pq.read_table(test), SCHEMA)
    best = result.booster.inplace_predict(frame, iteration_range=(0, result.best_iteration + 1))
    np.testing.assert_allclose(predict_scores(result.booster, frame), best, rtol=1e-6)
    result.booster.save_model(tmp_path / "model.json")
    reloaded = xgb.Booster(model_file=tmp_path / "model.json")
    np.testing.assert_allclose(predict_scores(reloaded, frame), best, rtol=1e-6)


def test_callbacks_see_every_iteration(tmp_path):
    class CountIterations(xgb.callback.TrainingCallback):
        def __init__(self):
            self.seen = []

        def after_iteration(self, model, epoch, evals_log):
            self.seen.append(evals_log["validation"]["logloss"][-1])
            return False

    train = _write_split(tmp_path / "train.parquet", 500, seed=7)
    validation = _write_split(tmp_path / "validation.parquet", 200, seed=8)
    params = parse_hyperparameters(
        '{"num_boost_round": 7, "early_stopping_rounds": null}', "binary"
    )
    counter = CountIterations()
    result = train_booster(
        train, validation, target="churn", schema=SCHEMA, params=params, callbacks=[counter]
    )
    assert not result.early_stopped
    assert result.best_iteration == 6
    assert counter.seen == result.evals_result["logloss"]


def test_missing_labels_are_rejected_with_file_and_column(tmp_path):
    table = pa.table(
        {
            "tenure": [1.0, 2.0],
            "contract": ["month", "month"],
            "charges": [1.0, 2.0],
            "churn": pa.array([1, None], type=pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    params = parse_hyperparameters('{"num_boost_round": 2}', "binary")
    with pytest.raises(TrainingDataError, match="bad.parquet: label column 'churn' has missing"):
        train_booster(
            tmp_path / "bad.parquet",
            tmp_path / "bad.parquet",
            target="churn",
            schema=SCHEMA,
            params=params,
        )


def test_empty_training_file_is_rejected(tmp_path):
    schema = FeatureSchema(features=["tenure"], categories={})
    empty = pa.table({"tenure": pa.array([], pa.float64()), "churn": pa.array([], pa.int64())})
    pq.write_table(empty, tmp_path / "empty.parquet")
    with pytest.raises(TrainingDataError, match="empty.parquet: has no rows"):
        train_booster(
            tmp_path / "empty.parquet",
            tmp_path / "empty.parquet",
            target="churn",
            schema=schema,
            params=parse_hyperparameters("{}", "binary"),
        )


def test_frame_from_pandas_written_parquet_matches_schema(tmp_path):
    frame = pd.DataFrame(
        {"tenure": [1.5], "contract": pd.Categorical(["one_year"]), "charges": [3]}
    )
    frame.to_parquet(tmp_path / "p.parquet")
    [(model_input, _)] = list(iter_frames(tmp_path / "p.parquet", SCHEMA))
    assert model_input["contract"].tolist() == ["one_year"]
    assert model_input["charges"].tolist() == [3.0]


class _CacheFolderWatcher(xgb.callback.TrainingCallback):
    """Records which files exist under the temp root while training runs."""

    def __init__(self, root):
        self.root = root
        self.seen: set[str] = set()

    def after_iteration(self, model, epoch, evals_log):
        self.seen.update(p.name for p in self.root.rglob("*") if p.is_file())
        return False


@pytest.fixture()
def temp_root(tmp_path, monkeypatch):
    root = tmp_path / "tmp-root"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _test_auc(result, test):
    table = pq.read_table(test)
    scores = predict_scores(result.booster, to_frame(table, SCHEMA))
    return roc_auc(table.column("churn").to_numpy(), scores)


def test_external_memory_trains_an_equivalent_model_and_removes_its_cache(trained, temp_root):
    in_memory, test = trained
    folder = test.parent
    watcher = _CacheFolderWatcher(temp_root)
    on_disk = train_booster(
        folder / "train.parquet",
        folder / "validation.parquet",
        target="churn",
        schema=SCHEMA,
        params=parse_hyperparameters(FAST, "binary"),
        batch_rows=700,
        callbacks=[watcher],
        external_memory=True,
    )
    assert any(name.endswith(".page") for name in watcher.seen)
    assert list(temp_root.iterdir()) == []
    assert abs(_test_auc(on_disk, test) - _test_auc(in_memory, test)) < 0.01
    assert on_disk.train_rows == 4000
    assert set(on_disk.evals_result) == {"auc", "logloss"}


def test_auto_external_memory_starts_at_the_row_threshold(tmp_path, temp_root, monkeypatch):
    train = _write_split(tmp_path / "train.parquet", 600, seed=9)
    validation = _write_split(tmp_path / "validation.parquet", 200, seed=10)
    params = parse_hyperparameters('{"num_boost_round": 3}', "binary")
    seen = {}
    for threshold in (601, 600):
        monkeypatch.setattr(trainer, "EXTERNAL_MEMORY_MIN_ROWS", threshold)
        watcher = _CacheFolderWatcher(temp_root)
        train_booster(
            train, validation, target="churn", schema=SCHEMA, params=params, callbacks=[watcher]
        )
        seen[threshold] = watcher.seen
    assert seen[601] == set()
    assert any(name.endswith(".page") for name in seen[600])
    assert list(temp_root.iterdir()) == []


def test_external_memory_on_gpu_is_rejected_with_the_reason(tmp_path):
    train = _write_split(tmp_path / "train.parquet", 50, seed=11)
    params = parse_hyperparameters('{"num_boost_round": 2}', "binary")
    with pytest.raises(TrainingDataError, match="external_memory=True needs device 'cpu'"):
        train_booster(
            train,
            train,
            target="churn",
            schema=SCHEMA,
            params=params,
            device="cuda",
            external_memory=True,
        )


def test_external_memory_rejects_values_other_than_bool_or_auto(tmp_path):
    train = _write_split(tmp_path / "train.parquet", 50, seed=12)
    params = parse_hyperparameters('{"num_boost_round": 2}', "binary")
    with pytest.raises(TrainingDataError, match="external_memory = 'yes' must be True, False"):
        train_booster(
            train, train, target="churn", schema=SCHEMA, params=params, external_memory="yes"
        )
