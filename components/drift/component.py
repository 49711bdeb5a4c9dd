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
    predictions: Input[Dataset] = None,
    target: str = "",
    policy: str = "",
    baseline_metrics: str = "",
) -> NamedTuple("DriftOutputs", drift_detected=bool, drift_share=float):
    """Decide whether a production window drifted from the model's reference profile.

    Every feature is measured (PSI, Jensen-Shannon distance, KS, Cramér's V, unseen
    categories, missing rate) over the profile's own bins, in one streaming pass; thresholds
    are effect sizes, raised to the small-sample noise bound on small windows. With
    predictions, the score distribution is compared too and, when the window holds the
    label, the model's quality on it.

    Args:
        window: The current window's rows.
        reference_profile: The model's reference profile (JSON), e.g. from score_dataset.
        metrics: Drift share, drifted feature count, top severities, for the UI.
        report: The drift report page, for the UI.
        drift: Every figure as JSON.
        predictions: The model's scores on the window (`score` column, row for row).
        target: Label column: never compared as a feature; used for quality when present.
        policy: Drift policy JSON (thresholds per measure and feature, drift_share);
            empty for the defaults.
        baseline_metrics: JSON object of the model's evaluation metrics (evaluate_model's
            candidate_metrics) the window's quality is compared with; empty for none.

    Returns:
        drift_detected: Whether the window drifted, by the policy.
        drift_share: (Weighted) share of features that drifted.
    """
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
    for name, value in outcome.metrics().items():
        metrics.log_metric(name, value)
    for artifact, title in ((metrics, "Drift"), (report, "Drift report"), (drift, "Drift figures")):
        artifact.metadata["display_name"] = title
    return (outcome.result.drift_detected, outcome.result.drift_share)
