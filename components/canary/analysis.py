"""Canary analysis: the canary's live metrics against the primary's, and the decision.

Both model versions are served under one model name; the predictor labels its Prometheus
metrics (`ctloop.serving.metrics`) with `model_name` and `model_version`, so one Prometheus
tells them apart by the version label alone. Every figure is an `increase()` over the
analysis window (from the start of the analysis to now), so the primary's traffic before the
canary existed does not count.

Policy JSON (every key optional; a blank policy means `DEFAULT_CANARY_POLICY`)::

    {
      "bake_time_s": 300,          # observe this long before promoting
      "step_s": 30,                # check this often; a failed check rolls back at once
      "min_requests": 100,         # canary requests needed before any check decides
      "inconclusive": "rollback",  # too few requests after the bake time: "rollback" | "promote"
      "error_rate":     {"max": 0.05, "max_increase": 0.01},
      "latency_p99_ms": {"max": 250, "max_increase_relative": 0.5},
      "score_shift":    {"psi_max": 0.2, "ks_max": 0.1, "false_alarm_rate": 0.001}
    }

- error_rate: the share of the canary's requests that did not succeed: outcome `invalid`
  (HTTP 400) and `error` (HTTP 500) both count. The router splits the same traffic between
  the two versions, so a canary that rejects requests the primary scores (a changed feature
  schema, a tighter batch limit) is as broken for its callers as one that crashes. `max` is
  an absolute ceiling; `max_increase` the most it may exceed the primary's rate, which keeps
  callers' own bad requests (rejected by both) from failing the canary.
- latency_p99_ms: the 99th percentile of the successful requests' latency, from the latency
  histogram. `max` in milliseconds; `max_increase_relative` as a fraction of the primary's
  p99 (0.5: at most 1.5 times as slow). Both must hold when both are given.
- score_shift: how far the canary's score distribution (the score histogram's buckets) is
  from the primary's on the same traffic: PSI and the binned KS statistic of
  `ctloop.components.drift.statistics`. As in drift detection, the threshold applied is
  max(threshold, no-difference noise bound at `false_alarm_rate`) for the two row counts.

A relative check is skipped when the primary served nothing in the window (nothing to compare
with). A check whose canary figure is missing (no successful request to time or score) fails:
a renamed metric must not turn a check off silently. The decision is `promote` after the bake
time with every check passing, `rollback` as soon as a check fails once the canary has
`min_requests`, and `inconclusive` when the bake time is over and the canary has served
fewer (or none at all, whatever `min_requests` says): acted on as `inconclusive` says
(default: roll back, so an unobserved model never takes all traffic; a low-traffic
environment can choose to promote).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.drift import statistics
from ctloop.components.json_parameter import (
    json_number,
    json_object,
    parse_json_object,
    reject_unknown_keys,
)

PROMOTE = "promote"
ROLLBACK = "rollback"
INCONCLUSIVE = "inconclusive"
_WAITING = "waiting"

DEFAULT_CANARY_POLICY: dict[str, Any] = {
    "bake_time_s": 300,
    "step_s": 30,
    "min_requests": 100,
    "inconclusive": ROLLBACK,
    "error_rate": {"max_increase": 0.01},
    "latency_p99_ms": {"max_increase_relative": 0.5},
    "score_shift": {"psi_max": 0.2},
}
"""The policy a blank policy text means, as the JSON a pipeline parameter carries."""

# Series of the ctloop predictor (serving/metrics.py), as Prometheus names them.
REQUESTS_QUERY = "sum by (outcome) (increase(ctloop_predictions_total{%s}[%s]))"
P99_QUERY = (
    "histogram_quantile(0.99, sum by (le) "
    "(increase(ctloop_prediction_latency_seconds_bucket{%s}[%s])))"
)
SCORES_QUERY = "sum by (le) (increase(ctloop_prediction_score_bucket{%s}[%s]))"
TOTALS_QUERY = "sum by (outcome) (ctloop_predictions_total{%s})"
TIMELINE_ROWS = 12
# Float noise must not fail a canary that sits exactly on a limit.
_SLACK = 1e-12


class CanaryPolicyError(ValueError):
    """A canary policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class ErrorRateRule:
    max: float | None = None
    max_increase: float | None = None

    def ceilings(self, primary: float | None) -> list[tuple[str, float | None]]:
        """(name, limit) of each ceiling asked for; None: relative to a primary with none."""
        ceilings = [("max", self.max)] if self.max is not None else []
        if self.max_increase is not None:
            relative = None if primary is None else primary + self.max_increase
            ceilings.append((f"primary's + {_fmt(self.max_increase)}", relative))
        return ceilings


@dataclass(frozen=True)
class LatencyRule:
    max: float | None = None
    max_increase_relative: float | None = None

    def ceilings(self, primary: float | None) -> list[tuple[str, float | None]]:
        """(name, limit) of each ceiling asked for; None: relative to a primary with none."""
        ceilings = [("max", self.max)] if self.max is not None else []
        if self.max_increase_relative is not None:
            factor = 1.0 + self.max_increase_relative
            ceilings.append(
                (f"primary's x {_fmt(factor)}", None if primary is None else primary * factor)
            )
        return ceilings


@dataclass(frozen=True)
class ScoreShiftRule:
    psi_max: float | None = None
    ks_max: float | None = None
    false_alarm_rate: float = 0.001


@dataclass(frozen=True)
class CanaryPolicy:
    """A parsed, checked canary policy (shape in the module docstring)."""

    bake_time_s: float = 300.0
    step_s: float = 30.0
    min_requests: float = 100.0
    inconclusive: str = ROLLBACK
    error_rate: ErrorRateRule | None = None
    latency_p99_ms: LatencyRule | None = None
    score_shift: ScoreShiftRule | None = None


@dataclass(frozen=True)
class CanaryTarget:
    """Which metrics are whose: the served model name, the two versions behind it and,
    on a cluster, the namespace the predictors run in."""

    model_name: str
    canary_version: str
    primary_version: str
    namespace: str | None = None
    """The `namespace` label Prometheus Operator gives every scraped series; None matches
    any. Without it, a Prometheus that scrapes several environments, each serving the same
    model name with its own registry's version numbers, would mix their series."""


@dataclass(frozen=True)
class Measurement:
    """One version's figures over the analysis window."""

    requests: float
    failed: float
    p99_ms: float | None
    score_counts: np.ndarray | None
    """Rows per score-histogram bucket (not cumulative), None when nothing was scored."""

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.requests if self.requests > 0 else None


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
    checks: list[dict[str, Any]]
    reasons: list[str]
    timeline: list[dict[str, Any]] = field(default_factory=list)


# Section -> (rule class, {key: (low, high)}); every bound is inclusive.
_SECTIONS: dict[str, tuple[type, dict[str, tuple[float, float]]]] = {
    "error_rate": (ErrorRateRule, {"max": (0.0, 1.0), "max_increase": (0.0, 1.0)}),
    "latency_p99_ms": (
        LatencyRule,
        {"max": (0.0, math.inf), "max_increase_relative": (0.0, math.inf)},
    ),
    "score_shift": (
        ScoreShiftRule,
        {"psi_max": (0.0, math.inf), "ks_max": (0.0, 1.0), "false_alarm_rate": (1e-12, 0.5)},
    ),
}
_SCALARS = {
    "bake_time_s": (0.0, math.inf),
    "step_s": (1e-3, math.inf),
    "min_requests": (0.0, math.inf),
}
_ROOT_KEYS = (*_SCALARS, "inconclusive", *_SECTIONS)


def parse_canary_policy(text: str) -> CanaryPolicy:
    """Parse and check a policy JSON text; blank means `DEFAULT_CANARY_POLICY`.

    Raises:
        CanaryPolicyError: naming the section, key and value that break the shape.
    """
    if not text.strip():
        text = json.dumps(DEFAULT_CANARY_POLICY)
    root = parse_json_object(text, "canary policy", CanaryPolicyError)
    reject_unknown_keys(root, _ROOT_KEYS, "canary policy", CanaryPolicyError)
    scalars = {
        key: _number(root, key, "canary policy", *bounds)
        for key, bounds in _SCALARS.items()
        if key in root
    }
    inconclusive = root.get("inconclusive", ROLLBACK)
    if inconclusive not in (ROLLBACK, PROMOTE):
        raise CanaryPolicyError(
            f"canary policy: 'inconclusive' = {json.dumps(inconclusive)} must be "
            f'"{ROLLBACK}" or "{PROMOTE}" (what too few requests after the bake time leads to)'
        )
    sections = {}
    for name, (rule_class, keys) in _SECTIONS.items():
        if name not in root:
            continue
        section = json_object(root[name], f"'{name}'", CanaryPolicyError)
        reject_unknown_keys(section, tuple(keys), f"'{name}'", CanaryPolicyError)
        thresholds = [key for key in keys if key != "false_alarm_rate"]
        if not any(key in section for key in thresholds):
            raise CanaryPolicyError(f"'{name}' needs at least one of {', '.join(thresholds)}")
        sections[name] = rule_class(
            **{key: _number(section, key, name, *keys[key]) for key in keys if key in section}
        )
    return CanaryPolicy(**scalars, inconclusive=inconclusive, **sections)


def _number(section: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    return json_number(section[key], f"{where}: {key!r}", CanaryPolicyError, low=low, high=high)


def selector(target: CanaryTarget, model_version: str) -> str:
    """The PromQL label matchers of one version's series."""
    matchers = f"model_name={_quoted(target.model_name)},model_version={_quoted(model_version)}"
    if target.namespace is not None:
        matchers += f",namespace={_quoted(target.namespace)}"
    return matchers


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def measure(
    prometheus: PrometheusClient, target: CanaryTarget, version: str, start: float, end: float
) -> Measurement:
    """One version's requests, failures, p99 latency and score counts from `start` to `end`."""
    matchers, window = selector(target, version), _range(end - start)
    by_outcome = {
        sample.labels.get("outcome", ""): sample.value
        for sample in prometheus.query(REQUESTS_QUERY % (matchers, window), at=end)
    }
    requests = sum(by_outcome.values())
    failed = sum(count for outcome, count in by_outcome.items() if outcome != "ok")
    p99 = [s.value for s in prometheus.query(P99_QUERY % (matchers, window), at=end)]
    buckets = sorted(
        (float(sample.labels["le"]), sample.value)
        for sample in prometheus.query(SCORES_QUERY % (matchers, window), at=end)
        if "le" in sample.labels
    )
    cumulative = np.maximum.accumulate(np.asarray([count for _le, count in buckets], float))
    counts = np.diff(cumulative, prepend=0.0) if len(cumulative) else None
    return Measurement(
        requests=requests,
        failed=failed,
        p99_ms=p99[0] * 1000.0 if p99 and math.isfinite(p99[0]) else None,
        score_counts=counts if counts is not None and counts.sum() > 0 else None,
    )


def evaluate(policy: CanaryPolicy, canary: Measurement, primary: Measurement) -> list[dict]:
    """Every check the policy asks for, on the two versions' figures."""
    checks = []
    if policy.error_rate is not None:
        checks += _ceiling_checks(
            "error_rate",
            "error_rate",
            "",
            canary.error_rate,
            primary.error_rate,
            policy.error_rate.ceilings(primary.error_rate),
            "the canary served no request: its error rate is unknown",
        )
    if policy.latency_p99_ms is not None:
        checks += _ceiling_checks(
            "latency_p99_ms",
            "p99_ms",
            " ms",
            canary.p99_ms,
            primary.p99_ms,
            policy.latency_p99_ms.ceilings(primary.p99_ms),
            "no successful canary request in the window: its p99 latency is unknown",
        )
    if policy.score_shift is not None:
        checks += _score_shift_checks(policy.score_shift, canary, primary)
    return checks


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
    failures = [check["rule"] for check in checks if not check["passed"]]
    if canary.requests < max(policy.min_requests, 1e-9):
        verdict = INCONCLUSIVE if final else _WAITING
        failures = [
            f"the canary served {_fmt(canary.requests)} requests in {end - start:.0f} s, "
            f"fewer than min_requests {_fmt(policy.min_requests)}: too few to judge"
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


def timeline(
    prometheus: PrometheusClient, target: CanaryTarget, start: float, end: float, step_s: float
) -> list[dict[str, Any]]:
    """Requests and failures of both versions per interval (at most `TIMELINE_ROWS`, each
    at least `step_s` long), for a person reading when a canary started to fail.

    From the raw counters at each interval's edges, so an interval shorter than a few scrape
    intervals still counts exactly (an `increase()` over it would hold too few samples).
    """
    resolution = max(step_s, (end - start) / TIMELINE_ROWS)
    if end - start < resolution:
        return []
    # Intervals end at `end`; what precedes the first whole one (less than one) is left out.
    first = end - math.floor((end - start) / resolution + 1e-9) * resolution
    rows: dict[float, dict[str, Any]] = {}
    for side, version in (("canary", target.canary_version), ("primary", target.primary_version)):
        promql = TOTALS_QUERY % selector(target, version)
        for sample in prometheus.query_range(promql, first, end, resolution):
            failed = sample.labels.get("outcome") != "ok"
            previous = 0.0  # a series that appears later started from 0
            for at, total in sample.points:
                count = total - previous if total >= previous else total  # a restart resets
                previous = total
                if at <= first:
                    continue  # the baseline
                row = rows.setdefault(at, {"time": at})
                row[f"{side}_requests"] = row.get(f"{side}_requests", 0.0) + count
                row[f"{side}_failed"] = row.get(f"{side}_failed", 0.0) + (count if failed else 0)
    return [rows[at] for at in sorted(rows)]


def decision_markdown(decision: CanaryDecision) -> str:
    """The decision as Markdown for the Kubeflow UI: verdict, reasons, checks, timeline."""
    target = decision.target
    verdict = decision.verdict.upper()
    lines = [
        f"## Canary analysis: {verdict} → {decision.action}",
        "",
        f"Model `{target.model_name}`: canary version **{target.canary_version}** against "
        f"primary version **{target.primary_version}**, {decision.end - decision.start:.0f} s "
        f"from {_clock(decision.start)} to {_clock(decision.end)} UTC.",
        "",
    ]
    if decision.reasons:
        lines += [f"- {reason}" for reason in decision.reasons] + [""]
    lines += [
        "| version | requests | failed | error rate | p99 latency |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for side, version in (("canary", target.canary_version), ("primary", target.primary_version)):
        figures: Measurement = getattr(decision, side)
        rate = "—" if figures.error_rate is None else _fmt(figures.error_rate)
        p99 = "—" if figures.p99_ms is None else f"{_fmt(figures.p99_ms)} ms"
        lines.append(
            f"| {side} ({version}) | {figures.requests:.0f} | {figures.failed:.0f} "
            f"| {rate} | {p99} |"
        )
    if decision.checks:
        lines += [
            "",
            "| check | metric | canary | primary | threshold | result | rule |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |",
        ]
        for check in decision.checks:
            result = "skipped" if check["skipped"] else ("pass" if check["passed"] else "**FAIL**")
            values = [
                "—" if check[key] is None else _fmt(check[key])
                for key in ("canary", "primary", "threshold")
            ]
            lines.append(
                f"| {check['check']} | {check['metric']} | {' | '.join(values)} | {result} "
                f"| {check['rule']} |"
            )
    if decision.timeline:
        lines += [
            "",
            "| until (UTC) | canary requests | canary error rate | primary requests "
            "| primary error rate |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in decision.timeline:
            cells = [_clock(row["time"])]
            for side in ("canary", "primary"):
                requests = row.get(f"{side}_requests", 0.0)
                failed = row.get(f"{side}_failed", 0.0)
                cells += [f"{requests:.0f}", _fmt(failed / requests) if requests > 0 else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


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
    bake_end = start + policy.bake_time_s
    due = min(start + policy.step_s, bake_end)
    while True:
        now = clock()
        if now < due:
            sleep(due - now)
            now = clock()
        decision = analyze_window(prometheus, policy, target, start, now, final=now >= bake_end)
        if decision.verdict != _WAITING:
            return decision
        due = min(due + policy.step_s, bake_end)


def _check(
    check: str,
    metric: str,
    canary: float | None,
    primary: float | None,
    threshold: float | None,
    rule: str,
    passed: bool,
    skipped: bool = False,
) -> dict[str, Any]:
    return {
        "check": check,
        "metric": metric,
        "canary": canary,
        "primary": primary,
        "threshold": threshold,
        "rule": rule,
        "passed": passed,
        "skipped": skipped,
    }


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _ceiling_checks(
    check: str,
    metric: str,
    unit: str,
    canary: float | None,
    primary: float | None,
    ceilings: list[tuple[str, float | None]],
    missing: str,
) -> list[dict[str, Any]]:
    """`canary <= limit` for each (name, limit); a None limit is relative to a primary that
    served nothing, so it is skipped."""
    checks = []
    for name, limit in ceilings:
        if limit is None:
            rule = f"skipped ({name}): the primary served nothing to compare with"
            checks.append(_check(check, metric, canary, primary, None, rule, True, skipped=True))
        elif canary is None:
            checks.append(_check(check, metric, None, primary, limit, missing, passed=False))
        else:
            ok = canary <= limit + _SLACK
            rule = f"{metric} {_fmt(canary)}{unit} {'<=' if ok else '>'} {name} {_fmt(limit)}{unit}"
            checks.append(_check(check, metric, canary, primary, limit, rule, passed=ok))
    return checks


def _score_shift_checks(
    rule: ScoreShiftRule, canary: Measurement, primary: Measurement
) -> list[dict[str, Any]]:
    asked = [(name, limit) for name, limit in (("psi", rule.psi_max), ("ks", rule.ks_max))]
    asked = [(name, limit) for name, limit in asked if limit is not None]
    if primary.score_counts is None:
        rule_text = "skipped: the primary scored nothing to compare with"
        return [
            _check("score_shift", name, None, None, None, rule_text, True, skipped=True)
            for name, _limit in asked
        ]
    if canary.score_counts is None:
        rule_text = "the canary scored nothing in the window: its score shift is unknown"
        return [
            _check("score_shift", name, None, None, limit, rule_text, passed=False)
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
        applied = max(limit, noise[name])
        ok = values[name] <= applied + _SLACK
        source = " (small-sample noise bound)" if noise[name] > limit else ""
        rule_text = (
            f"score {name} {_fmt(values[name])} {'<=' if ok else '>'} {_fmt(applied)}{source} "
            f"between {n:.0f} canary and {m:.0f} primary scores"
        )
        checks.append(_check("score_shift", name, values[name], None, applied, rule_text, ok))
    return checks
