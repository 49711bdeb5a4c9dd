"""The model card drawn as Markdown for the Kubeflow UI, from the dict `model_card` assembles.

Every text that comes from data or parameters (columns, groups, values, reasons, the intended
use, tags) goes through `markdown_text`: the UI renders the Markdown's HTML, and a category
named `<img src=x onerror=...>` would otherwise run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctloop.components.checks import format_number, markdown_text

SLICE_FIGURES = ("roc_auc", "accuracy", "tpr", "fpr", "selection_rate")


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as Markdown for the Kubeflow UI."""
    model = card["model"]
    lines = [
        f"# Model card: {markdown_text(model['registered_model'])} version "
        f"{markdown_text(model['version'])}",
        "",
        f"Registered from MLflow run {markdown_text(model['run_id'])}.",
        "",
        "## Intended use",
        "",
        markdown_text(card["intended_use"])
        if card["intended_use"]
        else "Not stated (the pipeline's `intended_use` parameter was empty).",
        "",
        *_training_markdown(card["training_data"]),
        *_metrics_markdown(card["metrics"]),
        *_slices_markdown(card["slices"]),
        *_fairness_markdown(card),
        *_gate_markdown(card["gate"]),
        *_limitations_markdown(card["limitations"], card["slices"]),
        "## Lineage",
        "",
        *_table(["tag", "value"], [[key, value] for key, value in card["lineage"].items()]),
    ]
    return "\n".join(lines) + "\n"


def _figure(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format_number(value)
    return markdown_text(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_figure(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _training_markdown(data: Mapping[str, Any]) -> list[str]:
    balance = data["label_balance"]
    rows = [
        ["rows", data["rows"]],
        [
            "features",
            f"{data['features']} ({len(data['numeric'])} numeric, "
            f"{len(data['categorical'])} categorical)",
        ],
        ["target", data["target"]],
        ["task", data["task"]],
        ["data", data["uri"]],
        ["content hash", data["content_hash"]],
    ]
    if balance:
        shares = ", ".join(
            f"{name}: {count}"
            for name, count in zip(balance["classes"], balance["rows"], strict=False)
        )
        rows.append([f"label balance ({balance['source']})", shares])
        rows.append(["positive rate", balance["positive_rate"]])
    for name, rate in data["missing_rates"].items():
        rows.append([f"missing in {name}", rate])
    return ["## Training data", "", *_table(["", ""], rows)]


def _metrics_markdown(metrics: Mapping[str, Any]) -> list[str]:
    champion = metrics["champion"] or {}
    compared = metrics["champion_version"]
    header = ["metric", "candidate", f"champion (version {compared})" if compared else "champion"]
    rows = [
        [name, value, champion.get(name)] for name, value in sorted(metrics["candidate"].items())
    ]
    return [
        "## Metrics",
        "",
        f"On the test split ({_figure(metrics['test_rows'])} rows).",
        "",
        *_table(header, rows),
    ]


def _slices_markdown(slices: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Metrics per slice", ""]
    if slices is None:
        return [*lines, "The gate policy named no slice columns.", ""]
    for column in slices["columns"]:
        lines += [f"### {markdown_text(column['column'])} ({markdown_text(column['kind'])})", ""]
        rows = [
            [
                group["group"],
                group["rows"],
                *(group.get(f) for f in SLICE_FIGURES),
                "too small to judge" if group.get("too_small") else "",
            ]
            for group in column["slices"]
        ]
        header = ["group", "rows", "ROC AUC", "accuracy", "TPR", "FPR", "selection rate", ""]
        lines += _table(header, rows)
    return lines


def _fairness_markdown(card: Mapping[str, Any]) -> list[str]:
    fairness = card["fairness"]
    lines = ["## Fairness", ""]
    rows = [
        [
            column,
            metric,
            gap["gap"],
            f"{gap['low_group']} ({format_number(gap['low_value'])})",
            f"{gap['high_group']} ({format_number(gap['high_value'])})",
        ]
        for column, gaps in fairness["gaps"].items()
        for metric, gap in sorted(gaps.items())
        if gap is not None
    ]
    if rows:
        lines += ["Largest gap between judged groups:", ""]
        lines += _table(["column", "metric", "gap", "lowest", "highest"], rows)
    if card["slices"] is None:
        return [*lines, "No slices, so no fairness checks.", ""]
    failed = fairness["gate_failures"]
    if not failed:
        return [*lines, "The gate's slice and fairness checks passed.", ""]
    reasons = card["gate"]["reasons"]
    lines.append("The gate's slice and fairness checks that failed:")
    for failure in failed:
        said = [reason for reason in reasons if reason.startswith(f"{failure}:")]
        lines.append(f"- {markdown_text(said[0] if said else failure)}")
    return [*lines, ""]


def _gate_markdown(gate: Mapping[str, Any]) -> list[str]:
    verdict = "passed" if gate["outcome"].get("passed") else "failed"
    policy = gate["policy"] or "(default for the task)"
    return [
        "## Gate decision",
        "",
        f"The quality gate **{verdict}** (record {_figure(gate['record_id'])}, "
        f"{_figure(gate['decided_at'])}).",
        "",
        *[f"- {markdown_text(reason)}" for reason in gate["reasons"]],
        "",
        f"Policy: {markdown_text(policy)}",
        "",
    ]


def _limitations_markdown(
    limitations: Mapping[str, Any], slices: Mapping[str, Any] | None
) -> list[str]:
    lines = ["## Limitations", ""]
    small = limitations["too_small_slices"]
    if small:
        below = f" (fewer than {slices['min_rows']} rows)" if slices and slices["min_rows"] else ""
        lines.append(f"Slices too small to judge{below}, so nothing is known of them:")
        lines += [
            f"- {markdown_text(s['column'])} = {markdown_text(s['group'])}: {s['rows']} rows"
            for s in small
        ]
        lines.append("")
    unseen = limitations["unseen_categories"]
    if unseen:
        lines.append("Categories the model never saw in training (it reads them as missing):")
        lines += [
            f"- {markdown_text(feature)}: {entry['rows']} test rows, e.g. "
            + ", ".join(markdown_text(value) for value in entry["values"])
            for feature, entry in sorted(unseen.items())
        ]
        lines.append("")
    if not small and not unseen:
        lines += ["No slice too small to judge and no category unseen in training.", ""]
    return lines
