"""The gate's per-slice figures as Markdown: one table per slice column, candidate beside
champion in each cell, and the column's largest gaps between groups.

Group and column names come from the data and the policy, so every one goes through
`markdown_text`: the KFP UI renders the Markdown's HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ctloop.components.checks import format_number, is_finite_number, markdown_text
from ctloop.components.gate.policy import GAP_METRICS, SLICE_METRICS


def slices_markdown(slices: Mapping[str, Any] | None) -> str:
    """The evaluation's "slices" as Markdown; "" when there are none."""
    if not isinstance(slices, Mapping) or not isinstance(slices.get("candidate"), Sequence):
        return ""
    champion = {c["column"]: c for c in slices.get("champion") or () if isinstance(c, Mapping)}
    min_rows = (slices.get("policy") or {}).get("min_rows")
    lines = ["## Slices", ""]
    if champion:
        lines += ["Each cell: candidate / champion, on the same rows.", ""]
    for column in slices["candidate"]:
        lines += _column_tables(column, champion.get(column["column"]), min_rows)
    return "\n".join(lines)


def _column_tables(
    column: Mapping[str, Any], champion: Mapping[str, Any] | None, min_rows: Any
) -> list[str]:
    name = markdown_text(column["column"])
    baselines = {g["group"]: g for g in (champion or {}).get("slices", [])}
    lines = [
        f"### {name} ({markdown_text(column['kind'])})",
        "",
        f"| group | rows | positives | {' | '.join(SLICE_METRICS)} |",
        f"| --- | ---: | ---: | {' | '.join('---:' for _ in SLICE_METRICS)} |",
    ]
    for group in column["slices"]:
        label = markdown_text(group["group"])
        if group["too_small"]:
            label += f" (too small to judge: {group['rows']} rows < {min_rows})"
        other = baselines.get(group["group"], {}) if champion is not None else None
        cells = [_pair(group.get(m), other, m) for m in SLICE_METRICS]
        lines.append(f"| {label} | {group['rows']} | {group['positives']} | {' | '.join(cells)} |")
    lines += ["", f"Largest gaps between judged groups of {name}:", ""]
    lines += ["| metric | gap | lowest group | highest group |", "| --- | ---: | --- | --- |"]
    for metric in GAP_METRICS:
        gap = column["gaps"].get(metric)
        champion_gap = ((champion or {}).get("gaps") or {}).get(metric)
        if not isinstance(gap, Mapping):
            lines.append(f"| {metric} | — | fewer than two judged groups | |")
            continue
        figure = format_number(gap["gap"])
        if champion is not None:
            figure += " / " + (
                format_number(champion_gap["gap"]) if isinstance(champion_gap, Mapping) else "—"
            )
        low = f"{markdown_text(gap['low_group'])} ({format_number(gap['low_value'])})"
        high = f"{markdown_text(gap['high_group'])} ({format_number(gap['high_value'])})"
        lines.append(f"| {metric} | {figure} | {low} | {high} |")
    return [*lines, ""]


def _pair(value: Any, champion_group: Mapping[str, Any] | None, metric: str) -> str:
    text = _figure(value)
    if champion_group is not None:
        text += " / " + _figure(champion_group.get(metric))
    return text


def _figure(value: Any) -> str:
    return format_number(value) if is_finite_number(value) else "—"
