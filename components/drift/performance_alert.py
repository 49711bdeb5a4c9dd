"""The champion's quality on the window, estimated from its scores, and the alert it raises.

Beside drift, the monitoring step estimates the champion's ROC AUC, accuracy and log loss on
the window from its own scores (`performance_estimate`), through the calibration its scored
profile carries from evaluation. The drift policy's `performance` section bounds the estimate
(a floor or ceiling per metric, and the most a metric may worsen from its test split value);
a bound crossed is the performance alert, a retraining trigger apart from drift.

A profile without a calibration (a model evaluated before profiles carried one), a regression
model, or an empty window: no estimate and no alert, and the figures say why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ctloop.components.checks import Check, format_number, limit_check
from ctloop.components.data.calibration import DECISION_THRESHOLD, Calibration
from ctloop.components.drift.performance_estimate import estimate_performance
from ctloop.components.drift.policy import PerformanceBounds

LOWER_IS_BETTER = frozenset({"log_loss"})


def window_estimate(
    profile: Mapping[str, Any],
    scores: np.ndarray | None,
    labels: np.ndarray | None,
    bounds: PerformanceBounds,
) -> dict[str, Any]:
    """The estimate on the window with its checks and alert, or {"skipped": why}.

    Args:
        profile: The champion's scored profile; its "calibration" entry makes the estimate.
        scores: The champion's scores on the window, in row order (None: not kept, which
            `drift_report` does only without a calibration to estimate through).
        labels: The window's labels as 0/1 with NaN where missing, in the same order (None:
            the window has no label column): the realized metrics beside the estimates.
        bounds: The policy's performance section.

    Raises:
        CalibrationError: the profile's calibration entry is broken.
        PerformanceEstimateError: scores that are not probabilities.
    """
    if profile.get("task") != "binary":
        return {"skipped": "not a binary model: its quality is not estimated from scores"}
    entry = profile.get("calibration")
    if not entry:
        return {
            "skipped": "the reference profile carries no calibration of the scores (a model "
            "evaluated before profiles recorded one): performance not estimated, no alert"
        }
    if scores is None or scores.size == 0:
        return {"skipped": "the window has no rows: performance not estimated"}
    calibration = Calibration.from_json(entry, "reference profile's calibration")
    threshold = float(entry.get("threshold", DECISION_THRESHOLD))
    estimate = estimate_performance(scores, calibration, threshold=threshold, labels=labels)
    figures = {**estimate.to_json(), "test_metrics": dict(entry.get("test_metrics") or {})}
    return {**figures, **alert_figures(figures, bounds)}


def alert_figures(figures: Mapping[str, Any], bounds: PerformanceBounds) -> dict[str, Any]:
    """`checks` (as JSON) and `alert` of an estimate's figures under `bounds`: also what replay
    recomputes from a record's pinned figures."""
    if "skipped" in figures:
        return {"checks": [], "alert": False}
    checks = performance_checks(figures["metrics"], figures["test_metrics"], bounds)
    return {
        "checks": [check.to_json() for check in checks],
        "alert": any(not check.passed for check in checks),
    }


def performance_checks(
    metrics: Mapping[str, Mapping[str, Any]],
    test_metrics: Mapping[str, Any],
    bounds: PerformanceBounds,
) -> list[Check]:
    """Each bound of `bounds` against the estimates (`metrics[name]["estimate"]`).

    A metric the window leaves undefined (ROC AUC of scores all 0 or 1), or a drop whose
    test value the profile lacks, gives a skipped check: nothing to compare is no alarm.
    """
    checks = []
    for name, (low, high) in bounds.estimated.items():
        value = metrics[name]["estimate"]
        for limit, upper in ((low, False), (high, True)):
            if limit is None:
                continue
            kind = f"estimated_{'max' if upper else 'min'}"
            if value is None:
                checks.append(_skipped(kind, f"estimated_{name}", limit, "undefined on the window"))
                continue
            checks.append(
                limit_check(
                    kind,
                    f"estimated_{name}",
                    value,
                    limit,
                    upper=upper,
                    label=f"estimated {name}",
                    limit_name="max" if upper else "min",
                )
            )
    for name, limit in bounds.max_drop.items():
        value, test = metrics[name]["estimate"], test_metrics.get(name)
        if value is None or test is None:
            checks.append(_skipped("max_drop", f"{name}_drop", limit, "no estimate or test value"))
            continue
        drop = value - test if name in LOWER_IS_BETTER else test - value
        note = f" (test {format_number(test)}, estimated {format_number(value)})"
        checks.append(
            limit_check(
                "max_drop",
                f"{name}_drop",
                drop,
                limit,
                label=f"{name} drop",
                limit_name="max",
                note=note,
            )
        )
    return checks


def _skipped(kind: str, subject: str, limit: float, why: str) -> Check:
    return Check(kind, subject, None, limit, f"{subject}: {why}, not checked", True, skipped=True)
