"""The A/B decision as Markdown for the Kubeflow UI, and as the JSON summary the CLI prints.

Kept apart from the decision so that deciding stays a computation on figures. Variant names
come from the log (they are whatever the servers were started with), so every one goes through
`markdown_text` before it reaches the page.
"""

from __future__ import annotations

from typing import Any

from ctloop.components.checks import checks_table, format_number, markdown_text
from ctloop.components.experiment.decision import ABDecision, Comparison


def decision_markdown(decision: ABDecision) -> str:
    """Verdict, reasons, each variant's rows and metric, each comparison's interval."""
    policy = decision.policy
    observations = decision.observations
    head = decision.action.upper()
    if decision.winner:
        head += f" → {markdown_text(decision.winner)}"
    confidence = f"{format_number(100 * (1 - policy.alpha))} %"
    lines = [
        f"## A/B analysis: {head}",
        "",
        f"Metric: **{markdown_text(policy.metric_name)}** per labelled row ({policy.better} is "
        f"better). Control: **{markdown_text(decision.control)}**. Each challenger is compared "
        f"with the control by a mixture sequential probability ratio test (always valid: the "
        f"experiment may be checked every day); intervals are {confidence} for all checks and "
        f"all challengers together (alpha {format_number(policy.alpha)}, "
        f"{format_number(decision.alpha_per_comparison)} per challenger).",
        "",
        *[f"- {markdown_text(reason)}" for reason in decision.reasons],
        "",
        f"| variant | model version | logged rows | labelled | unlabelled "
        f"| {markdown_text(policy.metric_name)} "
        "| difference vs control | always-valid interval | p-value | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    comparisons = {comparison.variant: comparison for comparison in decision.comparisons}
    for name in (decision.control, *comparisons):
        rows = observations.variants[name]
        summary = decision.summaries.get(name)
        cells = [
            markdown_text(name) + (" (control)" if name == decision.control else ""),
            markdown_text(", ".join(rows.model_versions)) or "—",
            str(rows.logged),
            str(rows.labelled),
            str(rows.unlabelled),
            "—" if summary is None else format_number(summary.mean),
            *_comparison_cells(comparisons.get(name)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Labels without a logged prediction: {observations.labels_without_prediction}. "
        f"Labels with an empty outcome: {observations.empty_labels}. "
        f"Log rows left out because their (request_id, row) was logged more than once: "
        f"{observations.logged_more_than_once}.",
        "",
        checks_table(decision.checks, value_header="labelled rows"),
    ]
    return "\n".join(lines) + "\n"


def decision_summary(decision: ABDecision) -> dict[str, Any]:
    """The decision as JSON: action, winner, reasons, and per variant its figures."""
    comparisons = {comparison.variant: comparison for comparison in decision.comparisons}
    variants = {}
    for name, rows in decision.observations.variants.items():
        summary = decision.summaries.get(name)
        comparison = comparisons.get(name)
        variants[name] = {
            "model_versions": list(rows.model_versions),
            "logged_rows": rows.logged,
            "labelled_rows": rows.labelled,
            "unlabelled_rows": rows.unlabelled,
            "metric": None if summary is None else summary.mean,
            **(
                {}
                if comparison is None
                else {
                    "verdict": comparison.verdict,
                    "difference": comparison.difference,
                    "interval": None
                    if comparison.lower is None
                    else [comparison.lower, comparison.upper],
                    "p_value": comparison.p_value,
                }
            ),
        }
    observations = decision.observations
    return {
        "action": decision.action,
        "winner": decision.winner,
        "control": decision.control,
        "metric": decision.policy.metric_name,
        "alpha": decision.policy.alpha,
        "reasons": decision.reasons,
        "variants": variants,
        "labels_without_prediction": observations.labels_without_prediction,
        "empty_labels": observations.empty_labels,
        "logged_more_than_once": observations.logged_more_than_once,
    }


def _comparison_cells(comparison: Comparison | None) -> list[str]:
    if comparison is None:
        return ["—", "—", "—", "control"]
    if comparison.difference is None:
        return ["—", "—", "—", comparison.verdict.replace("_", " ")]
    return [
        format_number(comparison.difference),
        f"[{format_number(comparison.lower)}, {format_number(comparison.upper)}]",
        format_number(comparison.p_value),
        comparison.verdict,
    ]
