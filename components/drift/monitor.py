"""The monitoring step's drift: one window against the champion's reference profile.

`drift_report` ties the drift library together: the window is reduced to counts in one
streaming pass (`window_profile`), the model's scores are counted over the profile's
prediction bins, `detect_drift` decides, the model's quality is measured on the window's
labelled rows (`quality`) and estimated from its scores (`performance_alert`), and the result
is rendered as JSON and HTML. `run_drift` does so for the files a pipeline step gets (window,
profile, predictions); `comparison.compare_tables` for two tables on a laptop (`ctloop drift`).

The decision goes on record (`DriftReport.record`): the measured figures it was decided from
(not the window), the estimate, the profile's hash and the policy text; `replay_drift` decides
those figures again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ctloop.components.batch_scoring.scoring import SCORE_COLUMN
from ctloop.components.checks import format_number, is_finite_number
from ctloop.components.contract.profile import load_profile, without_feature
from ctloop.components.decisions.record import DecisionRecord, DecisionRecordError, new_record
from ctloop.components.drift.detection import decide_drift, detect_drift, measured_figures
from ctloop.components.drift.performance_alert import alert_figures, window_estimate
from ctloop.components.drift.policy import DriftPolicy, parse_drift_policy
from ctloop.components.drift.quality import label_values, parse_baseline_metrics, window_quality
from ctloop.components.drift.report import DriftResult, render_html
from ctloop.components.drift.window_profile import (
    FeatureCounts,
    prediction_counts,
    window_profile,
)
from ctloop.components.table_io import ParquetBatches, iter_batches, partial_then_rename

TOP_SEVERITIES = 5
"""Drifted features whose severity the Metrics artifact lists, most severe first."""


@dataclass(frozen=True)
class DriftReport:
    """A drift decision with everything a person or a later step reads about it.

    Attributes:
        result: The decision and every figure (`detect_drift`).
        html: The self-contained report page.
        notes: What was not measured, and why (no predictions, no baseline metrics, ...).
        profile_sha256: SHA-256 of the reference profile's JSON file ("" when not from a file).
    """

    result: DriftResult
    html: str
    notes: list[str] = field(default_factory=list)
    profile_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """Every figure of `result`, plus the notes."""
        return {**self.result.to_json(), "notes": list(self.notes)}

    def metrics(self) -> dict[str, float]:
        """Scalars for a KFP Metrics artifact: shares, counts, top severities, quality."""
        result = self.result
        figures = {
            "drift_share": result.drift_share,
            "drifted_features": float(len(result.drifted_features)),
            "features": float(len(result.features)),
            "window_rows": float(result.rows),
        }
        for name in result.drifted_features[:TOP_SEVERITIES]:
            figures[f"severity_{name}"] = float(result.features[name]["severity"])
        if result.prediction is not None:
            figures["prediction_severity"] = float(result.prediction["severity"])
        for name, value in (result.performance or {}).items():
            if is_finite_number(value):
                figures[name] = float(value)
        estimate = result.estimate or {}
        for name, metric in estimate.get("metrics", {}).items():
            for suffix, key in (("", "estimate"), ("_lower", "lower"), ("_upper", "upper")):
                if is_finite_number(metric[key]):
                    figures[f"estimated_{name}{suffix}"] = float(metric[key])
        figures["performance_alert"] = float(result.performance_alert)
        figures["labelled_rows"] = float(result.labelled_rows)
        return figures

    def record(
        self,
        *,
        policy: str,
        registered_model: str = "",
        model_version: str = "",
        kfp_run_id: str = "",
    ) -> DecisionRecord:
        """The drift decision on record: the measured figures it read, the estimate, the
        profile's hash and `policy` (the text as the step got it)."""
        result = self.result
        estimate = result.estimate
        if estimate is not None:
            estimate = {k: v for k, v in estimate.items() if k not in ("checks", "alert")}
        inputs = {
            "figures": measured_figures(result),
            "estimate": estimate,
            "labelled_rows": result.labelled_rows,
            "profile_sha256": self.profile_sha256,
        }
        outcome, reasons = drift_outcome(result)
        return new_record(
            "drift",
            subject={
                "registered_model": registered_model,
                "model_version": model_version,
                "kfp_run_id": kfp_run_id,
            },
            inputs=inputs,
            policy=policy,
            outcome=outcome,
            reasons=reasons,
        )

    def write(self, json_path: str | Path, html_path: str | Path) -> None:
        """Write the JSON and the HTML; each file appears only once complete."""
        document = json.dumps(self.to_json(), indent=1, sort_keys=True)
        with partial_then_rename(json_path) as json_partial:
            with partial_then_rename(html_path) as html_partial:
                json_partial.write_text(document)
                html_partial.write_text(self.html)


def drift_report(
    profile: Mapping[str, Any],
    window_batches: Iterable[pa.RecordBatch],
    *,
    policy: DriftPolicy | None = None,
    target: str = "",
    score_batches: Iterable[np.ndarray] | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
    exact_ks_values: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    notes: Iterable[str] = (),
) -> DriftReport:
    """Compare a window with a reference profile and report features, scores and quality.

    Args:
        profile: The model's `ctloop.reference_profile/v1` profile.
        window_batches: The window's record batches, read once.
        policy: Thresholds and decision rule (`parse_drift_policy`); the defaults when None.
        target: Label column: never a feature; its labelled rows are counted, and when
            scores are given, the model's quality on them is measured.
        score_batches: The model's scores on the window, in window row order, chunk by chunk;
            their distribution is compared with the profile's "prediction" distribution
            (counted as they come; kept whole, 8 bytes a row, only to measure quality or,
            when the profile carries a calibration, to estimate it).
        baseline_metrics: The model's metrics at evaluation (e.g. the evaluation's candidate
            metrics); the window's metrics are reported beside them and as changes.
        exact_ks_values: Raw (reference, current) values per numeric feature for an exact KS.
        notes: Notes from the caller, kept ahead of the ones found here.

    Returns:
        The decision, its HTML page and notes on what could not be measured.

    Raises:
        ProfileError: the profile has no features.
        WindowProfileError: the window lacks a profiled feature, holds values of another
            type, or scores are given and the profile has no prediction distribution.
        DriftPolicyError: the policy names a feature the profile does not have.
    """
    profile = without_feature(profile, target)
    notes = list(notes)
    policy = policy or DriftPolicy()
    labels: list[pa.Array] = []

    def window() -> Iterator[pa.RecordBatch]:
        for batch in window_batches:
            if target in batch.schema.names:
                labels.append(batch.column(target))
            yield batch

    # A Parquet window is read column by column (`window_profile`): its labels are one more
    # column read on their own, and the batches go to `window_profile` as they are.
    if not target:
        counted = window_profile(window_batches, profile)
    elif isinstance(window_batches, ParquetBatches):
        if target in window_batches.schema.names:
            labels.extend(window_batches.column(target))
        counted = window_profile(window_batches, profile)
    else:
        counted = window_profile(window(), profile)
    # Scores are kept whole (8 bytes a row) only for what needs them beside the counts.
    keep = bool(labels) or "calibration" in profile
    score_counts, scores = None, None
    if score_batches is not None:
        score_counts, scores = _count_scores(profile, score_batches, keep=keep)
    performance = window_quality(
        profile, target, labels, scores, counted.rows, baseline_metrics, notes
    )
    label_array, labelled_rows = _window_labels(profile, labels)
    estimate = None
    if score_batches is not None:
        estimate = window_estimate(profile, scores, label_array, policy.performance)
        if "skipped" in estimate:
            notes.append(estimate["skipped"])
    result = detect_drift(
        profile,
        counted,
        policy,
        scores_window=score_counts,
        exact_ks_values=exact_ks_values,
        performance=performance,
    )
    result = replace(
        result,
        estimate=estimate,
        performance_alert=bool(estimate and estimate.get("alert")),
        labelled_rows=labelled_rows,
    )
    html = render_html(result, profile, counted, scores_window=score_counts)
    return DriftReport(result=result, html=html, notes=notes)


def _window_labels(
    profile: Mapping[str, Any], labels: list[pa.Array]
) -> tuple[np.ndarray | None, int]:
    """The window's labels as floats (NaN where missing) and how many are present; None
    (counted as non-null) for labels the profile cannot read or, for a binary model, that are
    not 0/1: the quality note says why, and the estimate goes without realized metrics."""
    if not labels:
        return None, 0
    column = pa.chunked_array(labels)
    try:
        values = label_values(profile, column)
    except ValueError:
        return None, len(column) - column.null_count
    present = ~np.isnan(values)
    if profile.get("task") == "binary" and not np.isin(values[present], (0.0, 1.0)).all():
        return None, int(present.sum())
    return values, int(present.sum())


def _count_scores(
    profile: Mapping[str, Any], score_batches: Iterable[np.ndarray], *, keep: bool
) -> tuple[FeatureCounts, np.ndarray | None]:
    """Scores counted over the profile's prediction bins chunk by chunk; all of them as one
    array only when `keep` (quality needs them beside the labels)."""
    counts = prediction_counts(profile, np.zeros(0))
    kept = []
    for chunk in score_batches:
        values = np.asarray(chunk, dtype=np.float64).ravel()
        counts = counts.merge(prediction_counts(profile, values))
        if keep:
            kept.append(values)
    if not keep:
        return counts, None
    return counts, np.concatenate(kept) if kept else np.zeros(0)


def run_drift(
    window_path: str,
    profile_path: str,
    *,
    predictions_path: str | None = None,
    target: str = "",
    policy: str = "",
    baseline_metrics: str = "",
) -> DriftReport:
    """Drift of a window file against a profile file, with the model's predictions if given.

    Args:
        window_path: Parquet (or .csv) rows of the current window.
        profile_path: The reference profile (JSON).
        predictions_path: Parquet with a `score` column, row for row with the window.
        target: Label column (see `drift_report`).
        policy: Drift policy JSON; empty for the defaults.
        baseline_metrics: JSON object of the model's evaluation metrics; empty for none.

    Raises:
        ProfileError, DriftPolicyError, BaselineMetricsError, WindowProfileError, DatasetError:
            see `drift_report`; each names the file or key at fault.
    """
    parsed = parse_drift_policy(policy)
    baseline = parse_baseline_metrics(baseline_metrics)
    profile = load_profile(profile_path)
    profile_sha256 = hashlib.sha256(Path(profile_path).read_bytes()).hexdigest()
    score_batches = None
    if predictions_path:
        score_batches = (
            batch.column(SCORE_COLUMN).to_numpy(zero_copy_only=False)
            for batch in iter_batches(predictions_path, columns=[SCORE_COLUMN])
        )
    report = drift_report(
        profile,
        iter_batches(window_path),
        policy=parsed,
        target=target,
        score_batches=score_batches,
        baseline_metrics=baseline,
    )
    return replace(report, profile_sha256=profile_sha256)


def drift_outcome(result: DriftResult) -> tuple[dict[str, Any], list[str]]:
    """What a drift record (and its replay) says was decided, and the sentences why."""
    outcome = {
        "drift_detected": result.drift_detected,
        "drift_share": result.drift_share,
        "drifted_features": list(result.drifted_features),
        "performance_alert": result.performance_alert,
    }
    relation = ">" if result.drift_share > result.drift_share_threshold else "<="
    reasons = [
        f"drift share {format_number(result.drift_share)} {relation} "
        f"{format_number(result.drift_share_threshold)}"
    ]
    reasons += [
        f"{name}: {'; '.join(result.features[name]['reasons'])}" for name in result.drifted_features
    ]
    if result.prediction is not None and result.prediction["drifted"]:
        reasons.append(f"model score: {'; '.join(result.prediction['reasons'])}")
    estimate = result.estimate or {}
    if "skipped" in estimate:
        reasons.append(estimate["skipped"])
    reasons += [check["rule"] for check in estimate.get("checks", []) if not check["passed"]]
    return outcome, reasons


_PINNED = ("figures", "estimate", "labelled_rows")


def replay_drift(inputs: Mapping[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Decide a drift record's pinned figures again, with the running code and `policy`.

    Raises:
        DecisionRecordError: the inputs lack a pinned figure.
        DriftPolicyError: the policy is not valid, or names a feature the figures lack.
    """
    missing = [key for key in _PINNED if key not in inputs]
    if missing:
        raise DecisionRecordError(f"drift record inputs lack {missing}; they hold {sorted(inputs)}")
    parsed = parse_drift_policy(policy)
    estimate = inputs["estimate"]
    if estimate is not None:
        estimate = {**estimate, **alert_figures(estimate, parsed.performance)}
    result = replace(
        decide_drift(inputs["figures"], parsed),
        estimate=estimate,
        performance_alert=bool(estimate and estimate["alert"]),
        labelled_rows=int(inputs["labelled_rows"]),
    )
    return drift_outcome(result)
