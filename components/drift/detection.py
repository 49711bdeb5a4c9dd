"""Drift detection: a window's counts against the champion's reference profile, decided by
a `DriftPolicy`.

Each feature (and the model's score distribution) gets its measures from `statistics`; each
measure with a threshold becomes a `Check`, and a feature whose check fails has drifted, its
failed checks' sentences being its `reasons`. The dataset has drifted when the (weighted)
share of drifted features exceeds the policy's `drift_share`, or, with `include_prediction`,
when the scores drifted, or, with `all_missing_drifts`, when a feature is missing in every row
of the window though the reference has values of it.

Small windows are noisy. The threshold applied is max(policy threshold, noise bound), where
the noise bound is the value that sampling alone exceeds with probability `false_alarm_rate`
at the window's and the reference's sizes (derivations in `statistics`). On small windows the
noise bound rules, so the false-alarm rate stays near that rate at any n; on large windows it
vanishes and the effect threshold rules. The binned KS statistic is a lower bound of the exact
one, so binning never adds false alarms.

Measuring (`detect_drift`) and deciding (`decide_drift`) are two halves: a decision record pins
the measured figures, and replay decides them again. The module runs past 350 lines because
both halves share the shape of a feature's entry; apart, each would have to know the other's
keys.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from ctloop.components.checks import format_number, limit_check
from ctloop.components.drift import statistics
from ctloop.components.drift.policy import DriftPolicy, DriftPolicyError, Thresholds
from ctloop.components.drift.report import DriftResult
from ctloop.components.drift.window_profile import (
    FeatureCounts,
    WindowProfile,
    WindowProfileError,
    prediction_counts,
)

# The distribution measures of a feature or of the scores, until counts are there to measure.
_DISTRIBUTION_UNMEASURED: dict[str, Any] = {
    "psi": None,
    "js_distance": None,
    "ks_statistic": None,
    "ks_error_bound": None,
    "ks_method": None,
}


def detect_drift(
    reference_profile: Mapping[str, Any],
    window: WindowProfile,
    policy: DriftPolicy | None = None,
    *,
    scores_window: FeatureCounts | np.ndarray | None = None,
    exact_ks_values: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    performance: Mapping[str, Any] | None = None,
) -> DriftResult:
    """Compare a window with the reference profile and decide whether it drifted.

    Args:
        reference_profile: The champion's `ctloop.reference_profile/v1` profile.
        window: The window's counts (`window_profile`).
        policy: Thresholds and decision rule; the defaults when None.
        scores_window: The model's scores on the window (raw, or counted with
            `prediction_counts`); `window.prediction` when None.
        exact_ks_values: Raw (reference, current) values per numeric feature: its KS is then
            exact (error bound 0) instead of binned. For standalone comparisons of two small
            files, where the raw reference sample is at hand; the profile does not hold it.
        performance: Metrics of the model on labelled window rows, copied into the result.

    Raises:
        DriftPolicyError: the policy names a feature the reference profile does not have.
        WindowProfileError: scores given but the profile has no prediction bins.
    """
    policy = policy or DriftPolicy()
    profiled = reference_profile["features"]
    _known_features(policy, profiled, exact_ks_values or {})
    if window.features.keys() != profiled.keys():
        raise WindowProfileError(
            f"the window was profiled for features {sorted(window.features)}, the reference "
            f"profile has {sorted(profiled)}: profile the window against this reference"
        )
    figures = {
        "rows": window.rows,
        "reference_rows": int(reference_profile.get("row_count", 0)),
        "features": {
            name: _feature_figures(
                spec, window.features[name], window.rows, (exact_ks_values or {}).get(name)
            )
            for name, spec in profiled.items()
        },
        "prediction": _prediction_figures(reference_profile, window, scores_window),
    }
    return decide_drift(figures, policy, performance=performance)


def decide_drift(
    figures: Mapping[str, Any],
    policy: DriftPolicy,
    *,
    performance: Mapping[str, Any] | None = None,
) -> DriftResult:
    """The decision from a window's measured figures (`detect_drift` measures them;
    `measured_figures` gives them back from a result), so that a decision record's pinned
    figures can be decided again, under today's code or another policy, without the window.

    The noise bounds are computed here, from the sizes the figures keep, since they depend
    on the policy's `false_alarm_rate`.

    Raises:
        DriftPolicyError: the policy names a feature the figures do not have.
    """
    _known_features(policy, figures["features"], {})
    rows, alpha = figures["rows"], policy.false_alarm_rate
    features = {}
    for name, measured in figures["features"].items():
        entry = {**copy.deepcopy(measured), "all_missing": False}
        entry["noise_bounds"] = _noise_bounds(measured, rows, alpha)
        weight = 1.0 if policy.feature_weights is None else policy.feature_weights.get(name, 0.0)
        entry["weight"] = weight
        _decide(entry, policy.thresholds(name), name)
        if policy.all_missing_drifts:
            _decide_all_missing(entry, rows, alpha)
        features[name] = entry
    total_weight = sum(entry["weight"] for entry in features.values())
    drifted_weight = sum(entry["weight"] for entry in features.values() if entry["drifted"])
    share = drifted_weight / total_weight if total_weight > 0 else 0.0
    prediction = None
    if figures.get("prediction") is not None:
        prediction = copy.deepcopy(figures["prediction"])
        prediction["noise_bounds"] = _noise_bounds(prediction, 0, alpha)
        # Scores are never missing; a missing-rate rule has nothing to say about them.
        _decide(prediction, replace(policy.prediction, missing_rate_change=None), "prediction")
    drifted = [name for name, entry in features.items() if entry["drifted"]]
    drifted.sort(key=lambda name: (-features[name]["severity"], name))
    detected = (
        share > policy.drift_share
        or bool(policy.include_prediction and prediction is not None and prediction["drifted"])
        or any(entry["all_missing"] and entry["weight"] > 0 for entry in features.values())
    )
    return DriftResult(
        drift_detected=detected,
        drift_share=share,
        drift_share_threshold=policy.drift_share,
        drifted_features=drifted,
        features=features,
        rows=rows,
        reference_rows=int(figures["reference_rows"]),
        prediction=prediction,
        performance=dict(performance) if performance is not None else None,
        policy=policy.to_json(),
    )


_DECIDED = ("all_missing", "noise_bounds", "weight", "thresholds", "severity", "drifted", "reasons")
"""Keys of a result's feature entry that the policy filled in (the rest was measured)."""


def measured_figures(result: DriftResult) -> dict[str, Any]:
    """What `decide_drift` decides from, taken back out of a result: per feature (and for
    the scores) every measure and the sizes the noise bounds need, none of the decision."""

    def measured(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in entry.items() if key not in _DECIDED}

    return {
        "rows": result.rows,
        "reference_rows": result.reference_rows,
        "features": {name: measured(entry) for name, entry in result.features.items()},
        "prediction": measured(result.prediction) if result.prediction is not None else None,
    }


def _feature_figures(
    spec: Mapping[str, Any],
    counts: FeatureCounts,
    rows: int,
    exact: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    reference_rows = int(spec.get("count", 0))
    reference_missing = float(spec.get("missing_rate", 0.0))
    current_missing = counts.missing / rows if rows else None
    reference_values = reference_rows * (1.0 - reference_missing)
    entry: dict[str, Any] = {
        "kind": spec["kind"],
        "values": counts.values,
        **_DISTRIBUTION_UNMEASURED,
        "chi_square": None,
        "chi_square_p_value": None,
        "cramers_v": None,
        "unseen_share": None,
        "unseen_examples": list(counts.unseen_examples),
        "missing_rate_reference": reference_missing,
        "missing_rate_current": current_missing,
        "missing_rate_change": None,
        "noise_inputs": {
            "bins": None,
            "reference_rows": reference_rows,
            "reference_values": reference_values,
        },
    }
    if rows:
        entry["missing_rate_change"] = abs(current_missing - reference_missing)
    if spec["kind"] == "categorical":
        reference = np.asarray([*spec["categories"].values(), 0.0])
        current = np.append(counts.counts, counts.unseen).astype(np.float64)
    else:
        reference = np.asarray(spec["bin_frequencies"], dtype=np.float64)
        current = counts.counts.astype(np.float64)
    if counts.values == 0 or len(reference) == 0 or reference.sum() <= 0:
        return entry
    entry.update(_distribution_measures(spec["kind"], reference, current, reference_values))
    entry["noise_inputs"]["bins"] = int(np.count_nonzero((reference > 0) | (current > 0)))
    if spec["kind"] == "categorical":
        entry["unseen_share"] = counts.unseen / counts.values
    elif exact is not None:
        entry["ks_statistic"] = statistics.exact_ks_statistic(*exact)
        entry["ks_error_bound"] = 0.0
        entry["ks_method"] = "exact"
    return entry


def _noise_bounds(measured: Mapping[str, Any], rows: int, alpha: float) -> dict[str, float]:
    """What sampling alone exceeds with probability `alpha`, per measure (`rows` 0: no
    missing-rate bound, as for the scores)."""
    sizes = measured["noise_inputs"]
    bounds = {}
    if rows:
        bounds["missing_rate_change"] = statistics.missing_rate_noise_bound(
            measured["missing_rate_reference"], rows, sizes["reference_rows"], alpha
        )
    if sizes["bins"] is None:
        return bounds
    n, m = measured["values"], sizes["reference_values"]
    bounds.update(_distribution_noise(measured["kind"], sizes["bins"], n, m, alpha))
    if measured["kind"] == "categorical":
        bounds["unseen_share"] = statistics.unseen_share_noise_bound(n, m, alpha)
    return bounds


def _distribution_measures(
    kind: str, reference: np.ndarray, current: np.ndarray, reference_values: float
) -> dict[str, Any]:
    reference_shares = reference / reference.sum()
    measures: dict[str, Any] = {
        "psi": statistics.population_stability_index(
            statistics.smoothed_shares(reference_shares * reference_values),
            statistics.smoothed_shares(current),
        ),
        "js_distance": statistics.jensen_shannon_distance(reference_shares, current),
    }
    if kind == "categorical":
        chi2, p_value = statistics.chi_square(reference_shares * reference_values, current)
        measures.update(
            chi_square=chi2,
            chi_square_p_value=p_value,
            cramers_v=statistics.cramers_v(reference_shares, current),
        )
    else:
        ks, bound = statistics.binned_ks_statistic(reference_shares, current)
        measures.update(ks_statistic=ks, ks_error_bound=bound, ks_method="binned")
    return measures


def _distribution_noise(
    kind: str, bins: int, n: int, m: float | None, alpha: float
) -> dict[str, float]:
    bounds = {
        "psi": statistics.psi_noise_bound(bins, n, m, alpha),
        "js_distance": statistics.js_distance_noise_bound(bins, n, m, alpha),
    }
    if kind == "categorical":
        bounds["cramers_v"] = statistics.cramers_v_noise_bound(bins, n, m, alpha)
    else:
        bounds["ks_statistic"] = statistics.ks_noise_bound(n, m, alpha)
    return bounds


def _decide(entry: dict[str, Any], thresholds: Thresholds, subject: str) -> None:
    """Fill `thresholds`, `severity`, `drifted` and `reasons` of a measured entry."""
    applied = {}
    checks = []
    severity = 0.0
    for measure, limit in asdict(thresholds).items():
        value = entry.get(measure)
        if limit is None or value is None:
            continue
        noise = entry["noise_bounds"].get(measure, 0.0)
        threshold = max(limit, noise)
        applied[measure] = threshold
        severity = max(severity, value / threshold)
        note = " (small-sample noise bound)" if noise > limit else ""
        checks.append(limit_check(measure, subject, value, threshold, label=measure, note=note))
    reasons = [check.rule for check in checks if not check.passed]
    entry.update(thresholds=applied, severity=severity, drifted=bool(reasons), reasons=reasons)


def _decide_all_missing(entry: dict[str, Any], rows: int, alpha: float) -> None:
    """Mark a feature missing in every row of the window, unless the reference's own missing
    rate p makes that likely by chance: all of n rows missing has probability p**n, which must
    not exceed the false-alarm rate (p = 0 for most features: never by chance)."""
    reference_missing = entry["missing_rate_reference"]
    if rows == 0 or entry["missing_rate_current"] != 1.0 or reference_missing**rows > alpha:
        return
    entry.update(all_missing=True, drifted=True)
    entry["reasons"] = [
        f"missing in all {rows} rows of the window ({format_number(reference_missing * 100)} % "
        "in the reference): the model sees none of it",
        *entry["reasons"],
    ]


def _prediction_figures(
    reference_profile: Mapping[str, Any],
    window: WindowProfile,
    scores_window: FeatureCounts | np.ndarray | None,
) -> dict[str, Any] | None:
    if scores_window is None:
        counts = window.prediction
    elif isinstance(scores_window, FeatureCounts):
        counts = scores_window
    else:
        counts = prediction_counts(reference_profile, scores_window)
    if counts is None:
        return None
    spec = reference_profile.get("prediction")
    if not spec or len(spec.get("bin_frequencies", [])) != len(counts.counts):
        raise WindowProfileError(
            f"scores were counted over {len(counts.counts)} bins but the reference profile's "
            f"prediction has {len((spec or {}).get('bin_frequencies', []))}"
        )
    reference_values = spec.get("count")
    entry: dict[str, Any] = {
        "kind": "numeric",
        "values": counts.values,
        **_DISTRIBUTION_UNMEASURED,
        "noise_inputs": {
            "bins": None,
            "reference_rows": None,
            "reference_values": reference_values,
        },
    }
    reference = np.asarray(spec["bin_frequencies"], dtype=np.float64)
    current = counts.counts.astype(np.float64)
    if counts.values and len(reference) and reference.sum() > 0:
        # Without a recorded count the reference is taken as exact (1/m = 0), which only
        # tightens the noise bound; PSI smoothing then needs some size: use the window's.
        size = float(reference_values) if reference_values else float(counts.values)
        entry.update(_distribution_measures("numeric", reference, current, size))
        entry["noise_inputs"]["bins"] = int(np.count_nonzero((reference > 0) | (current > 0)))
    return entry


def _known_features(
    policy: DriftPolicy,
    profiled: Mapping[str, Any],
    exact: Mapping[str, Any],
) -> None:
    for where, names in (
        ("features", policy.features),
        ("feature_weights", policy.feature_weights or {}),
        ("exact_ks_values", exact),
    ):
        unknown = sorted(name for name in names if name not in profiled)
        if unknown:
            raise DriftPolicyError(
                f"{where} names feature(s) {unknown} that the reference profile does not have; "
                f"its features are {list(profiled)}"
            )
    numeric = [name for name in exact if profiled[name]["kind"] != "numeric"]
    if numeric:
        raise DriftPolicyError(f"exact_ks_values names categorical feature(s) {numeric}")
