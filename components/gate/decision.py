"""The quality gate's decision: a parsed policy applied to a candidate's evaluation.

The decision records every check with its value and threshold (`ctloop.components.checks`),
so the Kubeflow UI can say exactly why a candidate was blocked.

A metric named in the policy but absent from the candidate's metrics fails its check: a
renamed metric must not turn a gate off silently. Without a champion the comparison checks
are recorded as skipped, and so is the latency comparison with the champion's scoring time;
without a measurement of the candidate's scoring time a latency rule fails. Slices are judged
in `ctloop.components.gate.slice_checks` and drawn in `ctloop.components.gate.slice_report`.

Each decision goes on record (`gate_record`, `ctloop.components.decisions.record`) with the
figures it read pinned, so `replay_gate` takes it again offline: with today's code, or with
another policy, to see which past candidates it would have let through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.components.checks import (
    Check,
    checks_table,
    format_number,
    is_finite_number,
    limit_check,
    markdown_text,
)
from ctloop.components.decisions.record import DecisionRecord, new_record
from ctloop.components.gate.comparison import regression_check
from ctloop.components.gate.policy import GatePolicy, GatePolicyError, parse_gate_policy
from ctloop.components.gate.slice_checks import slice_checks
from ctloop.components.gate.slice_report import slices_markdown

GATE_INPUTS = ("task", "rows", "candidate", "champion", "champion_version", "latency", "slices")
"""What of the evaluation a gate record pins: every figure the gate reads, and which champion
and how many rows they came from."""


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict; `failures` is the subset of `checks` that did not pass; `slices`
    is the evaluation's per-slice figures the checks judged (None without slices)."""

    passed: bool
    failures: list[Check]
    checks: list[Check]
    champion_compared: bool
    slices: Mapping[str, Any] | None = None


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
        checks.append(regression_check("champion_comparison", metric, value, baseline, rule))
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
    slices: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Apply the policy to the candidate's metrics (and the champion's, when there is one).

    Args:
        policy: From `parse_gate_policy`.
        candidate: The candidate's evaluation metrics (name -> value).
        champion: The champion's metrics on the same test data, or None when there is none.
        latency: The evaluation's scoring times: "candidate" and "champion" (None without
            one), each {"median_ms", "min_ms"}; None when nothing was timed.
        slices: The evaluation's "slices" (`slice_checks` judges them when the policy has a
            `slices` section); None when the evaluation sliced nothing.
    """
    checks = [
        *_threshold_checks(policy, candidate),
        *_comparison_checks(policy, candidate, champion),
        *_latency_checks(policy, latency),
        *slice_checks(policy.slices, slices),
    ]
    failures = [check for check in checks if not check.passed]
    return GateDecision(
        passed=not failures,
        failures=failures,
        checks=checks,
        champion_compared=champion is not None,
        slices=slices if policy.slices is not None else None,
    )


def run_gate(policy_text: str, evaluation: Mapping[str, Any]) -> GateDecision:
    """The gate step's whole job: parse the policy (blank: the task's default) and apply it.

    Args:
        policy_text: Policy JSON, or blank for `DEFAULT_GATE_POLICY[evaluation["task"]]`.
        evaluation: The evaluation step's JSON: "task", "candidate", "champion" (or null),
            "latency" and "slices" (each null or absent when not measured).
    """
    policy = parse_gate_policy(policy_text, evaluation.get("task"))
    candidate = evaluation.get("candidate")
    if not isinstance(candidate, Mapping):
        raise GatePolicyError("evaluation has no 'candidate' metrics object to gate")
    champion = evaluation.get("champion")
    if champion is not None and not isinstance(champion, Mapping):
        raise GatePolicyError("evaluation's 'champion' is not a metrics object (nor null)")
    return evaluate_gate(
        policy,
        candidate,
        champion,
        evaluation.get("latency"),
        evaluation.get("slices"),
    )


def gate_outcome(decision: GateDecision) -> tuple[dict[str, Any], list[str]]:
    """What a record keeps of a decision: the outcome replay compares ({"passed", "failures":
    sorted "kind subject"}), and the reasons a person reads (each failure's rule)."""
    outcome = {
        "passed": decision.passed,
        "failures": sorted(f"{f.kind} {f.subject}" for f in decision.failures),
    }
    if decision.failures:
        reasons = [f"{f.kind} {f.subject}: {f.rule}" for f in decision.failures]
    else:
        skipped = sum(check.skipped for check in decision.checks)
        reasons = [f"all {len(decision.checks)} checks passed ({skipped} skipped)"]
    return outcome, reasons


def gate_record(
    policy_text: str,
    evaluation: Mapping[str, Any],
    decision: GateDecision,
    *,
    registered_model: str = "",
    run_id: str = "",
    kfp_run_id: str = "",
) -> DecisionRecord:
    """The decision on record: the evaluation's figures the gate read (`GATE_INPUTS`), the
    policy text as given, the outcome and reasons.

    Args:
        policy_text: The gate's policy exactly as the step got it ("" for the default).
        evaluation: The evaluation the decision was taken on.
        decision: `run_gate(policy_text, evaluation)`.
        registered_model: The registered model the candidate is for.
        run_id: The candidate's MLflow run.
        kfp_run_id: The pipeline run that took the decision.
    """
    outcome, reasons = gate_outcome(decision)
    subject = {"registered_model": registered_model, "run_id": run_id, "kfp_run_id": kfp_run_id}
    return new_record(
        "gate",
        subject=subject,
        inputs={key: evaluation.get(key) for key in GATE_INPUTS},
        policy=policy_text,
        outcome=outcome,
        reasons=reasons,
    )


def replay_gate(inputs: Mapping[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Take a recorded gate decision again from its pinned inputs: (outcome, reasons).

    Raises:
        GatePolicyError: the policy, or the inputs' candidate metrics, are unusable.
    """
    return gate_outcome(run_gate(policy, inputs))


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
    report = slices_markdown(decision.slices)
    if report:
        lines += ["", report]
    return "\n".join(lines) + "\n"
