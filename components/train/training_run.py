"""One training step as an MLflow run: train from the Parquet splits, log everything.

What a person needs to trust a model later is logged here once: parameters, the
per-iteration validation curve, the model with signature and input example, the
reference profile, the dataset hash, tags that lead back to the KFP run, and the layout the
step chose (in memory, external memory or workers; `layout.py`) with its estimate and the time
and peak memory it took, so the estimate can be checked against what happened.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ctloop.components.contract.model_folder import write_model_folder
from ctloop.components.contract.model_input import to_frame
from ctloop.components.contract.profile import ReferenceProfile, feature_schema
from ctloop.components.data.dataset_metadata import SOURCE_LINEAGE_PREFIXES
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import iter_batches
from ctloop.components.train.checkpoints import CheckpointStore, training_fingerprint
from ctloop.components.train.hyperparameters import parse_hyperparameters, resolve_device
from ctloop.components.train.layout import Layout, node_facts, plan_layout, table_facts
from ctloop.components.train.trainer import TrainResult, train_booster


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    model_uri: str
    best_iteration: int
    device: str
    layout: Layout | None = None
    figures: dict[str, float] = field(default_factory=dict)
    """The layout's estimate and what training took (seconds, peak RSS, resumed rounds)."""


def training_tags(profile: ReferenceProfile, run_tags: Mapping[str, str]) -> dict[str, str]:
    """The MLflow run's tags: the task, the target and the dataset (with what its source pinned:
    for DVC data the commit and DVC's content hash, `ctloop.dataset.dvc_*`; for a Feast join the
    feature service and its version, `ctloop.dataset.feature_service*`), and `run_tags` (the
    KFP run's id and name)."""
    dataset = profile.get("dataset", {})
    return {
        "ctloop.task": profile["task"],
        "ctloop.target": profile["target"],
        "ctloop.dataset.uri": str(dataset.get("uri", "")),
        "ctloop.dataset.content_hash": str(dataset.get("content_hash", "")),
        **{
            f"ctloop.dataset.{key}": str(value)
            for key, value in dataset.items()
            if key.startswith(SOURCE_LINEAGE_PREFIXES)
        },
        **run_tags,
    }


def log_trained_model(
    run_id: str,
    result: TrainResult,
    profile: ReferenceProfile,
    validation_path: str,
    metrics: Mapping[str, float] = {},  # noqa: B006 - read only
) -> str:
    """Log what every train step logs once it has its booster, into the open run `run_id`:
    the per-iteration validation curves, the best iteration, the row counts and `metrics`,
    and the model with its profile and an input example (validation rows); return the
    logged model's URI. The one-pod step and the TrainJob step both end here, so a model
    is logged the same way wherever it was trained."""
    mlflow_registry.log_iteration_metrics(run_id, result.evals_result)
    mlflow_registry.log_metrics(
        {
            "best_iteration": result.best_iteration,
            "train_rows": result.train_rows,
            "validation_rows": result.validation_rows,
            **metrics,
        }
    )
    rows = next(iter(iter_batches(validation_path, batch_rows=5)))
    example = to_frame(rows, feature_schema(profile))
    return mlflow_registry.log_model_with_profile(result.booster, profile, example)


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
    checkpoint_uri: str = "",
) -> TrainingOutcome:
    """Train on `train_path`, stop early on `validation_path`, log the run, save the model.

    The booster is written to `model_dir/model.json` with `reference_profile.json` beside
    it (the KFP Model artifact that deployment points KServe at) and logged to MLflow with
    the profile.
    Hyperparameters are parsed before any run is created, so a malformed JSON leaves
    nothing behind in MLflow.

    With `checkpoint_uri`, the booster is checkpointed under
    `<checkpoint_uri>/<KFP run id or "local">/<fingerprint of the inputs>` and a step run again
    with the same inputs (a KFP retry keeps the run id) resumes there; the checkpoints are
    removed once the model is written. Why a prefix of its own: `checkpoints.py`.
    """
    target, task = profile["target"], profile["task"]
    params = parse_hyperparameters(hyperparameters, task)
    resolved_device = resolve_device(device)
    schema = feature_schema(profile)
    layout = plan_layout(
        table_facts(train_path, validation_path, len(schema.features)),
        node_facts(resolved_device),
        resolved_device,
    )
    print(f"ctloop train: layout {layout.choice}: " + "; ".join(layout.reasons), file=sys.stderr)
    store = None
    if checkpoint_uri:
        key = training_fingerprint(train_path, validation_path, params, resolved_device)
        run_key = run_tags.get("kfp.run_id") or "local"
        store = CheckpointStore(f"{checkpoint_uri.rstrip('/')}/{run_key}/{key}")
    with mlflow_registry.training_run(
        tracking_uri,
        experiment,
        run_name=run_tags.get("kfp.run_name") or "ctloop-training",
        tags=training_tags(profile, run_tags),
        params={
            **params,
            "device": resolved_device,
            "features": len(schema.features),
            "layout": layout.choice,
            "layout_reasons": "; ".join(layout.reasons)[:6000],
        },
        artifact_location=artifact_location,
    ) as run:
        started = time.perf_counter()
        result = train_booster(
            train_path,
            validation_path,
            target=target,
            schema=schema,
            params=params,
            device=resolved_device,
            external_memory=layout.external_memory,
            checkpoints=store,
        )
        figures = {
            **layout.figures(),
            "train_seconds": round(time.perf_counter() - started, 3),
            # ru_maxrss is in KiB on Linux
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "resumed_rounds": result.resumed_rounds,
        }
        model_uri = log_trained_model(run.info.run_id, result, profile, validation_path, figures)
    write_model_folder(result.booster, profile, model_dir)
    if store:
        store.clear()
    return TrainingOutcome(
        run.info.run_id, model_uri, result.best_iteration, resolved_device, layout, figures
    )
