"""Drift of one window against a reference profile, end to end: count, decide, measure, report.

`drift_report` ties the library together: the window is reduced to counts in one streaming
pass (`window_profile`), the model's scores are counted over the profile's prediction bins,
`detect_drift` decides, the model's quality is measured on the window's labelled rows, and
the result is rendered as JSON and HTML. `run_drift` does so for the files a pipeline step
gets (window, profile, predictions); `compare_datasets` for two tables on a laptop
(`ctloop drift`), where the reference profile is built on the spot or taken from a model.

Quality on the window is compared with baseline metrics only when they are given: the
reference profile records the training data and the test-split score distribution, not the
evaluation's metrics (those are the evaluation artifact and the MLflow run's `test_*`
metrics), so without a baseline the report says so instead of comparing with nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.batch_scoring.scoring import (
    SCORE_COLUMN,
    ScoringModel,
    iter_scores,
    load_scoring_model,
    partial_then_rename,
)
from ctloop.components.data.dataset_io import DatasetError, read_table
from ctloop.components.data.profile import reference_profile, with_prediction_distribution
from ctloop.components.drift.detection import detect_drift
from ctloop.components.drift.policy import DriftPolicy, parse_drift_policy
from ctloop.components.drift.report import DriftResult, render_html
from ctloop.components.drift.window_profile import (
    FeatureCounts,
    WindowProfileError,
    iter_batches,
    prediction_counts,
    window_profile,
)
from ctloop.components.evaluate.metrics import classification_metrics, regression_metrics
from ctloop.components.json_parameter import parse_json_object

TOP_SEVERITIES = 5
"""Drifted features whose severity the Metrics artifact lists, most severe first."""


class ReferenceProfileError(ValueError):
    """A reference profile (or baseline metrics) that cannot be read or used."""


@dataclass(frozen=True)
class DriftReport:
    """A drift decision with everything a person or a later step reads about it.

    Attributes:
        result: The decision and every figure (`detect_drift`).
        html: The self-contained report page.
        notes: What was not measured, and why (no predictions, no baseline metrics, ...).
    """

    result: DriftResult
    html: str
    notes: list[str] = field(default_factory=list)

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
            if _is_number(value):
                figures[name] = float(value)
        return figures

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
        target: Label column: never a feature; when the window holds it and scores are
            given, the model's quality on the labelled rows is measured.
        score_batches: The model's scores on the window, in window row order, chunk by chunk;
            their distribution is compared with the profile's "prediction" distribution
            (counted as they come; kept whole, 8 bytes a row, only to measure quality).
        baseline_metrics: The model's metrics at evaluation (e.g. the evaluation's candidate
            metrics); the window's metrics are reported beside them and as changes.
        exact_ks_values: Raw (reference, current) values per numeric feature for an exact KS.
        notes: Notes from the caller, kept ahead of the ones found here.

    Returns:
        The decision, its HTML page and notes on what could not be measured.

    Raises:
        ReferenceProfileError: the profile has no features, or the baseline is not numbers.
        WindowProfileError: the window lacks a profiled feature, holds values of another
            type, or scores are given and the profile has no prediction distribution.
        DriftPolicyError: the policy names a feature the profile does not have.
    """
    profile = without_feature(profile, target)
    notes = list(notes)
    labels: list[pa.Array] = []

    def window() -> Iterator[pa.RecordBatch]:
        for batch in window_batches:
            if target and score_batches is not None and target in batch.schema.names:
                labels.append(batch.column(target))
            yield batch

    # Labels are kept only to measure quality on scored rows; otherwise the batches go to
    # `window_profile` as they are (a Parquet window is then read column by column).
    measure_quality = bool(target) and score_batches is not None
    counted = window_profile(window() if measure_quality else window_batches, profile)
    score_counts, scores = None, None
    if score_batches is not None:
        score_counts, scores = _count_scores(profile, score_batches, keep=bool(labels))
    performance = _window_performance(
        profile, target, labels, scores, counted.rows, baseline_metrics, notes
    )
    result = detect_drift(
        profile,
        counted,
        policy,
        scores_window=score_counts,
        exact_ks_values=exact_ks_values,
        performance=performance,
    )
    html = render_html(result, profile, counted, scores_window=score_counts)
    return DriftReport(result=result, html=html, notes=notes)


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
        ReferenceProfileError, DriftPolicyError, WindowProfileError, DatasetError: see
            `drift_report`; each names the file or key at fault.
    """
    parsed = parse_policy(policy)
    baseline = _baseline(baseline_metrics)
    profile = load_profile(profile_path)
    score_batches = None
    if predictions_path:
        score_batches = (
            batch.column(SCORE_COLUMN).to_numpy(zero_copy_only=False)
            for batch in iter_batches(predictions_path, columns=[SCORE_COLUMN])
        )
    return drift_report(
        profile,
        iter_batches(window_path),
        policy=parsed,
        target=target,
        score_batches=score_batches,
        baseline_metrics=baseline,
    )


def compare_datasets(
    reference_uri: str,
    current_uri: str,
    *,
    target: str = "",
    profile_path: str = "",
    model_uri: str = "",
    tracking_uri: str = "",
    policy: str = "",
) -> DriftReport:
    """Drift of one table against another, as `ctloop drift` reports it.

    The reference profile is built from the reference table, or read from `profile_path`,
    or taken from the model at `model_uri`; in the last case both tables are also scored,
    so the scores' distribution on the current table is compared with that on the
    reference, and, when both hold `target`, the model's quality on each. Numeric features
    get the exact two-sample KS statistic, since both raw samples are at hand.

    Args:
        reference_uri: Parquet or CSV table the current one is compared with.
        current_uri: Parquet or CSV table checked for drift.
        target: Label column, never compared as a feature.
        profile_path: A reference profile (JSON) to use instead of profiling the reference.
        model_uri: A model folder or models:/ URI whose profile is used and which scores both.
        tracking_uri: MLflow tracking URI for a models:/ `model_uri`.
        policy: Drift policy JSON; empty for the defaults.

    Raises:
        ValueError (its subclasses): naming the option and the file, column or key at fault.
    """
    if profile_path and model_uri:
        raise ReferenceProfileError("give --profile or --model-uri, not both")
    parsed = parse_policy(policy)
    reference = _read(reference_uri, "--reference")
    current = _read(current_uri, "--current")
    notes = []
    model = None
    if model_uri:
        model = load_scoring_model(model_uri, tracking_uri)
        if model.profile is None:
            raise ReferenceProfileError(
                f"--model-uri {model_uri!r}: the model has no reference_profile.json"
            )
        profile = model.profile
    elif profile_path:
        profile = load_profile(profile_path)
    else:
        profile = profile_table(reference, target)
    profile = without_feature(profile, target)
    _require_features(profile, reference, f"--reference {reference_uri!r}")
    _require_features(profile, current, f"--current {current_uri!r}")
    extra = sorted(set(current.column_names) - set(profile["features"]) - {target})
    if extra:
        notes.append(f"columns of the current table not compared (not in the profile): {extra}")
    score_batches = baseline = None
    if model is None:
        notes.append("no model given (--model-uri): the score distribution not compared")
    else:
        reference_scores = _scores(model, reference)
        profile = with_prediction_distribution(profile, reference_scores)
        profile["prediction"]["count"] = len(reference_scores)
        score_batches = [_scores(model, current)]
        if target and target in reference.column_names:
            try:
                baseline = _quality(profile, reference.column(target), reference_scores)
            except ValueError as error:
                notes.append(f"the model's quality on the reference not measured: {error}")
    exact = _exact_ks_values(profile, reference, current, reference_uri, current_uri)
    try:
        report = drift_report(
            profile,
            current.to_batches(),
            policy=parsed,
            target=target,
            score_batches=score_batches,
            baseline_metrics=baseline,
            exact_ks_values=exact,
            notes=notes,
        )
    except WindowProfileError as error:
        raise WindowProfileError(f"--current {current_uri!r}: {error}") from error
    return report


def profile_table(table: pa.Table, target: str = "", bins: int = 10) -> dict[str, Any]:
    """A reference profile of every numeric, boolean and text column but `target`.

    Unlike training's validation, constant and mostly-missing columns are kept: a column
    that was constant can still start to vary. Columns of other types (dates, lists) are
    left out.
    """
    features = [f.name for f in table.schema if f.name != target and _kind(f.type)]
    categorical = [f.name for f in table.schema if f.name in features and _kind(f.type) == "text"]
    if not features:
        raise ReferenceProfileError(
            f"the reference has no numeric or text column besides {target!r} to compare; "
            f"its columns are {table.column_names}"
        )
    task = "binary"
    if target and target in table.column_names:
        distinct = pc.count_distinct(table.column(target)).as_py()
        task = "binary" if distinct <= 2 else "regression"
    return reference_profile(table, target, task, features, categorical, None, bins)


def without_feature(profile: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy of `profile` that does not treat column `name` (the label) as a feature."""
    _check_profile(profile)
    trimmed = copy.deepcopy(dict(profile))
    if name and name in trimmed["features"]:
        del trimmed["features"][name]
        trimmed["feature_order"] = [f for f in trimmed.get("feature_order", []) if f != name]
    return trimmed


def load_profile(path: str | Path) -> dict[str, Any]:
    """A reference profile JSON file, checked to have features."""
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReferenceProfileError(f"reference profile {str(path)!r}: {error}") from error
    try:
        _check_profile(profile)
    except ReferenceProfileError as error:
        raise ReferenceProfileError(f"reference profile {str(path)!r}: {error}") from error
    return profile


def parse_policy(text: str) -> DriftPolicy:
    """The drift policy in `text`, or the default policy when `text` is blank."""
    return parse_drift_policy(text) if text.strip() else DriftPolicy()


def _check_profile(profile: Any) -> None:
    features = profile.get("features") if isinstance(profile, Mapping) else None
    if not isinstance(features, Mapping) or not features:
        raise ReferenceProfileError(
            "is not a ctloop reference profile: it needs a non-empty 'features' object"
        )


def _baseline(text: str) -> dict[str, float] | None:
    if not text.strip():
        return None
    metrics = parse_json_object(text, "baseline_metrics", ReferenceProfileError)
    wrong = {name: value for name, value in metrics.items() if not _is_number(value)}
    if wrong:
        raise ReferenceProfileError(f"baseline_metrics values must be numbers; got {wrong}")
    return {name: float(value) for name, value in metrics.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _window_performance(
    profile: Mapping[str, Any],
    target: str,
    labels: list[pa.Array],
    scores: np.ndarray | None,
    rows: int,
    baseline: Mapping[str, float] | None,
    notes: list[str],
) -> dict[str, Any] | None:
    if not target:
        return None
    if scores is None:
        notes.append(f"no predictions given: the model's quality on {target!r} not measured")
        return None
    if not labels:
        notes.append(f"the window has no {target!r} column: the model's quality not measured")
        return None
    if len(scores) != rows:
        raise WindowProfileError(
            f"the predictions have {len(scores)} rows and the window {rows}: quality needs "
            "the scores of the window's rows, in the same order"
        )
    try:
        window = _quality(profile, pa.chunked_array(labels), scores)
    except ValueError as error:
        notes.append(f"the model's quality on the window not measured: {error}")
        return None
    performance: dict[str, Any] = dict(window)
    if baseline is None:
        performance["baseline"] = "none given: the reference profile records no evaluation metrics"
        notes.append(
            "quality not compared with a baseline: the reference profile records no "
            "evaluation metrics (pass the evaluation's metrics as baseline_metrics)"
        )
        return performance
    for name, value in baseline.items():
        if name in window:
            performance[f"{name}_baseline"] = value
            performance[f"{name}_change"] = window[name] - value
    return performance


def _quality(
    profile: Mapping[str, Any], column: pa.ChunkedArray | pa.Array, scores: np.ndarray
) -> dict[str, float]:
    """The model's metrics on the labelled rows (missing labels are left out)."""
    labels = _label_values(profile, column)
    labelled = ~np.isnan(labels)
    if profile.get("task") == "regression":
        metrics = regression_metrics(labels[labelled], scores[labelled])
    else:
        metrics = classification_metrics(labels[labelled], scores[labelled])
    return {"labelled_rows": int(labelled.sum()), **metrics}


def _label_values(profile: Mapping[str, Any], column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Labels as floats (NaN where missing); string labels through the profile's mapping."""
    mapping = profile.get("label_mapping")
    if not mapping:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    text = pc.cast(column, pa.string())
    position = pc.index_in(text, value_set=pa.array(list(mapping), pa.string()))
    unknown = pc.filter(text, pc.and_(pc.is_null(position), pc.is_valid(text)))
    if len(unknown):
        raise WindowProfileError(
            f"label(s) {sorted(set(unknown.to_pylist()))[:10]} are not among the model's "
            f"labels {list(mapping)}"
        )
    codes = np.asarray([float(code) for code in mapping.values()] + [np.nan])
    return codes[pc.fill_null(position, len(mapping)).to_numpy(zero_copy_only=False)]


def _scores(model: ScoringModel, table: pa.Table) -> np.ndarray:
    chunks = [scores for _, scores in iter_scores(table.to_batches(), model)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def _read(uri: str, option: str) -> pa.Table:
    try:
        return read_table(uri)
    except DatasetError as error:
        raise DatasetError(f"{option}: {error}") from error


def _require_features(profile: Mapping[str, Any], table: pa.Table, where: str) -> None:
    absent = [name for name in profile["features"] if name not in table.column_names]
    if absent:
        raise WindowProfileError(
            f"{where} has no column(s) {absent} that the reference profile compares; "
            f"its columns are {table.column_names}"
        )


def _exact_ks_values(
    profile: Mapping[str, Any],
    reference: pa.Table,
    current: pa.Table,
    reference_uri: str,
    current_uri: str,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw values of each numeric feature on both sides (those with values on both)."""
    values = {}
    for name, spec in profile["features"].items():
        if spec["kind"] != "numeric":
            continue
        pair = (
            _floats(reference, name, f"--reference {reference_uri!r}"),
            _floats(current, name, f"--current {current_uri!r}"),
        )
        if all(np.count_nonzero(~np.isnan(side)) for side in pair):
            values[name] = pair
    return values


def _floats(table: pa.Table, name: str, where: str) -> np.ndarray:
    column = table.column(name)
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise WindowProfileError(
            f"{where}: column {name!r} is numeric in the reference profile but holds "
            f"{column.type} values that are not numbers: {error}"
        ) from error


def _kind(kind: pa.DataType) -> str | None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    ):
        return "number"
    return None
