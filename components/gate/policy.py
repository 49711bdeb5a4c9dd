"""The quality gate: a policy written as data, and the decision it yields for a candidate.

Modelled on TFX Evaluator's blessing: value thresholds on the candidate's own metrics, change
thresholds (with a direction and a tolerance) against the current champion, and a scoring
latency budget. The decision records every check with its value and threshold, so the
Kubeflow UI can say exactly why a candidate was blocked.

Policy JSON (every section optional; metric names are the keys of the evaluation's metrics)::

    {
      "thresholds": {                      # value thresholds: at least one of min / max
        "roc_auc":  {"min": 0.7},
        "log_loss": {"max": 0.6}
      },
      "champion_comparison": {             # change thresholds against the champion
        "roc_auc":  {"direction": "higher", "max_regression": 0.01},
        "log_loss": {"direction": "lower",  "max_regression": 0.02},
        "rmse":     {"direction": "lower",  "max_regression_relative": 0.02}
      },
      "latency": {"p95_ms_max": 50.0, "p50_ms_max": 20.0}
    }

`direction` says which way is better. `max_regression` is the absolute amount the candidate
may be worse than the champion, `max_regression_relative` the same as a fraction of the
champion's value; both are >= 0, both must hold when both are given, and 0 applies when
neither is. Latency is `scoring_latency`'s p50/p95 in milliseconds for a 1000-row batch.

A metric named in the policy but absent from the candidate's metrics fails its check: a
renamed metric must not turn a gate off silently. Without a champion the comparison checks
are recorded as skipped; without a latency measurement a latency rule fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.components.json_parameter import (
    json_number,
    json_object,
    parse_json_object,
    reject_unknown_keys,
)

# Float noise (0.8 - 0.795 > 0.005) must not fail a candidate that sits exactly on a limit.
_SLACK = 1e-12

DEFAULT_GATE_POLICY: dict[str, dict[str, Any]] = {
    "binary": {
        "thresholds": {"roc_auc": {"min": 0.6}, "log_loss": {"max": 0.7}},
        "champion_comparison": {"roc_auc": {"direction": "higher", "max_regression": 0.005}},
        "latency": {"p95_ms_max": 100.0},
    },
    "regression": {
        "champion_comparison": {"rmse": {"direction": "lower", "max_regression_relative": 0.02}},
        "latency": {"p95_ms_max": 100.0},
    },
}
"""Default policy per task, as the JSON a pipeline parameter carries (`json.dumps` it)."""


class GatePolicyError(ValueError):
    """A gate policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class Bounds:
    """Value thresholds of one metric."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ChampionRule:
    """How much worse than the champion one metric may get."""

    direction: str
    max_regression: float | None = None
    max_regression_relative: float | None = None


@dataclass(frozen=True)
class LatencyRule:
    """Scoring latency budget in milliseconds."""

    p50_ms_max: float | None = None
    p95_ms_max: float | None = None


@dataclass(frozen=True)
class GatePolicy:
    """A parsed, checked gate policy."""

    thresholds: dict[str, Bounds]
    champion_comparison: dict[str, ChampionRule]
    latency: LatencyRule | None = None


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict; `failures` is the subset of `checks` that did not pass."""

    passed: bool
    failures: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    champion_compared: bool


_RELATION = {("min", True): ">=", ("min", False): "<", ("max", True): "<=", ("max", False): ">"}
_SECTIONS = ("thresholds", "champion_comparison", "latency")
_DIRECTIONS = ("higher", "lower")


def parse_gate_policy(text: str) -> GatePolicy:
    """Parse and check a policy JSON text (shape in the module docstring).

    Raises:
        GatePolicyError: naming the section, metric, key and value that break the shape.
    """
    root = parse_json_object(text, "gate policy", GatePolicyError)
    reject_unknown_keys(root, _SECTIONS, "gate policy", GatePolicyError)
    thresholds = {
        metric: _bounds(metric, rule)
        for metric, rule in json_object(
            root.get("thresholds", {}), "'thresholds'", GatePolicyError
        ).items()
    }
    comparison = {
        metric: _champion_rule(metric, rule)
        for metric, rule in json_object(
            root.get("champion_comparison", {}), "'champion_comparison'", GatePolicyError
        ).items()
    }
    latency = None
    if "latency" in root:
        section = json_object(root["latency"], "'latency'", GatePolicyError)
        reject_unknown_keys(section, ("p50_ms_max", "p95_ms_max"), "'latency'", GatePolicyError)
        latency = LatencyRule(
            p50_ms_max=_number(section, "p50_ms_max", "latency", minimum=0.0),
            p95_ms_max=_number(section, "p95_ms_max", "latency", minimum=0.0),
        )
    return GatePolicy(thresholds=thresholds, champion_comparison=comparison, latency=latency)


def _number(
    section: Mapping[str, Any], key: str, where: str, *, minimum: float = -math.inf
) -> float | None:
    if key not in section:
        return None
    return json_number(section[key], f"{where}: {key!r}", GatePolicyError, low=minimum)


def _bounds(metric: str, rule: Any) -> Bounds:
    where = f"thresholds.{metric}"
    rule = json_object(rule, where, GatePolicyError)
    reject_unknown_keys(rule, ("min", "max"), where, GatePolicyError)
    bounds = Bounds(min=_number(rule, "min", where), max=_number(rule, "max", where))
    if bounds.min is None and bounds.max is None:
        raise GatePolicyError(f"{where} needs 'min' or 'max' (or both)")
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        raise GatePolicyError(f"{where}: min {bounds.min:g} is greater than max {bounds.max:g}")
    return bounds


def _champion_rule(metric: str, rule: Any) -> ChampionRule:
    where = f"champion_comparison.{metric}"
    rule = json_object(rule, where, GatePolicyError)
    reject_unknown_keys(
        rule, ("direction", "max_regression", "max_regression_relative"), where, GatePolicyError
    )
    direction = rule.get("direction")
    if direction not in _DIRECTIONS:
        raise GatePolicyError(
            f'{where}: \'direction\' = {json.dumps(direction)} must be "higher" or "lower" '
            "(which way the metric improves)"
        )
    return ChampionRule(
        direction=direction,
        max_regression=_number(rule, "max_regression", where, minimum=0.0),
        max_regression_relative=_number(rule, "max_regression_relative", where, minimum=0.0),
    )


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _check(
    kind: str,
    metric: str,
    value: Any,
    threshold: Any,
    rule: str,
    passed: bool,
    skipped: bool = False,
) -> dict[str, Any]:
    return {
        "check": kind,
        "metric": metric,
        "value": value,
        "threshold": threshold,
        "rule": rule,
        "passed": passed,
        "skipped": skipped,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _threshold_checks(policy: GatePolicy, candidate: Mapping[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for metric, bounds in policy.thresholds.items():
        value = candidate.get(metric)
        for side, limit in (("min", bounds.min), ("max", bounds.max)):
            if limit is None:
                continue
            if not _finite(value):
                rule = (
                    f"{metric} is {_absent(value)} in the candidate's metrics "
                    f"({side} {_fmt(limit)})"
                )
                checks.append(_check("threshold", metric, value, limit, rule, passed=False))
                continue
            ok = value >= limit - _SLACK if side == "min" else value <= limit + _SLACK
            rule = f"{metric} {_fmt(value)} {_RELATION[side, ok]} {side} {_fmt(limit)}"
            checks.append(_check("threshold", metric, value, limit, rule, passed=ok))
    return checks


def _absent(value: Any) -> str:
    return "missing" if value is None else f"not a finite number ({value!r})"


def _comparison_checks(
    policy: GatePolicy, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    checks = []
    for metric, rule in policy.champion_comparison.items():
        value = candidate.get(metric)
        if champion is None:
            checks.append(
                _check(
                    "champion_comparison",
                    metric,
                    value,
                    None,
                    "skipped: no champion yet",
                    passed=True,
                    skipped=True,
                )
            )
            continue
        baseline = champion.get(metric)
        if not _finite(value):
            text = f"{metric} is {_absent(value)} in the candidate's metrics"
            checks.append(_check("champion_comparison", metric, value, None, text, passed=False))
            continue
        if not _finite(baseline):
            text = f"skipped: champion has no {metric} to compare with"
            checks.append(
                _check("champion_comparison", metric, value, None, text, passed=True, skipped=True)
            )
            continue
        allowances = [
            a
            for a in (
                rule.max_regression,
                None
                if rule.max_regression_relative is None
                else rule.max_regression_relative * abs(baseline),
            )
            if a is not None
        ]
        allowed = min(allowances, default=0.0)
        higher = rule.direction == "higher"
        worse_by = baseline - value if higher else value - baseline
        limit = baseline - allowed if higher else baseline + allowed
        ok = worse_by <= allowed + _SLACK
        if worse_by > 0:
            text = (
                f"{metric} {_fmt(value)} is {_fmt(worse_by)} worse than champion "
                f"{_fmt(baseline)} (allowed {_fmt(allowed)}, {rule.direction} is better)"
            )
        else:
            text = f"{metric} {_fmt(value)} is not worse than champion {_fmt(baseline)}"
        checks.append(_check("champion_comparison", metric, value, limit, text, passed=ok))
    return checks


def _latency_checks(policy: GatePolicy, latency: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if policy.latency is None:
        return []
    checks = []
    for metric, limit in (
        ("p50_ms", policy.latency.p50_ms_max),
        ("p95_ms", policy.latency.p95_ms_max),
    ):
        if limit is None:
            continue
        value = None if latency is None else latency.get(metric)
        if not _finite(value):
            text = f"{metric} scoring latency is {_absent(value)} (max {_fmt(limit)} ms)"
            checks.append(_check("latency", metric, value, limit, text, passed=False))
            continue
        ok = value <= limit + _SLACK
        text = f"{metric} {_fmt(value)} ms {'<=' if ok else '>'} max {_fmt(limit)} ms"
        checks.append(_check("latency", metric, value, limit, text, passed=ok))
    return checks


def evaluate_gate(
    policy: GatePolicy,
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    latency: Mapping[str, Any] | None,
) -> GateDecision:
    """Apply the policy to the candidate's metrics (and the champion's, when there is one).

    Args:
        policy: From `parse_gate_policy`.
        candidate: The candidate's evaluation metrics (name -> value).
        champion: The champion's metrics on the same test data, or None when there is none.
        latency: The candidate's `scoring_latency` result, or None when it was not measured.
    """
    checks = [
        *_threshold_checks(policy, candidate),
        *_comparison_checks(policy, candidate, champion),
        *_latency_checks(policy, latency),
    ]
    failures = [check for check in checks if not check["passed"]]
    return GateDecision(
        passed=not failures,
        failures=failures,
        checks=checks,
        champion_compared=champion is not None,
    )


def decide_from_evaluation(policy_text: str, evaluation: Mapping[str, Any]) -> GateDecision:
    """The gate step's whole job: parse the policy (blank: the task's default) and apply it.

    Args:
        policy_text: Policy JSON, or blank for `DEFAULT_GATE_POLICY[evaluation["task"]]`.
        evaluation: The evaluation step's JSON: "task", "candidate", "champion" (or null)
            and "latency" (or absent).
    """
    if policy_text.strip():
        policy = parse_gate_policy(policy_text)
    else:
        task = evaluation.get("task")
        if task not in DEFAULT_GATE_POLICY:
            raise GatePolicyError(
                f"no policy given and evaluation task {task!r} has no default; "
                f"defaults exist for {', '.join(DEFAULT_GATE_POLICY)}"
            )
        policy = parse_gate_policy(json.dumps(DEFAULT_GATE_POLICY[task]))
    candidate = evaluation.get("candidate")
    if not isinstance(candidate, Mapping):
        raise GatePolicyError("evaluation has no 'candidate' metrics object to gate")
    return evaluate_gate(policy, candidate, evaluation.get("champion"), evaluation.get("latency"))


def decision_markdown(decision: GateDecision) -> str:
    """The decision as Markdown for the Kubeflow UI: verdict first, then every check."""
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"## Quality gate {verdict}", ""]
    if decision.failures:
        lines.append(f"{len(decision.failures)} check(s) failed:")
        lines += [f"- **{f['check']}**: {f['rule']}" for f in decision.failures]
        lines.append("")
    if not decision.champion_compared:
        lines += ["No champion yet: the comparison with a champion was skipped.", ""]
    lines += [
        "| check | metric | value | threshold | result | rule |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for check in decision.checks:
        result = "skipped" if check["skipped"] else ("pass" if check["passed"] else "**FAIL**")
        value = "—" if not _finite(check["value"]) else _fmt(check["value"])
        threshold = "—" if check["threshold"] is None else _fmt(check["threshold"])
        lines.append(
            f"| {check['check']} | {check['metric']} | {value} | {threshold} | {result} "
            f"| {check['rule']} |"
        )
    return "\n".join(lines) + "\n"
