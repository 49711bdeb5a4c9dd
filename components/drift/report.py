"""The drift result as JSON, and as one self-contained HTML page for the Kubeflow UI.

The page is what a person reads in the run's HTML artifact: a summary, a table of every
feature sorted by severity (the largest measure-to-threshold ratio), and for each drifted
feature its reasons and a small inline SVG of reference vs current shares per bin or
category. Figures print as in every decision (`ctloop.components.checks.format_number`). The KFP UI
shows HTML in a sandboxed iframe, so the page carries its own CSS, loads nothing (no scripts,
fonts or images from elsewhere) and stays small (a few KB per feature).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctloop.components.checks import format_number
from ctloop.components.drift.window_profile import FeatureCounts, WindowProfile

MAX_PLOTTED_CATEGORIES = 20
"""Categories drawn per feature: those with the largest share on either side, then "other"."""

UNSEEN_BUCKET = "(unseen)"

_MEASURES = ("psi", "js_distance", "ks_statistic", "cramers_v", "unseen_share")


@dataclass(frozen=True)
class DriftResult:
    """What `detect_drift` found; `to_json()` is the artifact other steps and people read.

    Attributes:
        drift_detected: The dataset-level decision.
        drift_share: (Weighted) share of features that drifted.
        drift_share_threshold: `drift_detected` when `drift_share` exceeds it.
        drifted_features: Names of drifted features, most severe first.
        features: Per feature: its measures, thresholds, `drifted` and `reasons`.
        rows: Rows in the window.
        reference_rows: Rows the reference profile was computed from.
        prediction: The score distribution's measures, when scores were given.
        performance: Metrics on labelled window rows, filled by the caller.
        policy: The policy applied, as JSON.
        estimate: The model's quality estimated from its scores, its checks and `alert`
            (`performance_alert.window_estimate`), or {"skipped": why}; None when not asked.
        performance_alert: Whether the estimate crossed a bound of the policy.
        labelled_rows: Window rows with a label (0 without a label column).
    """

    drift_detected: bool
    drift_share: float
    drift_share_threshold: float
    drifted_features: list[str]
    features: dict[str, dict[str, Any]]
    rows: int
    reference_rows: int
    prediction: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    performance_alert: bool = False
    labelled_rows: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (plain Python values; no NaN)."""
        return {
            "drift_detected": self.drift_detected,
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_features": list(self.drifted_features),
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "features": self.features,
            "prediction": self.prediction,
            "performance": self.performance,
            "policy": self.policy,
            "estimate": self.estimate,
            "performance_alert": self.performance_alert,
            "labelled_rows": self.labelled_rows,
        }


def render_html(
    result: DriftResult,
    reference_profile: Mapping[str, Any],
    window: WindowProfile,
    *,
    scores_window: FeatureCounts | None = None,
) -> str:
    """One self-contained HTML page: summary, per-feature table, plots of drifted features.

    `scores_window` is the scores' counts when they were given to `detect_drift` apart from
    the window (`window.prediction` otherwise).
    """
    ordered = sorted(result.features.items(), key=lambda item: (-item[1]["severity"], item[0]))
    verdict = "Drift detected" if result.drift_detected else "No drift detected"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Drift report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1 class='{'bad' if result.drift_detected else 'ok'}'>{verdict}</h1>",
        "<p>",
        f"{len(result.drifted_features)} of {len(result.features)} features drifted; "
        f"drift share {format_number(result.drift_share)} "
        f"(threshold {format_number(result.drift_share_threshold)}). "
        f"Window: {result.rows:,} rows; reference: {result.reference_rows:,} rows.",
        "</p>",
    ]
    missing = [
        name for name, entry in ordered if entry.get("all_missing") and entry.get("weight", 1) > 0
    ]
    if missing:
        parts.append(
            f"<p>Missing in every row of the window: {_text(', '.join(missing))}; "
            "each makes the window drift on its own (policy <code>all_missing_drifts</code>)."
            "</p>"
        )
    if result.prediction is not None:
        state = "drifted" if result.prediction["drifted"] else "did not drift"
        parts.append(f"<p>The model's score distribution {state}{_reasons(result.prediction)}.</p>")
    if result.performance:
        rows = "".join(
            f"<tr><td>{_text(name)}</td><td>{_number(value)}</td></tr>"
            for name, value in result.performance.items()
        )
        parts.append(f"<h2>Performance</h2><table>{rows}</table>")
    if result.estimate is not None:
        parts.append(_estimate_section(result.estimate))
    parts.append("<h2>Features</h2>")
    parts.append(_summary_table(ordered))
    plots = [
        (name, entry, reference_profile["features"][name], window.features[name])
        for name, entry in ordered
        if entry["drifted"]
    ]
    if result.prediction is not None and result.prediction["drifted"]:
        spec = {"kind": "numeric", **reference_profile["prediction"]}
        scores = scores_window if scores_window is not None else window.prediction
        plots.insert(0, ("model score", result.prediction, spec, scores))
    if plots:
        parts.append("<h2>Drifted distributions</h2>")
        parts.append(
            "<p><span class='key ref'></span> reference <span class='key cur'></span> current</p>"
        )
    for name, entry, spec, counts in plots:
        reasons = _text("; ".join(entry["reasons"]))
        parts.append(f"<h3>{_text(name)}</h3><p class='why'>{reasons}</p>")
        parts.append(_distribution_svg(spec, counts))
    parts.append("</body></html>")
    return "".join(parts)


def _estimate_section(estimate: Mapping[str, Any]) -> str:
    """Estimated metrics with their intervals, realized and test values, and the checks."""
    if "skipped" in estimate:
        return f"<h2>Estimated performance</h2><p>{_text(estimate['skipped'])}.</p>"
    head = "".join(
        f"<th>{label}</th>"
        for label in ("metric", "estimated", "interval", "realized", "test split")
    )
    rows = []
    for name, metric in estimate["metrics"].items():
        interval = f"{_number(metric['lower'])} – {_number(metric['upper'])}"
        cells = [
            _text(name),
            _number(metric["estimate"]),
            interval,
            _number(metric["realized"]),
            _number(estimate["test_metrics"].get(name)),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    calibration = estimate["calibration"]
    verdict = "Performance alert" if estimate["alert"] else "No performance alert"
    parts = [
        f"<h2 class='{'bad' if estimate['alert'] else 'ok'}'>Estimated performance: {verdict}</h2>",
        f"<p>From the model's scores on {estimate['rows']:,} rows "
        f"({estimate['labelled_rows']:,} labelled), intervals at "
        f"{_number(estimate['confidence'] * 100)} %; calibration {_text(calibration['method'])}"
        f" (test split ECE {_number(calibration['ece'])}).</p>",
        f"<table><tr>{head}</tr>{''.join(rows)}</table>",
    ]
    if estimate["checks"]:
        items = "".join(
            f"<li class='{'bad' if not check['passed'] else 'ok'}'>{_text(check['rule'])}</li>"
            for check in estimate["checks"]
        )
        parts.append(f"<ul>{items}</ul>")
    return "".join(parts)


def _summary_table(ordered: list[tuple[str, dict[str, Any]]]) -> str:
    head = "".join(
        f"<th>{label}</th>"
        for label in (
            "feature",
            "kind",
            "drifted",
            "severity",
            "PSI",
            "JS distance",
            "KS",
            "Cramér's V",
            "unseen share",
            "missing ref → cur",
        )
    )
    rows = []
    for name, entry in ordered:
        cells = [
            _text(name),
            entry["kind"],
            "yes" if entry["drifted"] else "no",
            _number(entry["severity"]),
            *(_number(entry[measure]) for measure in _MEASURES),
            f"{_number(entry['missing_rate_reference'])} → "
            f"{_number(entry['missing_rate_current'])}",
        ]
        row_class = " class='bad'" if entry["drifted"] else ""
        rows.append(f"<tr{row_class}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _distribution_svg(spec: Mapping[str, Any], counts: FeatureCounts | None) -> str:
    labels, reference, current = _bars(spec, counts)
    if not labels:
        return "<p>(no values to draw)</p>"
    width, height, top, bottom = 640, 160, 10, 40
    slot = (width - 20) / len(labels)
    peak = max(max(reference), max(current), 1e-12)
    scale = (height - top - bottom) / peak
    base = height - bottom
    shapes = []
    for position, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = 10 + position * slot
        bar = max(slot * 0.4, 0.5)
        middle = x + slot / 2
        caption = (
            f"<text x='{middle:.0f}' y='{base + 12}' transform='rotate(30 {middle:.0f} "
            f"{base + 12})'>{_text(label[:14])}</text>"
            if len(labels) <= 24
            else ""
        )
        shapes.append(
            f"<g><title>{_text(label)}: reference {ref:.3f}, current {cur:.3f}</title>"
            f"<rect class='ref' x='{x + slot * 0.1:.1f}' y='{base - ref * scale:.1f}' "
            f"width='{bar:.1f}' height='{ref * scale:.1f}'/>"
            f"<rect class='cur' x='{x + slot * 0.5:.1f}' y='{base - cur * scale:.1f}' "
            f"width='{bar:.1f}' height='{cur * scale:.1f}'/>{caption}</g>"
        )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + 60}' height='{height}' "
        f"viewBox='0 0 {width + 60} {height}'><line x1='10' y1='{base}' x2='{width - 10}' "
        f"y2='{base}' stroke='#999'/>{''.join(shapes)}</svg>"
    )


def _bars(
    spec: Mapping[str, Any], counts: FeatureCounts | None
) -> tuple[list[str], list[float], list[float]]:
    if counts is None or counts.values == 0:
        return [], [], []
    if spec["kind"] == "numeric":
        edges = spec["bin_edges"]
        labels = [f"{_short(edges[i])}–{_short(edges[i + 1])}" for i in range(len(edges) - 1)]
        current = (counts.counts / counts.values).tolist()
        return labels, list(spec["bin_frequencies"]), current
    names = [*spec["categories"], UNSEEN_BUCKET]
    reference = np.asarray([*spec["categories"].values(), 0.0])
    current = np.append(counts.counts, counts.unseen) / counts.values
    order = np.argsort(-np.maximum(reference, current), kind="stable")
    shown = sorted(order[:MAX_PLOTTED_CATEGORIES])
    labels = [names[i] for i in shown]
    ref_bars, cur_bars = reference[shown].tolist(), current[shown].tolist()
    if len(order) > MAX_PLOTTED_CATEGORIES:
        rest = order[MAX_PLOTTED_CATEGORIES:]
        labels.append("(other)")
        ref_bars.append(float(reference[rest].sum()))
        cur_bars.append(float(current[rest].sum()))
    return labels, ref_bars, cur_bars


def _reasons(entry: Mapping[str, Any]) -> str:
    return f" ({_text('; '.join(entry['reasons']))})" if entry["reasons"] else ""


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(value)
    return _text(str(value))


def _short(value: float) -> str:
    return f"{value:.3g}"


def _text(value: str) -> str:
    return html.escape(value, quote=True)


_CSS = (
    "body{font-family:sans-serif;font-size:13px;margin:12px;color:#222}"
    "h1.bad,h2.bad,li.bad{color:#b00020}h1.ok,h2.ok{color:#1b5e20}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}tr.bad td{background:#fdecea}"
    "svg text{font-size:9px;fill:#444}rect.ref,.key.ref{fill:#90a4ae;background:#90a4ae}"
    "rect.cur,.key.cur{fill:#e65100;background:#e65100}"
    ".key{display:inline-block;width:10px;height:10px;margin:0 4px}.why{color:#555}"
)
