"""A churn model registered as `churn@champion`, the way the training loop leaves one.

`churn_champion` trains on half of the Telco churn rows the way the training step does
(`run_training`, SQLite MLflow), logs the scored profile the way evaluation does, and registers
the model; batch scoring, drift and the `ctloop drift` tests score the other half with it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.contract.model_folder import load_model
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import profile_table, with_prediction_distribution
from ctloop.components.evaluate.metrics import classification_metrics
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import read_table, write_parquet
from ctloop.components.train.training_run import run_training

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
    outcome = run_training(
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
    mlflow_registry.register_version(
        tracking_uri, "churn", outcome.run_id, outcome.model_uri, {}, compared_champion=None
    )
    return ChurnChampion(root / "model", tracking_uri, profile, reference, current)
