"""The quality gate's decision: a parsed policy applied to a candidate's evaluation.

The decision records every check with its value and threshold (`ctloop.components.checks`),
so the Kubeflow UI can say exactly why a candidate was blocked.

A metric named in the policy but absent from the candidate's metrics fails its check: a
renamed metric must not turn a gate off silently. Without a champion the comparison checks
are recorded as skipped, and so is the latency comparison with the champion's scoring time;
without a measurement of the candidate's scoring time a latency rule fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.components.checks import (
    Check,
    at_most,
    checks_table,
    format_number,
    is_finite_number,
    limit_check,
    markdown_text,
)
from ctloop.components.gate.policy import GatePolicy, GatePolicyError, parse_gate_policy


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict; `failures` is the subset of `checks` that did not pass."""

    passed: bool
    failures: list[Check]
    checks: list[Check]
    champion_compared: bool


def _threshold_checks(policy: GatePolicy, candidate: Mapping[str, Any]) -> list[Check]:
    checks = []
    for metric, bounds in policy.thresholds.items():
        value = candidate.get(metric)
        for side, limit in (("min", bounds.min), ("max", bounds.max)):
            if limit is None:
                continue
            if not is_finite_number(value):
                rule = (
                    f"{metric} is {_absent(value)} in the candidate's metrics "
                    f"({side} {format_number(limit)})"
                )
                checks.append(Check("threshold", metric, value, limit, rule, passed=False))
                continue
            checks.append(
                limit_check("threshold", metric, value, limit, upper=side == "max", limit_name=side)
            )
    return checks


def _absent(value: Any) -> str:
    return "missing" if value is None else f"not a finite number ({value!r})"


def _comparison_checks(
    policy: GatePolicy, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None
) -> list[Check]:
    checks = []
    for metric, rule in policy.champion_comparison.items():
        value = candidate.get(metric)
        if champion is None:
            text = "skipped: no champion yet"
            checks.append(
                Check("champion_comparison", metric, value, None, text, True, skipped=True)
            )
            continue
        baseline = champion.get(metric)
        if not is_finite_number(value):
            text = f"{metric} is {_absent(value)} in the candidate's metrics"
            checks.append(Check("champion_comparison", metric, value, None, text, passed=False))
            continue
        if not is_finite_number(baseline):
            text = f"skipped: champion has no {metric} to compare with"
            checks.append(
                Check("champion_comparison", metric, value, None, text, True, skipped=True)
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
        if worse_by > 0:
            text = (
                f"{metric} {format_number(value)} is {format_number(worse_by)} worse than "
                f"champion {format_number(baseline)} (allowed {format_number(allowed)}, "
                f"{rule.direction} is better)"
            )
        else:
            text = (
                f"{metric} {format_number(value)} is not worse than champion "
                f"{format_number(baseline)}"
            )
        passed = at_most(worse_by, allowed)
        checks.append(Check("champion_comparison", metric, value, limit, text, passed))
    return checks


def _latency_checks(policy: GatePolicy, latency: Mapping[str, Any] | None) -> list[Check]:
    """The candidate's median scoring time against the champion's (timed beside it) and,
    when the policy sets one, an absolute budget."""
    rule = policy.latency
    if rule is None or (rule.max_ratio_to_champion is None and rule.median_ms_max is None):
        return []
    timings = latency if isinstance(latency, Mapping) else {}
    value = _median_ms(timings.get("candidate"))
    if not is_finite_number(value):
        text = f"the candidate's median scoring time is {_absent(value)} in the evaluation"
        return [Check("latency", "median_ms", value, None, text, passed=False)]
    champion = _median_ms(timings.get("champion"))
    checks, relative = [], "median_ms_vs_champion"
    if rule.max_ratio_to_champion is not None and not is_finite_number(champion):
        text = "skipped: no champion timed beside the candidate"
        checks.append(Check("latency", relative, value, None, text, True, skipped=True))
    elif rule.max_ratio_to_champion is not None:
        ratio = format_number(rule.max_ratio_to_champion)
        checks.append(
            limit_check(
                "latency",
                relative,
                value,
                rule.max_ratio_to_champion * champion,
                label="median_ms",
                limit_name=f"champion's {format_number(champion)} ms x {ratio} =",
                unit=" ms",
                baseline=champion,
            )
        )
    if rule.median_ms_max is not None:
        checks.append(
            limit_check(
                "latency", "median_ms", value, rule.median_ms_max, limit_name="max", unit=" ms"
            )
        )
    return checks


def _median_ms(timing: Any) -> Any:
    return timing.get("median_ms") if isinstance(timing, Mapping) else None


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
        latency: The evaluation's scoring times: "candidate" and "champion" (None without
            one), each {"median_ms", "min_ms"}; None when nothing was timed.
    """
    checks = [
        *_threshold_checks(policy, candidate),
        *_comparison_checks(policy, candidate, champion),
        *_latency_checks(policy, latency),
    ]
    failures = [check for check in checks if not check.passed]
    return GateDecision(
        passed=not failures,
        failures=failures,
        checks=checks,
        champion_compared=champion is not None,
    )


def run_gate(policy_text: str, evaluation: Mapping[str, Any]) -> GateDecision:
    """The gate step's whole job: parse the policy (blank: the task's default) and apply it.

    Args:
        policy_text: Policy JSON, or blank for `DEFAULT_GATE_POLICY[evaluation["task"]]`.
        evaluation: The evaluation step's JSON: "task", "candidate", "champion" (or null)
            and "latency" (or absent).
    """
    policy = parse_gate_policy(policy_text, evaluation.get("task"))
    candidate = evaluation.get("candidate")
    if not isinstance(candidate, Mapping):
        raise GatePolicyError("evaluation has no 'candidate' metrics object to gate")
    return evaluate_gate(policy, candidate, evaluation.get("champion"), evaluation.get("latency"))


def decision_markdown(decision: GateDecision) -> str:
    """The decision as Markdown for the Kubeflow UI: verdict first, then every check.

    Rules name metrics from the policy parameter, so they are escaped (`markdown_text`): the
    UI renders the Markdown's HTML, and a metric named `<img src=x onerror=...>` would run.
    """
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"## Quality gate {verdict}", ""]
    if decision.failures:
        lines.append(f"{len(decision.failures)} check(s) failed:")
        lines += [
            f"- **{markdown_text(failure.kind)}**: {markdown_text(failure.rule)}"
            for failure in decision.failures
        ]
        lines.append("")
    if not decision.champion_compared:
        lines += ["No champion yet: the comparison with a champion was skipped.", ""]
    lines.append(checks_table(decision.checks))
    return "\n".join(lines) + "\n"
