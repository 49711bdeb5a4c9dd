"""One figure of the candidate against the champion's, under a `ChampionRule`.

The gate compares whole-test metrics and, per slice, each group's metrics with the champion's
on the same rows; both must word and judge a regression alike, so both call `regression_check`.
"""

from __future__ import annotations

from ctloop.components.checks import Check, at_most, format_number
from ctloop.components.gate.policy import ChampionRule


def regression_check(
    kind: str, subject: str, value: float, baseline: float, rule: ChampionRule
) -> Check:
    """`value` may be worse than `baseline` by the rule's allowance (the smaller of the
    absolute and the relative one when both are given; 0 when neither is)."""
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
            f"{subject} {format_number(value)} is {format_number(worse_by)} worse than "
            f"champion {format_number(baseline)} (allowed {format_number(allowed)}, "
            f"{rule.direction} is better)"
        )
    else:
        text = (
            f"{subject} {format_number(value)} is not worse than champion {format_number(baseline)}"
        )
    return Check(kind, subject, value, limit, text, at_most(worse_by, allowed))
