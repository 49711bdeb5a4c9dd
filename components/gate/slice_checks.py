"""The gate's checks per slice: each group's floor, its regression against the champion's same
group, and the largest gap between the groups of a column (fairness).

The figures come from the evaluation's "slices" (`ctloop.components.evaluate.slices`); this
module only judges them, so a recorded evaluation can be judged again under another policy.
Every check's subject names the slice: "<column>=<group>:<metric>" for a group's figure,
"<column>:<metric>_gap" for a gap, so a failure says which group was served worse.

A group smaller than the policy's `min_rows` is reported as a skipped check ("too small to
judge: 12 rows < 30"), never failed: a handful of rows says nothing about a group. A figure
the group cannot have (ROC AUC of a group holding one class, TPR without positives) is skipped
too, as is a gap with fewer than two judged groups, unless the policy's `unjudged_gap` is
"fail". What cannot be judged at all fails: a slice column the evaluation did not slice, or
sliced with another `min_rows` or number of bins, would otherwise turn a rule off silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ctloop.components.checks import Check, at_most, format_number, is_finite_number, limit_check
from ctloop.components.gate.comparison import regression_check
from ctloop.components.gate.policy import SlicePolicy


def slice_checks(policy: SlicePolicy | None, slices: Mapping[str, Any] | None) -> list[Check]:
    """Every check of the policy's `slices` section against the evaluation's "slices".

    Args:
        policy: The gate policy's section; None (no section) gives no checks.
        slices: The evaluation's "slices": "policy" (the section it sliced by), "candidate"
            and "champion" (None without a champion) lists of per-column results.
    """
    if policy is None:
        return []
    evaluated = slices if isinstance(slices, Mapping) else {}
    candidate = _by_column(evaluated.get("candidate"))
    champion = None if evaluated.get("champion") is None else _by_column(evaluated.get("champion"))
    checks = _sliced_otherwise(policy, evaluated.get("policy"), candidate)
    unusable = {check.subject for check in checks}
    for column in policy.columns:
        if column in unusable:
            continue
        groups = candidate[column]["slices"]
        checks += _floor_checks(policy, column, groups)
        checks += _regression_checks(policy, column, groups, champion)
        checks += _gap_checks(policy, column, candidate[column]["gaps"])
    return checks


def _by_column(result: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(result, Sequence):
        return {}
    return {c["column"]: c for c in result if isinstance(c, Mapping) and "column" in c}


def _sliced_otherwise(
    policy: SlicePolicy, recorded: Any, candidate: Mapping[str, Any]
) -> list[Check]:
    """Failed checks for what the evaluation did not slice the way the policy asks."""
    recorded = recorded if isinstance(recorded, Mapping) else {}
    checks = []
    if recorded.get("min_rows") != policy.min_rows:
        text = (
            f"the evaluation judged groups of min_rows {recorded.get('min_rows')!r}, the "
            f"policy asks {policy.min_rows}: evaluate with the gate's policy"
        )
        checks.append(
            Check("slice", "slices.min_rows", recorded.get("min_rows"), None, text, False)
        )
    numeric = recorded.get("numeric") if isinstance(recorded.get("numeric"), Mapping) else {}
    for column in policy.columns:
        asked = "categorical" if column in policy.categorical else "numeric"
        if column not in candidate:
            text = (
                f"the evaluation has no slices of column {column!r}: evaluate with the "
                "gate's policy"
            )
        elif candidate[column].get("kind") != asked:
            text = (
                f"the evaluation sliced column {column!r} as "
                f"{candidate[column].get('kind')}, the policy asks {asked}"
            )
        elif asked == "numeric" and numeric.get(column) != policy.numeric[column]:
            text = (
                f"the evaluation cut column {column!r} into {numeric.get(column)!r} bins, "
                f"the policy asks {policy.numeric[column]}"
            )
        else:
            continue
        checks.append(Check("slice", column, None, None, text, passed=False))
    return checks


def _too_small(policy: SlicePolicy, kind: str, subject: str, group: Mapping[str, Any]) -> Check:
    text = f"too small to judge: {group['rows']} rows < {policy.min_rows}"
    return Check(kind, subject, None, None, text, True, skipped=True)


def _undefined(kind: str, subject: str, metric: str) -> Check:
    text = f"skipped: {metric} is undefined in this group (it holds one class only)"
    return Check(kind, subject, None, None, text, True, skipped=True)


def _floor_checks(
    policy: SlicePolicy, column: str, groups: Sequence[Mapping[str, Any]]
) -> list[Check]:
    checks = []
    for group in groups:
        for metric, bounds in policy.thresholds.items():
            subject = f"{column}={group['group']}:{metric}"
            if group["rows"] < policy.min_rows:
                checks.append(_too_small(policy, "slice", subject, group))
                continue
            value = group.get(metric)
            if not is_finite_number(value):
                checks.append(_undefined("slice", subject, metric))
                continue
            for side, limit in (("min", bounds.min), ("max", bounds.max)):
                if limit is not None:
                    checks.append(
                        limit_check(
                            "slice", subject, value, limit, upper=side == "max", limit_name=side
                        )
                    )
    return checks


def _regression_checks(
    policy: SlicePolicy,
    column: str,
    groups: Sequence[Mapping[str, Any]],
    champion: Mapping[str, Mapping[str, Any]] | None,
) -> list[Check]:
    rules = policy.champion_comparison
    if not rules:
        return []
    if champion is None:
        text = "skipped: no champion yet"
        return [
            Check("slice_regression", f"{column}:{metric}", None, None, text, True, skipped=True)
            for metric in rules
        ]
    baselines = {g["group"]: g for g in champion.get(column, {}).get("slices", [])}
    checks = []
    for group in groups:
        for metric, rule in rules.items():
            subject = f"{column}={group['group']}:{metric}"
            if group["rows"] < policy.min_rows:
                checks.append(_too_small(policy, "slice_regression", subject, group))
                continue
            value = group.get(metric)
            baseline = baselines.get(group["group"], {}).get(metric)
            if not (is_finite_number(value) and is_finite_number(baseline)):
                checks.append(_undefined("slice_regression", subject, metric))
                continue
            checks.append(regression_check("slice_regression", subject, value, baseline, rule))
    return checks


def _gap_checks(policy: SlicePolicy, column: str, gaps: Mapping[str, Any]) -> list[Check]:
    checks = []
    for metric, bound in policy.max_gap.get(column, {}).items():
        subject = f"{column}:{metric}_gap"
        gap = gaps.get(metric)
        if not isinstance(gap, Mapping):
            fail = policy.unjudged_gap == "fail"
            text = (
                f"{'cannot be judged (unjudged_gap: fail)' if fail else 'skipped'}: fewer than "
                f"two groups of {column!r} have {policy.min_rows} rows or more and a defined "
                f"{metric}"
            )
            checks.append(Check("fairness", subject, None, bound, text, not fail, skipped=not fail))
            continue
        passed = at_most(gap["gap"], bound)
        text = (
            f"{metric} gap {format_number(gap['gap'])} {'<=' if passed else '>'} max "
            f"{format_number(bound)}: lowest {column}={gap['low_group']} "
            f"({format_number(gap['low_value'])}), highest {column}={gap['high_group']} "
            f"({format_number(gap['high_value'])})"
        )
        checks.append(Check("fairness", subject, gap["gap"], bound, text, passed))
    return checks
