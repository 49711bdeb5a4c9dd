"""One check of a decision (gate, canary, drift): what was measured, against what, and why.

The quality gate, the canary analysis and drift detection all decide by comparing figures with
limits and must tell a person which comparison failed. They share this record, its wording and
its Markdown table, so a reader of one decision can read the others, and a figure prints the
same way in every artifact.

Numbers print with six significant digits (`format_number`): a value just under its limit
must not print as equal to it (0.79996 < min 0.8 would read "0.8 < min 0.8" with four).
Comparisons allow `SLACK`: float noise (0.8 - 0.795 > 0.005) must not fail a figure that sits
exactly on its limit.

Every Markdown artifact shows names and values that come from data or parameters (column
names, category values, policy keys); the KFP UI renders Markdown with its HTML, so each such
text goes through `markdown_text` first, or `<img src=x onerror=...>` in a cell would run.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SLACK = 1e-12
"""How far past a limit a figure may be and still count as on it (float noise)."""


@dataclass(frozen=True)
class Check:
    """One comparison and its outcome.

    Attributes:
        kind: What sort of check ("threshold", "latency", "error_rate", "psi", ...).
        subject: What was measured: the metric or feature.
        value: The figure measured, as found (None or a non-number when it is missing).
        threshold: The limit applied, None when there was none to apply.
        rule: The sentence a person reads: the figure, the comparison and the limit.
        passed: True when the figure is within its limit (or the check was skipped).
        skipped: True when there was nothing to compare with.
        baseline: The figure the limit was derived from when there is one to show beside
            the value (the canary's primary); None otherwise.
    """

    kind: str
    subject: str
    value: Any
    threshold: float | None
    rule: str
    passed: bool
    skipped: bool = False
    baseline: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON artifacts carry: `check, metric, value, threshold, rule, passed, skipped`,
        and `baseline` when there is one."""
        document = {
            "check": self.kind,
            "metric": self.subject,
            "value": self.value,
            "threshold": self.threshold,
            "rule": self.rule,
            "passed": self.passed,
            "skipped": self.skipped,
        }
        if self.baseline is not None:
            document["baseline"] = self.baseline
        return document


def format_number(value: float) -> str:
    """A figure as rule sentences and tables print it (six significant digits)."""
    return f"{value:.6g}"


MARKDOWN_ENTITIES = {
    "|": "&#124;",
    "[": "&#91;",
    "]": "&#93;",
    "`": "&#96;",
    "\\": "&#92;",
    "\n": " ",
    "\r": " ",
}
"""What `markdown_text` replaces besides HTML's own specials: table pipes (a cell boundary),
link brackets (`[x](javascript:...)`), code-span backticks and backslash escapes, and line
breaks (which would end a table row). Entities rather than backslash escapes, because an
entity is never a pipe when a renderer splits a table row, whatever its flavour."""


def markdown_text(value: object) -> str:
    """`value` as text that Markdown shows literally, fit for a table cell or a sentence.

    HTML special characters become entities (`<` -> `&lt;`, quotes included), so no tag from
    the data renders; the characters of `MARKDOWN_ENTITIES` are replaced too. A renderer shows
    the original characters back.
    """
    escaped = html.escape(str(value), quote=True)
    return "".join(MARKDOWN_ENTITIES.get(char, char) for char in escaped)


def is_finite_number(value: Any) -> bool:
    """True for an int or float that is finite; False for None, booleans, text, NaN, inf."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_most(value: float, limit: float) -> bool:
    """`value <= limit`, allowing `SLACK`."""
    return value <= limit + SLACK


def at_least(value: float, limit: float) -> bool:
    """`value >= limit`, allowing `SLACK`."""
    return value >= limit - SLACK


def limit_check(
    kind: str,
    subject: str,
    value: float,
    limit: float,
    *,
    upper: bool = True,
    label: str | None = None,
    limit_name: str = "",
    unit: str = "",
    note: str = "",
    baseline: float | None = None,
) -> Check:
    """`value` against an upper (or, with `upper=False`, lower) `limit`, and its sentence:
    "{label} {value}{unit} <= {limit_name} {limit}{unit}{note}" with the relation that held.

    Args:
        label: How the sentence names the figure; `subject` when None.
        limit_name: What the limit is ("max", "primary's x 1.5"); nothing when empty.
        unit: Printed after both figures (" ms").
        note: Printed after the limit (" (small-sample noise bound)").
    """
    if upper:
        passed = at_most(value, limit)
        relation = "<=" if passed else ">"
    else:
        passed = at_least(value, limit)
        relation = ">=" if passed else "<"
    limit_text = f"{limit_name} {format_number(limit)}" if limit_name else format_number(limit)
    rule = f"{label or subject} {format_number(value)}{unit} {relation} {limit_text}{unit}{note}"
    return Check(kind, subject, value, limit, rule, passed, baseline=baseline)


def checks_table(
    checks: Iterable[Check], *, value_header: str = "value", baseline_header: str | None = None
) -> str:
    """The checks as one Markdown table: kind, subject, value (and baseline, when
    `baseline_header` names its column), threshold, result, rule. A figure that is not a
    finite number shows as "—". Kind, subject and rule are escaped (`markdown_text`): they
    carry metric names and policy keys."""
    figures = [value_header, *([baseline_header] if baseline_header else []), "threshold"]
    lines = [
        f"| check | metric | {' | '.join(figures)} | result | rule |",
        f"| --- | --- | {' | '.join('---:' for _ in figures)} | --- | --- |",
    ]
    for check in checks:
        cells = [check.value, *([check.baseline] if baseline_header else []), check.threshold]
        shown = [format_number(cell) if is_finite_number(cell) else "—" for cell in cells]
        result = "skipped" if check.skipped else ("pass" if check.passed else "**FAIL**")
        kind, subject, rule = (
            markdown_text(text) for text in (check.kind, check.subject, check.rule)
        )
        lines.append(f"| {kind} | {subject} | {' | '.join(shown)} | {result} | {rule} |")
    return "\n".join(lines)
