"""The canary decision and what was done about it, as Markdown for the Kubeflow UI.

Kept apart from the decision so that deciding stays a computation on figures, and a person's
view of it (tables, clock times, the per-interval timeline) can change without touching it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ctloop.components.canary.decision import CHAMPION, CanaryDecision
from ctloop.components.canary.measurement import Measurement
from ctloop.components.canary.policy import PROMOTE
from ctloop.components.checks import checks_table, format_number
from ctloop.components.decisions.record import DecisionRecord


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
        rate = "—" if figures.error_rate is None else format_number(figures.error_rate)
        p99 = "—" if figures.p99_ms is None else f"{format_number(figures.p99_ms)} ms"
        lines.append(
            f"| {side} ({version}) | {figures.requests:.0f} | {figures.failed:.0f} "
            f"| {rate} | {p99} |"
        )
    if decision.checks:
        lines += [
            "",
            checks_table(decision.checks, value_header="canary", baseline_header="primary"),
        ]
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
                cells += [
                    f"{requests:.0f}",
                    format_number(failed / requests) if requests > 0 else "—",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def outcome_markdown(
    decision: CanaryDecision | None, outcome: dict, analysis: DecisionRecord | None = None
) -> str:
    """The decision (when there was an analysis) and what was done (`outcome`, as
    `ctloop.components.canary.promotion` returns it), for the Kubeflow UI. Without a
    decision, `analysis` (its record) tells a first deployment from a retried step that found
    its earlier try's promotion or rollback done."""
    if decision is not None:
        head = decision_markdown(decision)
    elif analysis is not None and analysis.outcome.get("verdict") != CHAMPION:
        head = _found_done(outcome, analysis)
    else:
        head = (
            f"## Version {outcome['version']} serves all traffic\n\n"
            "No canary to analyse: it is the champion already.\n"
        )
    done = [f"- {change}" for change in outcome["changes"]] or ["- nothing: already done"]
    return "\n".join([head, "### What was done", "", *done]) + "\n"


def _found_done(outcome: dict, analysis: DecisionRecord) -> str:
    """A retried step's head: the action found done, and the analysis record behind it."""
    version, action = outcome["version"], outcome["action"]
    if action == PROMOTE:
        found, serving = "promoted", version
    else:
        found, serving = "rolled back", outcome["after"]["champion"]
    lines = [
        f"## Canary analysis: {analysis.outcome['verdict'].upper()} → {action} (found done)",
        "",
        f"Version {version} was found {found} by an earlier try of this step; version "
        f"{serving} serves all traffic. The analysis is decision record `{analysis.id}`:",
        "",
        *(f"- {reason}" for reason in analysis.reasons),
    ]
    return "\n".join(lines) + "\n"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
