"""The shadow decision as Markdown for the Kubeflow UI.

Kept apart from the decision so that deciding stays a computation on figures, and a person's
view of it can change without touching it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ctloop.components.checks import checks_table, format_number, markdown_text
from ctloop.components.shadow.decision import ShadowDecision
from ctloop.components.shadow.measurement import AGREEMENT
from ctloop.components.shadow.policy import GO_ON, REJECT

ACTION_TEXT = {GO_ON: "go on to a canary", REJECT: "reject"}


def decision_markdown(decision: ShadowDecision) -> str:
    """Verdict and action, reasons, the paired figures, and every check with its threshold."""
    figures = decision.figures
    lines = [
        f"## Shadow analysis: {decision.verdict.upper()} → {ACTION_TEXT[decision.action]}",
        "",
        f"Figures of {markdown_text(decision.target.describe())}, "
        f"{decision.end - decision.start:.0f} s from {_clock(decision.start)} to "
        f"{_clock(decision.end)} UTC, read from {markdown_text(decision.source)}.",
        "",
    ]
    if decision.reasons:
        lines += [f"- {markdown_text(reason)}" for reason in decision.reasons] + [""]
    rows = [
        ("rows served", figures.served),
        ("rows compared (both models scored)", figures.compared),
        ("rows skipped (shadow queue full)", figures.skipped),
        ("rows the shadow failed to score", figures.errors),
        ("rows whose 0/1 label differs", figures.disagreements),
        ("disagreement rate", figures.disagreement_rate),
        ("mean absolute score difference", figures.mean_abs_difference),
        (f"rows the shadow scored higher (by more than {AGREEMENT:g})", figures.scored_higher),
        (f"rows the shadow scored lower (by {AGREEMENT:g} or more)", figures.scored_lower),
        ("mean shadow scoring time per batch (s)", figures.mean_latency_s),
    ]
    lines += ["| figure | value |", "| --- | ---: |"]
    lines += [
        f"| {name} | {'—' if value is None else format_number(value)} |" for name, value in rows
    ]
    if decision.checks:
        lines += ["", checks_table(decision.checks, value_header="shadow")]
    return "\n".join(lines) + "\n"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
