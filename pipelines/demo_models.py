"""Models the demo registers itself: a challenger broken on purpose, for it to roll back.

`register_model` trains, logs and registers a table's model the way the training pipeline's
steps do, through the same library functions. The broken challenger is the demo's history
with one more column, `support_calls`, a feature the callers do not send yet: the predictor
then refuses every production request it gets with a 400 naming the missing feature, which is
what shipping a model before its callers' schema change does. Nothing in it is faked; only
the quality gate is not asked, since the point is a model that would pass offline evaluation
and still fail in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctloop.components.data.profile import reference_profile
from ctloop.components.data.split import split_table
from ctloop.components.data.validation import validate_training_table
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import read_table
from ctloop.components.train.training_run import run_training

EXTRA_FEATURE = "support_calls"
HYPERPARAMETERS = '{"num_boost_round": 40, "max_depth": 3, "eta": 0.2}'
REASON = f"trained with {EXTRA_FEATURE}, a feature callers do not send"


@dataclass(frozen=True)
class Registry:
    """Where models are registered: MLflow's store, the experiment of the training runs (and
    its artifact root, for a new experiment), and the registered model's name."""

    tracking_uri: str
    experiment: str
    artifact_location: str
    model: str


def register_broken_challenger(
    history: Path, target: str, folder: Path, registry: Registry
) -> tuple[str, Path]:
    """Train the broken model on `history` into `folder`/model and register it beside the
    champion (alias `challenger`); returns (version, model folder)."""
    table = read_table(str(history))
    calls = np.random.default_rng(7).integers(0, 5, table.num_rows)
    table = table.append_column(EXTRA_FEATURE, pa.array(calls, pa.float64()))
    return register_model(table, target, folder, registry, HYPERPARAMETERS, {"ctloop.demo": REASON})


def register_model(
    table: pa.Table,
    target: str,
    folder: Path,
    registry: Registry,
    hyperparameters: str,
    tags: dict[str, str],
) -> tuple[str, Path]:
    """Validate, profile, split, train (an MLflow run) and register `table`'s model, as the
    training pipeline's steps do, into `folder`/model; returns (version, model folder). The
    first version becomes the champion, later ones the challenger."""
    validated = validate_training_table(table, target)
    profile = reference_profile(
        validated.table,
        target,
        "binary",
        validated.features,
        validated.categorical_features,
        validated.label_mapping,
    )
    train, validation, _test = split_table(validated.table, target)
    splits = folder / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    pq.write_table(train, splits / "train.parquet")
    pq.write_table(validation, splits / "validation.parquet")
    model_dir = folder / "model"
    outcome = run_training(
        train_path=str(splits / "train.parquet"),
        validation_path=str(splits / "validation.parquet"),
        profile=profile,
        hyperparameters=hyperparameters,
        device="cpu",
        tracking_uri=registry.tracking_uri,
        experiment=registry.experiment,
        model_dir=str(model_dir),
        artifact_location=registry.artifact_location,
        run_tags={"kfp.run_name": folder.name},
    )
    version, _alias = mlflow_registry.register_version(
        registry.tracking_uri,
        registry.model,
        outcome.run_id,
        outcome.model_uri,
        tags,
        compared_champion=mlflow_registry.version_with_alias(registry.tracking_uri, registry.model),
    )
    return version, model_dir
