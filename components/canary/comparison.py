"""The canary's checks: the policy's rules applied to both versions' figures over one window.

A relative check is skipped when the primary served nothing in the window (nothing to compare
with). A check whose canary figure is missing (no successful request to time or score) fails:
a renamed metric must not turn a check off silently. Each check's `value` is the canary's
figure and its `baseline` the primary's. When the checks lead to a decision is
`ctloop.components.canary.decision`.
"""

from __future__ import annotations

import numpy as np

from ctloop.components.canary.measurement import Measurement
from ctloop.components.canary.policy import (
    CanaryPolicy,
    ErrorRateRule,
    LatencyRule,
    ScoreShiftRule,
)
from ctloop.components.checks import Check, format_number, limit_check
from ctloop.components.drift import statistics


def evaluate(policy: CanaryPolicy, canary: Measurement, primary: Measurement) -> list[Check]:
    """Every check the policy asks for, on the two versions' figures."""
    checks = []
    if policy.error_rate is not None:
        checks += _ceiling_checks(
            "error_rate",
            "error_rate",
            "",
            canary.error_rate,
            primary.error_rate,
            _error_rate_ceilings(policy.error_rate, primary.error_rate),
            "the canary served no request: its error rate is unknown",
        )
    if policy.latency_p99_ms is not None:
        checks += _ceiling_checks(
            "latency_p99_ms",
            "p99_ms",
            " ms",
            canary.p99_ms,
            primary.p99_ms,
            _latency_ceilings(policy.latency_p99_ms, primary.p99_ms),
            "no successful canary request in the window: its p99 latency is unknown",
        )
    if policy.score_shift is not None:
        checks += _score_shift_checks(policy.score_shift, canary, primary)
    return checks


def _error_rate_ceilings(
    rule: ErrorRateRule, primary: float | None
) -> list[tuple[str, float | None]]:
    """(name, limit) of each ceiling asked for; None: relative to a primary with none."""
    ceilings = [("max", rule.max)] if rule.max is not None else []
    if rule.max_increase is not None:
        relative = None if primary is None else primary + rule.max_increase
        ceilings.append((f"primary's + {format_number(rule.max_increase)}", relative))
    return ceilings


def _latency_ceilings(rule: LatencyRule, primary: float | None) -> list[tuple[str, float | None]]:
    """(name, limit) of each ceiling asked for; None: relative to a primary with none."""
    ceilings = [("max", rule.max)] if rule.max is not None else []
    if rule.max_increase_relative is not None:
        factor = 1.0 + rule.max_increase_relative
        ceilings.append(
            (f"primary's x {format_number(factor)}", None if primary is None else primary * factor)
        )
    return ceilings


def _ceiling_checks(
    check: str,
    metric: str,
    unit: str,
    canary: float | None,
    primary: float | None,
    ceilings: list[tuple[str, float | None]],
    missing: str,
) -> list[Check]:
    """`canary <= limit` for each (name, limit); a None limit is relative to a primary that
    served nothing, so it is skipped."""
    checks = []
    for name, limit in ceilings:
        if limit is None:
            rule = f"skipped ({name}): the primary served nothing to compare with"
            checks.append(
                Check(check, metric, canary, None, rule, True, skipped=True, baseline=primary)
            )
        elif canary is None:
            checks.append(Check(check, metric, None, limit, missing, False, baseline=primary))
        else:
            checks.append(
                limit_check(
                    check, metric, canary, limit, limit_name=name, unit=unit, baseline=primary
                )
            )
    return checks


def _score_shift_checks(
    rule: ScoreShiftRule, canary: Measurement, primary: Measurement
) -> list[Check]:
    asked = [(name, limit) for name, limit in (("psi", rule.psi_max), ("ks", rule.ks_max))]
    asked = [(name, limit) for name, limit in asked if limit is not None]
    if primary.score_counts is None:
        rule_text = "skipped: the primary scored nothing to compare with"
        return [
            Check("score_shift", name, None, None, rule_text, True, skipped=True)
            for name, _limit in asked
        ]
    if canary.score_counts is None:
        rule_text = "the canary scored nothing in the window: its score shift is unknown"
        return [
            Check("score_shift", name, None, limit, rule_text, passed=False)
            for name, limit in asked
        ]
    c, p = canary.score_counts, primary.score_counts
    n, m = float(c.sum()), float(p.sum())
    bins = int(np.count_nonzero((c > 0) | (p > 0)))
    values = {
        "psi": statistics.population_stability_index(
            statistics.smoothed_shares(p), statistics.smoothed_shares(c)
        ),
        "ks": statistics.binned_ks_statistic(p, c)[0],
    }
    noise = {
        "psi": statistics.psi_noise_bound(bins, n, m, rule.false_alarm_rate),
        "ks": statistics.ks_noise_bound(n, m, rule.false_alarm_rate),
    }
    checks = []
    for name, limit in asked:
        source = " (small-sample noise bound)" if noise[name] > limit else ""
        checks.append(
            limit_check(
                "score_shift",
                name,
                values[name],
                max(limit, noise[name]),
                label=f"score {name}",
                note=f"{source} between {n:.0f} canary and {m:.0f} primary scores",
            )
        )
    return checks
