"""The validation report: what was checked and decided about a training table, as Markdown.

Kept apart from the checks (`validation`) as drift keeps its report apart from detection: the
checks decide, this only shows. The KFP UI renders the Markdown with its HTML, so every column
name, label and reason in it goes through `markdown_text`: a value such as
`<img src=x onerror=...>` shows as text.
"""

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.checks import markdown_text


@dataclass(frozen=True)
class ColumnSummary:
    """What validation found out about a kept feature, as the report shows it."""

    kind: str
    missing: int
    distinct: int
    whole_values: bool
    """Text or integers: values that can name a row, as floats measured on a scale rarely do."""


def validation_markdown(
    table: pa.Table,
    target: str,
    task: str,
    label_mapping: dict | None,
    summaries: dict[str, ColumnSummary],
    dropped: dict[str, str],
    warnings: dict[str, str],
) -> str:
    """The report of a validated `table` (features and the label as training gets them)."""
    rows = table.num_rows
    categorical = sum(s.kind == "categorical" for s in summaries.values())
    lines = [
        "## Training data validation",
        "",
        f"**Rows:** {rows} · **Target:** {markdown_text(target)} ({task}) · "
        f"**Features:** {len(summaries)} ({len(summaries) - categorical} numeric, "
        f"{categorical} categorical) · **Dropped:** {len(dropped)}"
        + (f" · **Warnings:** {len(warnings)}" if warnings else ""),
        "",
    ]
    label = table.column(target)
    if task == "binary":
        names = {code: name for name, code in (label_mapping or {}).items()}
        ones = pc.sum(label).as_py()
        lines += [
            "### Label balance",
            "",
            "| class | source label | rows | share |",
            "|---|---|---|---|",
        ]
        for code, count in ((0, rows - ones), (1, ones)):
            source = markdown_text(names.get(code, code))
            lines.append(f"| {code} | {source} | {count} | {count / rows:.1%} |")
    else:
        stats = pc.min_max(label).as_py()
        lines += [
            "### Target",
            "",
            "| min | mean | std | max |",
            "|---|---|---|---|",
            f"| {stats['min']:.6g} | {pc.mean(label).as_py():.6g} | "
            f"{pc.stddev(label).as_py():.6g} | {stats['max']:.6g} |",
        ]
    lines += [
        "",
        "### Features",
        "",
        "| feature | kind | missing | distinct |",
        "|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        missing = summary.missing / rows
        lines.append(
            f"| {markdown_text(name)} | {summary.kind} | {missing:.1%} | {summary.distinct} |"
        )
    if warnings:
        lines += ["", "### Warnings", "", "| feature | warning |", "|---|---|"]
        lines += [f"| {markdown_text(name)} | {text} |" for name, text in warnings.items()]
    if dropped:
        lines += ["", "### Dropped columns", "", "| column | reason |", "|---|---|"]
        lines += [
            f"| {markdown_text(name)} | {markdown_text(reason)} |"
            for name, reason in dropped.items()
        ]
    return "\n".join(lines) + "\n"
