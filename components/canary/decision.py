"""The canary's decision: the policy's checks on both versions' figures, and when to decide.

A relative check is skipped when the primary served nothing in the window (nothing to compare
with). A check whose canary figure is missing (no successful request to time or score) fails:
a renamed metric must not turn a check off silently. The decision is `promote` after the bake
time with every check passing, `rollback` as soon as a check fails once the canary has
`min_requests`, and `inconclusive` when the bake time is over and the canary has served
fewer (or none at all, whatever `min_requests` says): acted on as `inconclusive` says
(default: roll back, so an unobserved model never takes all traffic; a low-traffic
environment can choose to promote).

Each check is a `ctloop.components.checks.Check`, as the gate's and drift's are: its
`value` is the canary's figure, its `baseline` the primary's, so a reader of one decision can
read the others. The policy's shape is `ctloop.components.canary.policy`, the figures come from
`ctloop.components.canary.measurement`, and `ctloop.components.canary.report` renders the
decision for a person.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ctloop.components.canary.measurement import CanaryTarget, Measurement, measure, timeline
from ctloop.components.canary.policy import (
    INCONCLUSIVE,
    PROMOTE,
    ROLLBACK,
    CanaryPolicy,
    ErrorRateRule,
    LatencyRule,
    ScoreShiftRule,
)
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.checks import Check, format_number, limit_check
from ctloop.components.drift import statistics

_WAITING = "waiting"


@dataclass(frozen=True)
class CanaryDecision:
    """The analysis's verdict, the action it leads to, and everything it rests on."""

    verdict: str
    """`promote`, `rollback` or `inconclusive` (too few canary requests to judge)."""
    action: str
    """`promote` or `rollback`: the verdict, or for `inconclusive` the policy's choice."""
    target: CanaryTarget
    start: float
    end: float
    canary: Measurement
    primary: Measurement
    checks: list[Check]
    """Each check's `value` is the canary's figure, its `baseline` the primary's."""
    reasons: list[str]
    timeline: list[dict[str, Any]] = field(default_factory=list)


def observe_canary(
    prometheus: PrometheusClient,
    policy: CanaryPolicy,
    target: CanaryTarget,
    *,
    started_at: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryDecision:
    """Check the canary every `step_s` until the bake time is over or a check fails.

    Args:
        started_at: When the canary began taking traffic (Unix seconds); default now. A
            start longer than the bake time ago decides at once on the whole window.
    """
    start = clock() if started_at is None else started_at
    for now, final in bake_readings(start, policy.bake_time_s, policy.step_s, clock, sleep):
        decision = analyze_window(prometheus, policy, target, start, now, final=final)
        if decision.verdict != _WAITING:
            return decision
    raise AssertionError("bake_readings ends only after a final reading")


def bake_readings(
    start: float,
    bake_time_s: float,
    step_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Iterator[tuple[float, bool]]:
    """(now, final) every `step_s` from `start` until the bake time is over, the last with
    final=True: the schedule a canary and a shadow are both judged on. A start longer than
    the bake time ago gives one final reading at once."""
    bake_end = start + bake_time_s
    due = min(start + step_s, bake_end)
    while True:
        now = clock()
        if now < due:
            sleep(due - now)
            now = clock()
        yield now, now >= bake_end
        if now >= bake_end:
            return
        due = min(due + step_s, bake_end)


def analyze_window(
    prometheus: PrometheusClient,
    policy: CanaryPolicy,
    target: CanaryTarget,
    start: float,
    end: float,
    *,
    final: bool = True,
) -> CanaryDecision:
    """The decision on the window from `start` to `end` (Unix seconds).

    With `final=False` (bake time not over) a canary that passes every check is `waiting`;
    a failing one is rolled back at once.
    """
    canary = measure(prometheus, target, target.canary_version, start, end)
    primary = measure(prometheus, target, target.primary_version, start, end)
    checks = evaluate(policy, canary, primary)
    failures = [check.rule for check in checks if not check.passed]
    if canary.requests < max(policy.min_requests, 1e-9):
        verdict = INCONCLUSIVE if final else _WAITING
        failures = [
            f"the canary served {format_number(canary.requests)} requests in {end - start:.0f} s, "
            f"fewer than min_requests {format_number(policy.min_requests)}: too few to judge"
        ]
    elif failures:
        verdict = ROLLBACK
    else:
        verdict = PROMOTE if final else _WAITING
    decision = CanaryDecision(
        verdict=verdict,
        action=policy.inconclusive if verdict == INCONCLUSIVE else verdict,
        target=target,
        start=start,
        end=end,
        canary=canary,
        primary=primary,
        checks=checks,
        reasons=failures,
    )
    if verdict == _WAITING:
        return decision
    return replace(decision, timeline=timeline(prometheus, target, start, end, policy.step_s))


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
