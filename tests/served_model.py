"""Small Telco churn models in the folder layout the predictor serves, for the serving tests.

Validated, profiled and trained the way the training pipeline does it, so what the tests
serve is what the pipeline produces: `model.json` with `reference_profile.json` beside it.
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import reference_profile
from ctloop.components.data.validation import validate_training_table
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

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
