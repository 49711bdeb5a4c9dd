"""One training step as an MLflow run: train from the Parquet splits, log everything.

What a person needs to trust a model later is logged here once: parameters, the
per-iteration validation curve, the model with signature and input example, the
reference profile, the dataset hash, and tags that lead back to the KFP run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ctloop.components.contract.model_folder import write_model_folder
from ctloop.components.contract.model_input import to_frame
from ctloop.components.contract.profile import ReferenceProfile, feature_schema
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import iter_batches
from ctloop.components.train.hyperparameters import parse_hyperparameters, resolve_device
from ctloop.components.train.trainer import train_booster


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    model_uri: str
    best_iteration: int
    device: str


def run_training(
    *,
    train_path: str,
    validation_path: str,
    profile: ReferenceProfile,
    hyperparameters: str,
    device: str,
    tracking_uri: str,
    experiment: str,
    model_dir: str,
    artifact_location: str = "",
    run_tags: Mapping[str, str] = {},  # noqa: B006 - read only
) -> TrainingOutcome:
    """Train on `train_path`, stop early on `validation_path`, log the run, save the model.

    The booster is written to `model_dir/model.json` with `reference_profile.json` beside
    it (the KFP Model artifact that deployment points KServe at) and logged to MLflow with
    the profile.
    Hyperparameters are parsed before any run is created, so a malformed JSON leaves
    nothing behind in MLflow.
    """
    target, task = profile["target"], profile["task"]
    params = parse_hyperparameters(hyperparameters, task)
    resolved_device = resolve_device(device)
    schema = feature_schema(profile)
    dataset = profile.get("dataset", {})
    tags = {
        "ctloop.task": task,
        "ctloop.target": target,
        "ctloop.dataset.uri": str(dataset.get("uri", "")),
        "ctloop.dataset.content_hash": str(dataset.get("content_hash", "")),
        **run_tags,
    }
    with mlflow_registry.training_run(
        tracking_uri,
        experiment,
        run_name=run_tags.get("kfp.run_name") or "ctloop-training",
        tags=tags,
        params={**params, "device": resolved_device, "features": len(schema.features)},
        artifact_location=artifact_location,
    ) as run:
        result = train_booster(
            train_path,
            validation_path,
            target=target,
            schema=schema,
            params=params,
            device=resolved_device,
        )
        mlflow_registry.log_iteration_metrics(run.info.run_id, result.evals_result)
        mlflow_registry.log_metrics(
            {
                "best_iteration": result.best_iteration,
                "train_rows": result.train_rows,
                "validation_rows": result.validation_rows,
            }
        )
        example = to_frame(next(iter(iter_batches(validation_path, batch_rows=5))), schema)
        model_uri = mlflow_registry.log_model_with_profile(result.booster, profile, example)
    write_model_folder(result.booster, profile, model_dir)
    return TrainingOutcome(run.info.run_id, model_uri, result.best_iteration, resolved_device)
