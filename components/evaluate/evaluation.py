"""Evaluate a candidate, and the current champion on the very same rows.

Comparing on the same test rows is what makes the gate's champion comparison fair: the
champion is scored with its own reference profile (its feature order and categories),
so a candidate trained on a different feature set is still compared like for like.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ctloop.components.contract.model_folder import folder_booster
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import ReferenceProfile, feature_schema
from ctloop.components.data.profile import with_prediction_distribution
from ctloop.components.evaluate.latency import (
    LATENCY_BATCH_ROWS,
    LATENCY_ROUNDS,
    interleaved_latency,
    latency_batch,
)
from ctloop.components.evaluate.metrics import (
    classification_metrics,
    confusion_matrix,
    regression_metrics,
    roc_curve,
)
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import read_table


def _metrics(task: str, labels: np.ndarray, scores: np.ndarray) -> dict:
    if task == "binary":
        return classification_metrics(labels, scores)
    return regression_metrics(labels, scores)


def run_evaluation(
    *,
    test_path: str,
    model_dir: str,
    profile: ReferenceProfile,
    tracking_uri: str,
    registered_model_name: str,
) -> tuple[dict, dict]:
    """Score the candidate (and the champion, when one holds the alias) on the test split.

    Returns (evaluation, scored_profile): the evaluation holds candidate and champion
    metrics, the champion's version (None without one; registration checks that it still
    holds the alias), the scoring time of both (timed interleaved, `interleaved_latency`),
    ROC points and the confusion matrix; the scored profile is the reference profile plus the
    candidate's prediction distribution on the test rows.
    """
    task, target = profile["task"], profile["target"]
    table = read_table(test_path)
    labels = table.column(target).to_numpy(zero_copy_only=False)
    booster = folder_booster(model_dir)
    frame = to_frame(table, feature_schema(profile))
    scores = predict_scores(booster, frame)
    evaluation: dict = {
        "task": task,
        "rows": table.num_rows,
        "candidate": _metrics(task, labels, scores),
        "champion": None,
        "champion_version": None,
    }
    scorers = {"candidate": partial(predict_scores, booster, latency_batch(frame))}
    champion = mlflow_registry.model_by_alias(tracking_uri, registered_model_name)
    if champion is not None:
        # Scored with its own profile (feature order, categories), on the same rows.
        champion_booster = mlflow_registry.load_booster(champion.model_uri)
        champion_frame = to_frame(table, feature_schema(champion.profile))
        evaluation["champion"] = _metrics(
            task, labels, predict_scores(champion_booster, champion_frame)
        )
        evaluation["champion_version"] = champion.version
        scorers["champion"] = partial(
            predict_scores, champion_booster, latency_batch(champion_frame)
        )
    timings = interleaved_latency(scorers)
    evaluation["latency"] = {
        "batch_rows": LATENCY_BATCH_ROWS,
        "rounds": LATENCY_ROUNDS,
        "candidate": timings["candidate"],
        "champion": timings.get("champion"),
    }
    if task == "binary":
        label_names = _label_names(profile)
        evaluation["roc_curve"] = roc_curve(labels, scores)
        categories, matrix = confusion_matrix(labels, scores, 0.5, label_names)
        evaluation["confusion_matrix"] = {"categories": categories, "matrix": matrix}
    return evaluation, with_prediction_distribution(profile, scores)


def _label_names(profile: ReferenceProfile) -> list[str] | None:
    """Original label names ordered by their 0/1 code, when the labels were strings."""
    mapping = profile.get("label_mapping")
    if not mapping:
        return None
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
