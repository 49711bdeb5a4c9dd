"""Drift of one table against another, as `ctloop drift` reports it on a laptop.

Unlike the monitoring step, both raw tables are at hand: numeric features get the exact
two-sample KS statistic, and with a model both tables are scored, so the current scores are
compared with the reference's and, when both hold the label, the model's quality on each.
Errors say which table is at fault (`TableComparisonError.table`); the command line, which knows
which option named which file, adds that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.batch_scoring.scoring import iter_scores
from ctloop.components.contract.model_folder import LoadedModel
from ctloop.components.contract.profile import ProfileError, ReferenceProfile, without_feature
from ctloop.components.data.profile import profile_table, with_prediction_distribution
from ctloop.components.drift.monitor import DriftReport, drift_report
from ctloop.components.drift.policy import parse_drift_policy
from ctloop.components.drift.quality import quality
from ctloop.components.drift.window_profile import WindowProfileError

REFERENCE, CURRENT = "reference", "current"


class TableComparisonError(WindowProfileError):
    """A table that cannot be compared; `table` says which one (`REFERENCE` or `CURRENT`)."""

    def __init__(self, table: str, message: str) -> None:
        super().__init__(message)
        self.table = table


def compare_tables(
    reference: pa.Table,
    current: pa.Table,
    *,
    target: str = "",
    profile: ReferenceProfile | None = None,
    model: LoadedModel | None = None,
    policy: str = "",
) -> DriftReport:
    """Drift of `current` against `reference`.

    The reference profile is `profile`, or the model's, or else built from the reference
    table; with a model both tables are also scored.

    Args:
        reference: The table the current one is compared with.
        current: The table checked for drift.
        target: Label column, never compared as a feature.
        profile: A reference profile to use instead of profiling the reference.
        model: A model whose profile is used (unless `profile` is given) and which scores both.
        policy: Drift policy JSON; blank for the defaults.

    Raises:
        TableComparisonError: a table lacks a compared column or holds values of another type
            (its `table` says which).
        ProfileError, DriftPolicyError: a profile without features, a bad policy.
    """
    parsed = parse_drift_policy(policy)
    notes = []
    if profile is None:
        profile = model.profile if model is not None else profile_table(reference, target)
    if profile is None:
        raise ProfileError(
            "the model has no reference_profile.json beside it, so there is nothing to compare "
            "the tables with"
        )
    profile = without_feature(profile, target)
    _require_features(profile, reference, REFERENCE)
    _require_features(profile, current, CURRENT)
    extra = sorted(set(current.column_names) - set(profile["features"]) - {target})
    if extra:
        notes.append(f"columns of the current table not compared (not in the profile): {extra}")
    score_batches = baseline = None
    if model is None:
        notes.append("no model given: the score distribution not compared")
    else:
        reference_scores = _scores(model, reference)
        profile = with_prediction_distribution(profile, reference_scores)
        profile["prediction"]["count"] = len(reference_scores)
        score_batches = [_scores(model, current)]
        if target and target in reference.column_names:
            try:
                baseline = quality(profile, reference.column(target), reference_scores)
            except ValueError as error:
                notes.append(f"the model's quality on the reference not measured: {error}")
    exact = _exact_ks_values(profile, reference, current)
    try:
        return drift_report(
            profile,
            current.to_batches(),
            policy=parsed,
            target=target,
            score_batches=score_batches,
            baseline_metrics=baseline,
            exact_ks_values=exact,
            notes=notes,
        )
    except TableComparisonError:
        raise
    except WindowProfileError as error:
        raise TableComparisonError(CURRENT, str(error)) from error


def _scores(model: LoadedModel, table: pa.Table) -> np.ndarray:
    chunks = [scores for _, scores in iter_scores(table.to_batches(), model)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def _require_features(profile: Mapping[str, Any], table: pa.Table, role: str) -> None:
    absent = [name for name in profile["features"] if name not in table.column_names]
    if absent:
        raise TableComparisonError(
            role,
            f"the {role} table has no column(s) {absent} that the reference profile compares; "
            f"its columns are {table.column_names}",
        )


def _exact_ks_values(
    profile: Mapping[str, Any],
    reference: pa.Table,
    current: pa.Table,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw values of each numeric feature on both sides (those with values on both)."""
    values = {}
    for name, spec in profile["features"].items():
        if spec["kind"] != "numeric":
            continue
        pair = (
            _floats(reference, name, REFERENCE),
            _floats(current, name, CURRENT),
        )
        if all(np.count_nonzero(~np.isnan(side)) for side in pair):
            values[name] = pair
    return values


def _floats(table: pa.Table, name: str, role: str) -> np.ndarray:
    column = table.column(name)
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise TableComparisonError(
            role,
            f"column {name!r} of the {role} table is numeric in the reference profile but holds "
            f"{column.type} values that are not numbers: {error}",
        ) from error
