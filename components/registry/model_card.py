"""A model card for every registered version: what it is for, what it learned from, how well it
does overall and per group, why the gate let it through, where not to trust it, what made it.

The card is assembled from what the pipeline already wrote, never recomputed: the evaluation
(metrics overall and per slice, unseen categories), the gate's decision record (outcome,
reasons, policy), the reference profile (the training data's shape) and the version's registry
tags (its lineage). It is kept twice: as JSON on the version's MLflow run
(`model_card/model_card.json`, the version's `ctloop.model_card` tag pointing at it) for tools,
and as Markdown for the Kubeflow UI (`card_markdown`, which draws what this module assembles).

Label balance is the test split's (from the evaluation's confusion matrix): the reference
profile records features, not the label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctloop.components.registry import mlflow_registry
from ctloop.components.registry.card_markdown import card_markdown

CARD_SCHEMA = "ctloop.model_card/1"
SLICE_CHECK_KINDS = ("slice", "slice_regression", "fairness")
"""The gate's check kinds that judge groups; their failures are the card's fairness findings."""
LINEAGE_KEYS = ("ctloop.dataset.content_hash", "kfp.run_id", "kfp.run_name")
"""Version tags shown with the `ctloop.lineage.*` ones."""


class ModelCardError(ValueError):
    """An input the card cannot be written from; names the input and what is wrong."""


def model_card(
    *,
    registered_model: str,
    model_version: str,
    run_id: str,
    intended_use: str,
    evaluation: Mapping[str, Any],
    gate_record: Mapping[str, Any],
    reference_profile: Mapping[str, Any],
    version_tags: Mapping[str, str],
) -> dict[str, Any]:
    """The card as a JSON-able dict (schema `ctloop.model_card/1`).

    Raises:
        ModelCardError: the evaluation has no candidate metrics, the record is not a gate
            decision, or the profile has no features.
    """
    _check_inputs(evaluation, gate_record, reference_profile)
    if not run_id:
        raise ModelCardError("run_id: empty; the card names the MLflow run of the version")
    slices = evaluation.get("slices") or None
    columns = list(slices.get("candidate") or []) if slices else []
    return {
        "schema": CARD_SCHEMA,
        "model": {"registered_model": registered_model, "version": model_version, "run_id": run_id},
        "intended_use": intended_use,
        "training_data": _training_data(reference_profile, evaluation),
        "metrics": {
            "test_rows": evaluation.get("rows"),
            "candidate": dict(evaluation["candidate"]),
            "champion": evaluation.get("champion"),
            "champion_version": evaluation.get("champion_version"),
        },
        "slices": None if slices is None else {"min_rows": _min_rows(slices), "columns": columns},
        "fairness": {
            "gaps": {column["column"]: column.get("gaps") or {} for column in columns},
            "gate_failures": [
                failure
                for failure in gate_record["outcome"].get("failures", [])
                if failure.split(" ", 1)[0] in SLICE_CHECK_KINDS
            ],
        },
        "gate": {
            "outcome": gate_record["outcome"],
            "reasons": list(gate_record.get("reasons", [])),
            "policy": gate_record.get("policy", ""),
            "record_id": gate_record.get("id"),
            "decided_at": gate_record.get("time"),
        },
        "limitations": {
            "too_small_slices": [
                {"column": column["column"], "group": group["group"], "rows": group["rows"]}
                for column in columns
                for group in column["slices"]
                if group.get("too_small")
            ],
            "unseen_categories": dict(evaluation.get("unseen_categories") or {}),
        },
        "lineage": {
            key: value
            for key, value in sorted(version_tags.items())
            if key.startswith(mlflow_registry.LINEAGE_TAG) or key in LINEAGE_KEYS
        },
    }


def _check_inputs(evaluation, gate_record, reference_profile) -> None:
    if not isinstance(evaluation, Mapping) or not isinstance(evaluation.get("candidate"), Mapping):
        raise ModelCardError("evaluation: no 'candidate' metrics object (use the evaluate step's)")
    if not isinstance(gate_record, Mapping) or gate_record.get("kind") != "gate":
        kind = gate_record.get("kind") if isinstance(gate_record, Mapping) else None
        raise ModelCardError(
            f"gate_record: expected the quality gate's decision record (kind 'gate'), got "
            f"kind {kind!r}"
        )
    if not isinstance(gate_record.get("outcome"), Mapping):
        raise ModelCardError("gate_record: no 'outcome' object")
    if not isinstance(reference_profile, Mapping) or not reference_profile.get("features"):
        raise ModelCardError("reference_profile: no 'features' (use the validate step's profile)")
    _check_shapes(evaluation, gate_record, reference_profile)


def _check_shapes(evaluation, gate_record, reference_profile) -> None:
    """What the card reads beyond the essentials, each of the shape its step writes: a file of
    another step (or hand-edited) is named, not an AttributeError halfway through the card."""
    slices = evaluation.get("slices")
    _expect(slices, Mapping, "evaluation: 'slices' is not a JSON object")
    if slices and not _all(slices.get("candidate") or [], Mapping):
        raise ModelCardError("evaluation: 'slices.candidate' is not a JSON array of column objects")
    matrix = evaluation.get("confusion_matrix")
    _expect(matrix, Mapping, "evaluation: 'confusion_matrix' is not a JSON object")
    rows = (matrix or {}).get("matrix") or []
    if not (_all(rows, list) and all(_all(row, int | float) for row in rows)):
        raise ModelCardError("evaluation: 'confusion_matrix.matrix' is not rows of counts")
    unseen = evaluation.get("unseen_categories")
    if unseen is not None and not (isinstance(unseen, Mapping) and _all(unseen.values(), Mapping)):
        raise ModelCardError("evaluation: 'unseen_categories' is not a JSON object of features")
    failures = gate_record["outcome"].get("failures", [])
    if not _all(failures, str):
        raise ModelCardError("gate_record: 'outcome.failures' is not a JSON array of strings")
    if not _all(gate_record.get("reasons", []), str):
        raise ModelCardError("gate_record: 'reasons' is not a JSON array of strings")
    features = reference_profile["features"]
    _expect(features, Mapping, "reference_profile: 'features' is not a JSON object")
    for name, feature in features.items():
        _expect(feature, Mapping, f"reference_profile: feature {name!r} is not a JSON object")


def _all(values: Any, kind: Any) -> bool:
    """`values` is a JSON array (or dict values) whose every item is of `kind`."""
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__iter__"):
        return False
    return all(isinstance(value, kind) and not isinstance(value, bool) for value in values)


def _expect(value: Any, kind: Any, message: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise ModelCardError(message)


def _training_data(profile: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    features = profile["features"]
    dataset = profile.get("dataset") or {}
    return {
        "uri": dataset.get("uri"),
        "content_hash": dataset.get("content_hash"),
        "target": profile.get("target"),
        "task": profile.get("task"),
        "rows": profile.get("row_count"),
        "features": len(features),
        "categorical": sorted(n for n, f in features.items() if f.get("kind") == "categorical"),
        "numeric": sorted(n for n, f in features.items() if f.get("kind") == "numeric"),
        "missing_rates": {
            name: feature["missing_rate"]
            for name, feature in sorted(features.items())
            if feature.get("missing_rate")
        },
        "label_balance": _label_balance(evaluation),
    }


def _label_balance(evaluation: Mapping[str, Any]) -> dict[str, Any] | None:
    """Rows per class of the test split, from the confusion matrix (rows = actual class)."""
    matrix = (evaluation.get("confusion_matrix") or {}).get("matrix")
    if not matrix:
        return None
    counts = [sum(row) for row in matrix]
    total = sum(counts)
    return {
        "source": "test split",
        "classes": list(evaluation["confusion_matrix"].get("categories") or []),
        "rows": counts,
        "positive_rate": counts[-1] / total if total else None,
    }


def _min_rows(slices: Mapping[str, Any]) -> int | None:
    policy = slices.get("policy")
    return policy.get("min_rows") if isinstance(policy, Mapping) else None


def read_card_inputs(**paths: str) -> dict[str, Any]:
    """Each named JSON file read (`evaluation=path, ...`), or ModelCardError naming the input."""
    documents = {}
    for name, path in paths.items():
        try:
            documents[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ModelCardError(f"{name}: cannot read JSON from {path}: {error}") from error
    return documents


def run_model_card(
    tracking_uri: str,
    name: str,
    version: str,
    *,
    run_id: str,
    intended_use: str,
    evaluation: Mapping[str, Any],
    gate_record: Mapping[str, Any],
    reference_profile: Mapping[str, Any],
) -> tuple[dict[str, Any], str, str]:
    """Write the card of a registered version: (card, Markdown, the card's `runs:/` URI).

    The version's tags give its lineage; the JSON is logged on the version's run and the
    version tagged with where (`mlflow_registry.log_model_card`).

    Raises:
        ModelCardError: an input the card cannot be written from.
        RegistryError: the version does not exist, or `run_id` is not its run.
    """
    tags = mlflow_registry.version_tags(tracking_uri, name, version)
    card = model_card(
        registered_model=name,
        model_version=version,
        run_id=run_id,
        intended_use=intended_use,
        evaluation=evaluation,
        gate_record=gate_record,
        reference_profile=reference_profile,
        version_tags=tags,
    )
    uri = mlflow_registry.log_model_card(tracking_uri, name, version, card, run_id=run_id)
    return card, card_markdown(card), uri
