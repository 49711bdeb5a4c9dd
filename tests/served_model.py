"""Small Telco churn models in the folder layout the predictor serves, for the serving tests.

Validated, profiled and trained the way the training pipeline does it, so what the tests
serve is what the pipeline produces: `model.json` with `reference_profile.json` beside it.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import reference_profile
from ctloop.components.data.validation import validate_training_table
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

NUMERIC_FEATURES = ["female", "senior_citizen", "tenure", "monthly_charges", "total_charges"]
FAST = '{"num_boost_round": 150, "early_stopping_rounds": 10, "max_depth": 4, "eta": 0.2}'
TRAIN_ROWS = 5600


def churn_profile(table: pa.Table, drop_columns=()) -> tuple:
    """(validation result, reference profile) of a Telco churn table."""
    validated = validate_training_table(table, "churn", drop_columns=list(drop_columns))
    profile = reference_profile(
        validated.table,
        "churn",
        "binary",
        validated.features,
        validated.categorical_features,
        validated.label_mapping,
    )
    return validated, profile


def train_model_folder(folder: Path, table: pa.Table, drop_columns=()) -> tuple:
    """Train on the first TRAIN_ROWS rows (early stopping on the rest) and save the model and
    its profile into `folder`; returns (profile, feature table)."""
    validated, profile = churn_profile(table, drop_columns)
    folder.mkdir(parents=True, exist_ok=True)
    splits = folder / "splits"
    splits.mkdir()
    pq.write_table(validated.table.slice(0, TRAIN_ROWS), splits / "train.parquet")
    pq.write_table(validated.table.slice(TRAIN_ROWS), splits / "validation.parquet")
    result = train_booster(
        splits / "train.parquet",
        splits / "validation.parquet",
        target="churn",
        schema=feature_schema(profile),
        params=parse_hyperparameters(FAST, "binary"),
    )
    for split in splits.iterdir():
        split.unlink()
    splits.rmdir()
    result.booster.save_model(folder / "model.json")
    (folder / "reference_profile.json").write_text(json.dumps(profile))
    return profile, validated.table.select(validated.features)


def save_positional_booster(path: Path, table: pa.Table) -> tuple[xgb.Booster, np.ndarray]:
    """Train a small booster on the Telco table's NUMERIC_FEATURES as a bare float matrix, so
    it records no feature names (as KServe's xgbserver examples train theirs), and save it to
    `path` alone (its suffix picks the format); returns the booster and the matrix."""
    matrix = np.column_stack(
        [table.column(name).to_numpy(zero_copy_only=False) for name in NUMERIC_FEATURES]
    ).astype(np.float32)
    label = np.asarray(table.column("churn").to_pylist()) == "Yes"
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(matrix, label=label), num_boost_round=20)
    assert booster.feature_names is None
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(path)
    return booster, matrix
