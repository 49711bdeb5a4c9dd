"""KFP component of the drift family: a window compared with the model's reference profile."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def monitor_drift(
    window: Input[Dataset],
    reference_profile: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    drift: Output[Artifact],
    record: Output[Artifact],
    predictions: Input[Dataset] = None,
    target: str = "",
    policy: str = "",
    baseline_metrics: str = "",
    registered_model_name: str = "",
    model_version: str = "",
    mlflow_tracking_uri: str = "",
    kfp_run_id: str = "",
) -> NamedTuple(
    "DriftOutputs",
    drift_detected=bool,
    drift_share=float,
    performance_alert=bool,
    labelled_rows=int,
):
    """Decide whether a production window drifted from the model's reference profile.

    Every feature is measured (PSI, Jensen-Shannon distance, KS, Cramér's V, unseen
    categories, missing rate) over the profile's own bins, in one streaming pass; thresholds
    are effect sizes, raised to the small-sample noise bound on small windows. With
    predictions, the score distribution is compared too and, when the window holds the
    label, the model's quality on it; and when the model's profile carries the calibration
    of its scores (checked at evaluation), its ROC AUC, accuracy and log loss are estimated
    on the window from the scores alone, with intervals, beside the realized ones when
    labels are there. The decision is recorded with the figures it was taken from.

    Args:
        window: The current window's rows.
        reference_profile: The model's reference profile (JSON), e.g. from score_dataset.
        metrics: Drift share, drifted feature count, top severities, for the UI.
        report: The drift report page, for the UI.
        drift: Every figure as JSON.
        record: The decision record (JSON): the measured figures, the estimate, the profile's
            SHA-256 and the policy text, so `ctloop replay` can decide it again.
        predictions: The model's scores on the window (`score` column, row for row).
        target: Label column: never compared as a feature; used for quality when present.
        policy: Drift policy JSON (thresholds per measure and feature, drift_share, and
            bounds on the estimated performance under "performance"); empty for the
            defaults.
        baseline_metrics: JSON object of the model's evaluation metrics (evaluate_model's
            candidate_metrics) the window's quality is compared with; empty for none.
        registered_model_name: Registered model the champion belongs to (the record's
            subject).
        model_version: The champion's version (the record's subject); empty: the one
            score_dataset noted on the reference profile, else unknown.
        mlflow_tracking_uri: MLflow tracking server that keeps the decision record too;
            empty: only the artifact.
        kfp_run_id: The KFP run (the record's subject).

    Returns:
        drift_detected: Whether the window drifted, by the policy.
        drift_share: (Weighted) share of features that drifted.
        performance_alert: Whether the estimated performance crossed a bound of the policy.
        labelled_rows: Window rows with a label (0 without a label column).
    """
    from ctloop.components.decisions.record import write_record
    from ctloop.components.drift.monitor import run_drift

    outcome = run_drift(
        window.path,
        reference_profile.path,
        predictions_path=predictions.path if predictions is not None else None,
        target=target,
        policy=policy,
        baseline_metrics=baseline_metrics,
    )
    outcome.write(drift.path, report.path)
    scored_version = reference_profile.metadata.get("model_version")
    decision = outcome.record(
        policy=policy,
        registered_model=registered_model_name,
        model_version=model_version or ("" if scored_version is None else str(scored_version)),
        kfp_run_id=kfp_run_id,
    )
    write_record(decision, record.path)
    if mlflow_tracking_uri:
        from ctloop.components.decisions.store import log_record

        log_record(mlflow_tracking_uri, decision)
    for name, value in outcome.metrics().items():
        metrics.log_metric(name, value)
    titles = (
        (metrics, "Drift"),
        (report, "Drift report"),
        (drift, "Drift figures"),
        (record, "Drift decision record"),
    )
    for artifact, title in titles:
        artifact.metadata["display_name"] = title
    result = outcome.result
    return (
        result.drift_detected,
        result.drift_share,
        result.performance_alert,
        result.labelled_rows,
    )
