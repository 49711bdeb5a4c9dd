"""The A/B decision: each challenger against the control, and what the experiment does next.

Each challenger variant is compared with the control on the policy's metric by the always-valid
test of `ctloop.components.experiment.sequential`, at alpha divided by the number of
challengers (Bonferroni), so the chance of any false verdict over all comparisons and all
checks together stays at most the policy's alpha. A comparison's verdict is `better` or
`worse` when its interval for (challenger - control) lies wholly on one side of 0 (which side
is better is the policy's `better`), `undecided` when it holds 0, and `too_few_rows` while
either side has fewer than `min_labelled_rows` labelled rows.

The experiment's action:
- `promote` when a challenger is better: the winner is the better challenger with the best
  estimate (not a claim that it beats the other better ones);
- `rollback` when every challenger is worse: the control wins and the challengers go;
- `continue` otherwise: keep the traffic split and check again as labels arrive (a challenger
  that is already worse is named in the reasons, so it can be removed early).

On record (`ab_record`), a decision pins what the test read of the tables, not the tables: per
variant its logged, labelled and unlabelled rows and the labelled rows' summary (rows, mean,
sample variance of the metric), which is all the mSPRT uses; the analysis is stateless, so
each run is one look and one record. `replay_ab` judges those summaries again with any policy
on the same metric (`alpha`, `min_labelled_rows`, `mixing_variance`, `better` may change;
another metric or outcome column would need the rows again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ctloop.components.checks import Check, format_number, limit_check
from ctloop.components.decisions.record import DecisionRecord, DecisionRecordError, new_record
from ctloop.components.experiment.observations import (
    ExperimentInputError,
    Observations,
    read_observations,
)
from ctloop.components.experiment.policy import (
    HIGHER,
    ExperimentPolicy,
    ExperimentPolicyError,
    parse_experiment_policy,
)
from ctloop.components.experiment.sequential import Summary, always_valid_interval, summarize

PROMOTE = "promote"
ROLLBACK = "rollback"
CONTINUE = "continue"

BETTER = "better"
WORSE = "worse"
UNDECIDED = "undecided"
TOO_FEW_ROWS = "too_few_rows"


@dataclass(frozen=True)
class Comparison:
    """One challenger against the control: the difference (challenger - control) and verdict."""

    variant: str
    verdict: str
    difference: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    """Always valid: the chance of a difference this large at any look if there were none."""


@dataclass(frozen=True)
class ABDecision:
    """The experiment's action, its winner, and everything it rests on."""

    action: str
    """`promote`, `rollback` or `continue`."""
    winner: str
    """The promoted challenger, the control on `rollback`, empty on `continue`."""
    control: str
    policy: ExperimentPolicy
    alpha_per_comparison: float
    observations: Observations
    """What the join found (the report's tables)."""
    summaries: dict[str, Summary]
    """Each variant with at least two labelled rows: its metric's mean and variance."""
    comparisons: list[Comparison]
    checks: list[Check]
    """`min_labelled_rows` for each variant."""
    reasons: list[str]


def run_ab_analysis(
    prediction_log_uri: str, labels_uri: str, control_variant: str, policy_text: str = ""
) -> ABDecision:
    """Read the prediction log and the labels, compare every challenger with the control.

    Raises:
        ExperimentPolicyError: the policy text is not a valid policy.
        ExperimentInputError: a table lacks a column or holds values the metric cannot use,
            the control variant is not in the log, or the log has no other variant.
        DatasetError: a table cannot be read.
    """
    policy = parse_experiment_policy(policy_text)
    observations = read_observations(prediction_log_uri, labels_uri, policy)
    return decide(observations, control_variant, policy, log_name=prediction_log_uri)


def decide(
    observations: Observations,
    control: str,
    policy: ExperimentPolicy,
    *,
    log_name: str = "the prediction log",
) -> ABDecision:
    """The decision on `observations` with `control` as the control variant (module docstring)."""
    variants = observations.variants
    if control not in variants:
        raise ExperimentInputError(
            f"control variant {control!r} is not in {log_name}; its variants are {sorted(variants)}"
        )
    challengers = [variant for variant in sorted(variants) if variant != control]
    if not challengers:
        raise ExperimentInputError(
            f"{log_name} holds only the control variant {control!r}: no challenger to compare"
        )
    summaries = {
        name: summarize(rows.values) for name, rows in variants.items() if rows.labelled >= 2
    }
    labelled = {name: rows.labelled for name, rows in variants.items()}
    return ABDecision(
        control=control,
        policy=policy,
        observations=observations,
        summaries=summaries,
        **_judge(labelled, summaries, control, policy),
    )


def ab_record(
    decision: ABDecision,
    *,
    policy_text: str,
    prediction_log_uri: str = "",
    labels_uri: str = "",
    registered_model: str = "",
    kfp_run_id: str = "",
) -> DecisionRecord:
    """The record of `decision`: per variant its rows and the summary the test used, the
    control, the metric, the policy text as given, the action and the winner.

    Its subject is the version the decision is about: the winner's on `promote`, otherwise the
    only challenger's (none when there are several); a variant's version is the one its rows
    were logged with (on a cluster each variant is named for it anyway). The tables' URIs are
    kept for a person; replay never reads them.
    """
    observations = decision.observations
    variants = observations.variants
    challengers = [name for name in variants if name != decision.control]
    about = decision.winner if decision.action == PROMOTE else ""
    if not about and len(challengers) == 1:
        about = challengers[0]
    versions = variants[about].model_versions if about else ()
    inputs: dict[str, Any] = {
        "control": decision.control,
        "metric": decision.policy.metric,
        "outcome_column": decision.policy.outcome_column,
        "variants": {
            name: {
                "model_versions": list(rows.model_versions),
                "logged": rows.logged,
                "labelled": rows.labelled,
                "unlabelled": rows.unlabelled,
                "summary": (
                    asdict(decision.summaries[name]) if name in decision.summaries else None
                ),
            }
            for name, rows in variants.items()
        },
        "labels_without_prediction": observations.labels_without_prediction,
        "empty_labels": observations.empty_labels,
        "logged_more_than_once": observations.logged_more_than_once,
        "prediction_log_uri": prediction_log_uri,
        "labels_uri": labels_uri,
    }
    return new_record(
        "ab",
        subject={
            "registered_model": registered_model,
            "model_version": versions[0] if len(versions) == 1 else None,
            "kfp_run_id": kfp_run_id,
        },
        inputs=inputs,
        policy=policy_text,
        outcome={"action": decision.action, "winner": decision.winner},
        reasons=decision.reasons,
    )


def replay_ab(inputs: dict[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Judge an A/B record's pinned summaries again with `policy` (a policy text; blank: the
    running code's default): (outcome, reasons).

    Raises:
        ExperimentPolicyError: `policy` is not a policy, or judges another metric or outcome
            column than the one the summaries are of.
        DecisionRecordError: an input is missing or malformed.
    """
    parsed = parse_experiment_policy(policy)
    try:
        control, metric, column = (inputs[k] for k in ("control", "metric", "outcome_column"))
        variants = inputs["variants"]
        labelled = {name: int(variant["labelled"]) for name, variant in variants.items()}
        summaries = {
            name: Summary(**variant["summary"])
            for name, variant in variants.items()
            if variant["summary"] is not None
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DecisionRecordError(
            f"ab record: an input is missing or malformed: {type(error).__name__} {error}"
        ) from None
    if control not in labelled or len(labelled) < 2:
        raise DecisionRecordError(
            f"ab record: variants {sorted(labelled)} need the control {control!r} and a challenger"
        )
    if (parsed.metric, parsed.outcome_column) != (metric, column):
        raise ExperimentPolicyError(
            f"experiment policy: metric {parsed.metric!r} of {parsed.outcome_column!r} is not "
            f"the record's {metric!r} of {column!r}: its summaries cannot judge another metric"
        )
    judged = _judge(labelled, summaries, control, parsed)
    return {"action": judged["action"], "winner": judged["winner"]}, judged["reasons"]


def _judge(
    labelled: dict[str, int], summaries: dict[str, Summary], control: str, policy: ExperimentPolicy
) -> dict[str, Any]:
    """The decision's fields from each variant's labelled rows and summaries: the action,
    winner, alpha per comparison, comparisons, checks and reasons."""
    challengers = [variant for variant in sorted(labelled) if variant != control]
    alpha = policy.alpha / len(challengers)
    checks = [
        limit_check(
            "sample_size",
            name,
            float(labelled[name]),
            float(policy.min_labelled_rows),
            upper=False,
            label=f"{name} labelled rows",
            limit_name="min_labelled_rows",
        )
        for name in (control, *challengers)
    ]
    enough = {check.subject for check in checks if check.passed}
    comparisons = [
        _compare(summaries[control], summaries[name], name, policy, alpha)
        if control in enough and name in enough
        else Comparison(name, TOO_FEW_ROWS)
        for name in challengers
    ]
    action, winner = _action(comparisons, control, policy)
    return {
        "action": action,
        "winner": winner,
        "alpha_per_comparison": alpha,
        "comparisons": comparisons,
        "checks": checks,
        "reasons": _reasons(action, winner, control, comparisons, checks, policy),
    }


def _compare(
    control: Summary, challenger: Summary, name: str, policy: ExperimentPolicy, alpha: float
) -> Comparison:
    interval = always_valid_interval(
        control.rows,
        control.mean,
        control.variance,
        challenger.rows,
        challenger.mean,
        challenger.variance,
        alpha=alpha,
        mixing_variance=policy.mixing_variance,
    )
    lower, upper = float(interval.lower), float(interval.upper)
    sign = 1.0 if policy.better == HIGHER else -1.0
    if sign * lower > 0 and sign * upper > 0:
        verdict = BETTER
    elif sign * lower < 0 and sign * upper < 0:
        verdict = WORSE
    else:
        verdict = UNDECIDED
    return Comparison(
        name, verdict, float(interval.difference), lower, upper, float(interval.p_value)
    )


def _action(
    comparisons: list[Comparison], control: str, policy: ExperimentPolicy
) -> tuple[str, str]:
    better = [comparison for comparison in comparisons if comparison.verdict == BETTER]
    if better:
        sign = 1.0 if policy.better == HIGHER else -1.0
        best = max(better, key=lambda comparison: sign * comparison.difference)
        return PROMOTE, best.variant
    if all(comparison.verdict == WORSE for comparison in comparisons):
        return ROLLBACK, control
    return CONTINUE, ""


def _reasons(
    action: str,
    winner: str,
    control: str,
    comparisons: list[Comparison],
    checks: list[Check],
    policy: ExperimentPolicy,
) -> list[str]:
    reasons = [check.rule for check in checks if not check.passed]
    for comparison in comparisons:
        name = comparison.variant
        if comparison.verdict == TOO_FEW_ROWS:
            continue
        interval = (
            f"{format_number(comparison.difference)}, always-valid interval "
            f"[{format_number(comparison.lower)}, {format_number(comparison.upper)}]"
        )
        if comparison.verdict == UNDECIDED:
            reasons.append(f"{name} - {control}: {interval} holds 0, so neither is better yet")
        else:
            side = "better" if comparison.verdict == BETTER else "worse"
            removal = " (it can be removed now)" if side == "worse" and action == CONTINUE else ""
            reasons.append(
                f"{name} is {side} than {control} on {policy.metric_name} ({policy.better} is "
                f"better): {name} - {control} = {interval}{removal}"
            )
    if action == PROMOTE:
        reasons.append(f"promote {winner}: it takes all traffic")
    elif action == ROLLBACK:
        reasons.append(f"roll back: every challenger is worse than {control}, which keeps serving")
    else:
        reasons.append("continue: keep the split and check again when more labels arrive")
    return reasons
