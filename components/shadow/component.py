"""KFP component of the shadow family: decide from the paired figures whether to go on."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def analyze_shadow(
    shadow_version: str,
    prometheus_url: str,
    decision: Output[Markdown],
    record: Output[Artifact],
    inference_service_name: str = "ctloop-model",
    metrics_model_name: str = "",
    policy: str = "",
    timeout_s: int = 30,
    served_version: str = "",
    namespace: str = "",
    mlflow_tracking_uri: str = "",
    registered_model_name: str = "",
    kfp_run_id: str = "",
) -> NamedTuple("ShadowOutputs", go_on=bool, verdict=str):
    """Compare a shadow model's scores with the served model's on the same requests.

    The predictor scores every request with the served model and, off the request path, with
    the shadow, and counts the paired figures in Prometheus. Every `step_s` for `bake_time_s`
    (from the policy) they are checked: the disagreement rate of the 0/1 labels, the mean
    absolute score difference, the shadow's error rate and, when set, the share of rows
    skipped. A failing check, once `min_rows` stand behind it, rejects the shadow at once;
    passing to the end goes on to a canary. Too few compared rows is inconclusive, which
    rejects unless the policy says otherwise. Nothing on the cluster is changed here.

    Args:
        shadow_version: The registered version running as the shadow.
        prometheus_url: Prometheus that scrapes the predictor, e.g. http://prometheus:9090.
        decision: The decision, the paired figures and every check with its threshold.
        record: The decision record (JSON): every reading's figures, the policy, the verdict;
            the trigger to give the promotion or rollback that follows.
        inference_service_name: Name of the InferenceService.
        metrics_model_name: `model_name` label of the predictor's metrics; empty means
            the InferenceService name.
        policy: Shadow policy as JSON; empty uses ctloop's default, e.g.
            {"min_rows": 1000, "max_disagreement_rate": 0.02,
             "max_mean_abs_difference": 0.05, "max_error_rate": 0.0,
             "bake_time_s": 600, "step_s": 30}.
        timeout_s: Seconds each Prometheus query may take.
        served_version: The served (champion) version; empty matches any.
        namespace: `namespace` label of the predictor's series; empty matches any.
        mlflow_tracking_uri: MLflow tracking server the record is logged to; empty: the
            record is only the artifact. A record that cannot be logged fails the step (it
            is printed to the log).
        registered_model_name: Registered model in MLflow (the record's subject).
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the record.

    Returns:
        go_on: True when the rollout goes on to a canary.
        verdict: "go_on", "reject" or "inconclusive".
    """
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.shadow.decision import run_shadow_analysis, shadow_record
    from ctloop.components.shadow.measurement import ShadowTarget
    from ctloop.components.shadow.policy import parse_shadow_policy
    from ctloop.components.shadow.report import decision_markdown

    target = ShadowTarget(
        metrics_model_name or inference_service_name, shadow_version, served_version, namespace
    )
    analysed = run_shadow_analysis(
        parse_shadow_policy(policy), target, prometheus_url=prometheus_url, timeout_s=timeout_s
    )
    with open(decision.path, "w") as handle:
        handle.write(decision_markdown(analysed))
    decision.metadata["display_name"] = f"Shadow: {analysed.verdict} → {analysed.action}"
    subject = {"registered_model": registered_model_name, "kfp_run_id": kfp_run_id}
    kept = shadow_record(analysed, policy_text=policy, **subject)
    keep_records([(kept, record.path)], mlflow_tracking_uri)
    return (analysed.go_on, analysed.verdict)
