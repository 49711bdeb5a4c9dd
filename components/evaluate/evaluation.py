"""Evaluate a candidate, and the current champion on the very same rows.

Comparing on the same test rows is what makes the gate's champion comparison fair: the
champion is scored with its own reference profile (its feature order and categories),
so a candidate trained on a different feature set is still compared like for like.

When the gate's policy names slice columns, both models are also judged per group of those
columns (`ctloop.components.evaluate.slices`), the champion's rows cut at the candidate's
cut points. Every evaluation counts the test rows whose category the candidate never saw in
training (`unseen_categories`): the model scores them as missing, a limitation a reader of
its figures should know of.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
from ctloop.components.evaluate.slices import SliceError, recorded_bins, slice_metrics
from ctloop.components.gate.policy import SlicePolicy, parse_gate_policy
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import read_table

UNSEEN_EXAMPLES = 10
"""How many of a feature's unseen categories the evaluation names."""


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
    gate_policy: str = "",
) -> tuple[dict, dict]:
    """Score the candidate (and the champion, when one holds the alias) on the test split.

    Returns (evaluation, scored_profile): the evaluation holds candidate and champion
    metrics, the champion's version (None without one; registration checks that it still
    holds the alias), the scoring time of both (timed interleaved, `interleaved_latency`),
    ROC points and the confusion matrix, the per-slice figures the gate policy asks for
    (`evaluation_slices`; None when it names no slice column) and the unseen categories; the
    scored profile is the reference profile plus the candidate's prediction distribution on
    the test rows and, for a binary model, its calibration on the test labels (what
    estimating its quality on an unlabelled window needs).

    Raises:
        GatePolicyError: `gate_policy` is not a valid gate policy.
        SliceError: a slice column is not in the test table (named, with the table's columns).
    """
    task, target = profile["task"], profile["target"]
    slicing = parse_gate_policy(gate_policy, task).slices
    table = read_table(test_path)
    slice_rows = _slice_rows(table, slicing)
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
        "unseen_categories": unseen_categories(table, profile),
    }
    champion_scores = None
    scorers = {"candidate": partial(predict_scores, booster, latency_batch(frame))}
    champion = mlflow_registry.model_by_alias(tracking_uri, registered_model_name)
    if champion is not None:
        # Scored with its own profile (feature order, categories), on the same rows.
        champion_booster = mlflow_registry.load_booster(champion.model_uri)
        champion_frame = to_frame(table, feature_schema(champion.profile))
        champion_scores = predict_scores(champion_booster, champion_frame)
        evaluation["champion"] = _metrics(task, labels, champion_scores)
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
    evaluation["slices"] = None
    if slicing is not None:
        evaluation["slices"] = evaluation_slices(
            slice_rows, labels, scores, champion_scores, slicing
        )
    return evaluation, with_prediction_distribution(profile, scores, labels)


def _label_names(profile: ReferenceProfile) -> list[str] | None:
    """Original label names ordered by their 0/1 code, when the labels were strings."""
    mapping = profile.get("label_mapping")
    if not mapping:
        return None
    return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]


def _slice_rows(table: pa.Table, slicing: SlicePolicy | None) -> Any:
    """The slice columns of the test rows, checked before anything is scored."""
    if slicing is None:
        return None
    for column in slicing.columns:
        if column not in table.column_names:
            raise SliceError(
                f"slice column {column!r} of the gate policy is not in the test table; "
                f"its columns: {', '.join(table.column_names)}"
            )
    return table.select(list(slicing.columns)).to_pandas()


def evaluation_slices(
    rows: Any,
    labels: Any,
    candidate_scores: Any,
    champion_scores: Any | None,
    slicing: SlicePolicy,
) -> dict[str, Any]:
    """The evaluation's "slices": the section as parsed, and each model's figures per group.

    The champion's rows are cut at the candidate's recorded cut points, so a group means the
    same rows for both and the gate can compare them group by group.

    Args:
        rows: The test rows' slice columns (a pandas frame).
        labels: Binary labels, one per row.
        candidate_scores, champion_scores: Each model's probabilities (the champion's None
            when there is none).
        slicing: The gate policy's `slices` section.
    """
    cut = {"categorical": slicing.categorical, "min_rows": slicing.min_rows}
    candidate = slice_metrics(rows, labels, candidate_scores, numeric=slicing.numeric, **cut)
    champion = None
    if champion_scores is not None:
        bins = recorded_bins(candidate)
        champion = slice_metrics(rows, labels, champion_scores, numeric=bins, **cut)
    return {"policy": slicing.to_json(), "candidate": candidate, "champion": champion}


def unseen_categories(table: pa.Table, profile: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per categorical feature, the test rows whose value training never saw.

    Returns {feature: {"rows": n, "values": up to 10 of those values, most frequent first}},
    only for features with such rows: the model reads them as missing values.
    """
    unseen = {}
    for name, entry in profile["features"].items():
        if entry.get("kind") != "categorical" or name not in table.column_names:
            continue
        known = set(entry.get("categories", {}))
        counts = pc.value_counts(pc.cast(table.column(name), pa.string()))
        values = counts.field("values").to_pylist()
        new = [
            (count, value)
            for value, count in zip(values, counts.field("counts").to_pylist(), strict=True)
            if value is not None and value not in known
        ]
        if new:
            new.sort(key=lambda item: (-item[0], item[1]))
            unseen[name] = {
                "rows": sum(count for count, _ in new),
                "values": [value for _, value in new[:UNSEEN_EXAMPLES]],
            }
    return unseen
