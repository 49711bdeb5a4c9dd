"""KFP component of the experiment family: judge an A/B experiment on its outcomes."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def analyze_ab(
    prediction_log_uri: str,
    labels_uri: str,
    control_variant: str,
    decision: Output[Markdown],
    record: Output[Artifact],
    policy: str = "",
    mlflow_tracking_uri: str = "",
    registered_model_name: str = "",
    kfp_run_id: str = "",
) -> NamedTuple("ABOutputs", action=str, winner=str):
    """Compare each challenger variant with the control on the outcomes of their requests.

    The prediction log (one row per scored row: request id, variant, score) is joined with
    the labels table (request_id, optional row, the policy's outcome column) and each
    challenger is compared with the control on log loss or the mean of a business outcome,
    by an always-valid sequential test (mSPRT), so the analysis can run every day without
    raising its false-winner rate. Rows without a label are counted, never guessed.

    Args:
        prediction_log_uri: Folder (or file) of the prediction log's Parquet files, local or
            s3://, gs://...
        labels_uri: Labels table (Parquet or CSV): request_id, optional row (default 0), and
            the outcome column the policy names.
        control_variant: The control's variant name (on a cluster: the champion's version);
            every other variant in the log is a challenger.
        decision: Each variant's rows and metric, each challenger's difference from the
            control with its always-valid interval, and the decision with its reasons.
        record: The decision record (JSON): per variant its rows and the summary the test
            used (not the log), the policy, the action and winner; the trigger to give the
            promotion or rollback that follows.
        policy: Experiment policy as JSON; empty uses ctloop's default, e.g.
            {"metric": "log_loss", "outcome_column": "label", "alpha": 0.05,
             "min_labelled_rows": 1000, "mixing_variance": 0.002}; for a business outcome
            {"metric": "outcome_mean", "outcome_column": "revenue", "better": "higher"}.
        mlflow_tracking_uri: MLflow tracking server the record is logged to; empty: the
            record is only the artifact. A record that cannot be logged fails the step (it
            is printed to the log).
        registered_model_name: Registered model in MLflow (the record's subject).
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the record.

    Returns:
        action: "promote" (a challenger is better), "rollback" (every challenger is worse:
            remove them) or "continue" (not decided yet).
        winner: The promoted challenger, the control on rollback, empty on continue.
    """
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.experiment.decision import ab_record, run_ab_analysis
    from ctloop.components.experiment.report import decision_markdown

    analysed = run_ab_analysis(prediction_log_uri, labels_uri, control_variant, policy)
    with open(decision.path, "w") as handle:
        handle.write(decision_markdown(analysed))
    label = f"{analysed.action} {analysed.winner}".strip()
    decision.metadata["display_name"] = f"A/B analysis: {label}"
    kept = ab_record(
        analysed,
        policy_text=policy,
        prediction_log_uri=prediction_log_uri,
        labels_uri=labels_uri,
        registered_model=registered_model_name,
        kfp_run_id=kfp_run_id,
    )
    keep_records([(kept, record.path)], mlflow_tracking_uri)
    return (analysed.action, analysed.winner)
