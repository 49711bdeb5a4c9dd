"""KFP components of the canary family: analyse a canary, promote or roll back a version, and
end an A/B experiment (its control variant, its challengers rolled back).

Each decision is a record artifact too (`ctloop.components.decisions.record`), logged to MLflow
with the tracking URI; a promotion or rollback names the analysis record that triggered it
(`trigger`). When a record cannot be logged the step fails, saying what it had already
applied, with every record printed to its log (`ctloop.components.canary.record_keeping`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def analyze_canary(
    model_version: str,
    prometheus_url: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    decision: Output[Markdown],
    record: Output[Artifact],
    action_record: Output[Artifact],
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    policy: str = "",
    metrics_model_name: str = "",
    timeout_s: int = 600,
    kfp_run_id: str = "",
) -> NamedTuple("CanaryOutputs", action=str, verdict=str):
    """Watch the canary's live metrics against the champion's, then promote or roll it back.

    Every `step_s` for `bake_time_s` (from the policy) the canary's error rate, p99 latency
    and score distribution are compared with the champion's, from the predictor's Prometheus
    metrics. A failing check rolls the canary back at once; passing every check to the end
    promotes it (all traffic, MLflow alias `champion`). Too few canary requests is
    inconclusive, which rolls back unless the policy says otherwise. A version that already
    serves all traffic as the champion (first deployment) is promoted without analysis.

    Both decisions, the analysis and the promotion or rollback, are records logged to MLflow
    after the action; when they cannot be logged the step fails, saying that the action WAS
    applied, with the records printed whole to its log. A retry finds the action done (a
    rollback stopped part-way is finished), logs each record once, reusing the analysis the
    first try logged, and returns the first try's action and verdict.

    Args:
        model_version: The registered version serving as the canary.
        prometheus_url: Prometheus that scrapes the predictor, e.g. http://prometheus:9090.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        decision: The decision, every check with its value and threshold, and what was done.
        record: The analysis' decision record (JSON): every reading of both versions'
            figures, the policy, the verdict; logged to MLflow too.
        action_record: The promotion's or rollback's decision record (JSON), naming the
            analysis record as its trigger; logged to MLflow too.
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        policy: Canary policy as JSON; empty uses ctloop's default, e.g.
            {"bake_time_s": 600, "step_s": 30, "min_requests": 200,
             "error_rate": {"max_increase": 0.01},
             "latency_p99_ms": {"max": 250, "max_increase_relative": 0.5},
             "score_shift": {"psi_max": 0.2}}.
        metrics_model_name: `model_name` label of the predictor's metrics; empty means
            the InferenceService name.
        timeout_s: Seconds to wait for the service to be Ready after each change.
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the records.

    Returns:
        action: "promote" or "rollback".
        verdict: "promote", "rollback", "inconclusive", or "champion" when there was no
            canary to analyse (a first deployment, or a retry after a promotion whose
            analysis the first try could not log).
    """
    from ctloop.components.canary.policy import parse_canary_policy
    from ctloop.components.canary.prometheus import PrometheusClient
    from ctloop.components.canary.promotion import run_canary_analysis
    from ctloop.components.canary.promotion_record import applied_text, canary_analysis_records
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.canary.report import outcome_markdown
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

    analysed, outcome = run_canary_analysis(
        kube_api(),
        PrometheusClient(prometheus_url),
        parse_canary_policy(policy),
        mlflow_tracking_uri,
        name=inference_service_name,
        namespace=resolve_namespace(namespace),
        registered_model=registered_model_name,
        version=model_version,
        deployment_mode=deployment_mode,
        metrics_model_name=metrics_model_name,
        timeout_s=timeout_s,
    )
    analysis, action = canary_analysis_records(
        analysed,
        outcome,
        policy_text=policy,
        registered_model=registered_model_name,
        kfp_run_id=kfp_run_id,
        tracking_uri=mlflow_tracking_uri,
    )
    with open(decision.path, "w") as handle:
        handle.write(outcome_markdown(analysed, outcome, analysis))
    label = analysis.outcome["verdict"]
    decision.metadata["display_name"] = f"Canary: {label} → {outcome['action']}"
    kept = [(analysis, record.path), (action, action_record.path)]
    keep_records(kept, mlflow_tracking_uri, applied=applied_text(outcome))
    return (outcome["action"], label)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def promote_version(
    model_version: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    record: Output[Artifact],
    trigger: Input[Artifact] = None,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
    kfp_run_id: str = "",
) -> str:
    """Give `model_version` all traffic and make it the champion (MLflow alias `champion`).

    Used where a decision other than canary analysis promotes: a blue-green switch after a
    passed shadow, the winner of an A/B experiment, a first deployment. Idempotent.

    The promotion is a decision record naming its trigger, logged to MLflow after the change;
    when it cannot be logged the step fails, saying the promotion WAS applied, with the record
    printed whole to its log.

    Args:
        model_version: The registered version to promote (a canary, an A/B variant, or the
            version already serving all traffic).
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        record: The promotion's decision record (JSON): its trigger, the champion and canary
            before and after, what changed; logged to MLflow too.
        trigger: The decision record of the analysis that led here (a shadow's or an A/B
            experiment's `record`); none: the record says no analysis was given.
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after the change.
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the record.

    Returns:
        JSON summary: the service's steps and the registry's changes.
    """
    import json

    from ctloop.components.canary.promotion import promote
    from ctloop.components.canary.promotion_record import (
        action_record,
        applied_text,
        step_trigger,
    )
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

    cause = step_trigger(trigger.path if trigger is not None else "")

    outcome = promote(
        kube_api(),
        mlflow_tracking_uri,
        name=inference_service_name,
        namespace=resolve_namespace(namespace),
        registered_model=registered_model_name,
        version=model_version,
        deployment_mode=deployment_mode,
        timeout_s=timeout_s,
    )
    promoted = action_record(
        outcome, cause, registered_model=registered_model_name, kfp_run_id=kfp_run_id
    )
    keep_records([(promoted, record.path)], mlflow_tracking_uri, applied=applied_text(outcome))
    return json.dumps(outcome, sort_keys=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def roll_back_version(
    model_version: str,
    reason: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    record: Output[Artifact],
    trigger: Input[Artifact] = None,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
    kfp_run_id: str = "",
) -> str:
    """Take `model_version` out of service and record why in MLflow (`ctloop.rolled_back`).

    A version the service no longer serves (e.g. a rejected shadow, already removed) is only
    recorded. Idempotent.

    The rollback is a decision record naming its trigger, logged to MLflow after the change;
    when it cannot be logged the step fails, saying the rollback WAS applied, with the record
    printed whole to its log.

    Args:
        model_version: The registered version to roll back.
        reason: Why, recorded on the version.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        record: The rollback's decision record (JSON): its trigger, the champion and canary
            before and after, what changed; logged to MLflow too.
        trigger: The decision record of the analysis that led here (a shadow's `record`);
            none: the record says no analysis was given, with `reason`.
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after each change.
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the record.

    Returns:
        JSON summary: the service's steps and the registry's changes.
    """
    import json

    from ctloop.components.canary.promotion import roll_back
    from ctloop.components.canary.promotion_record import (
        action_record,
        applied_text,
        step_trigger,
    )
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

    cause = step_trigger(trigger.path if trigger is not None else "", reason)

    outcome = roll_back(
        kube_api(),
        mlflow_tracking_uri,
        name=inference_service_name,
        namespace=resolve_namespace(namespace),
        registered_model=registered_model_name,
        version=model_version,
        reasons=[reason],
        deployment_mode=deployment_mode,
        timeout_s=timeout_s,
    )
    rolled_back = action_record(
        outcome,
        cause,
        reasons=[reason],
        registered_model=registered_model_name,
        kfp_run_id=kfp_run_id,
    )
    keep_records([(rolled_back, record.path)], mlflow_tracking_uri, applied=applied_text(outcome))
    return json.dumps(outcome, sort_keys=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def roll_back_variants(
    reason: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    record: Output[Artifact],
    trigger: Input[Artifact] = None,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
    kfp_run_id: str = "",
) -> str:
    """End an A/B experiment the control won: roll back every challenger variant.

    Each rollback is a decision record naming its trigger, logged to MLflow after the change;
    when they cannot be logged the step fails, saying the rollbacks WERE applied, with the
    records printed whole to its log.

    Args:
        reason: Why, recorded on each rolled-back version.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        record: A folder of rollback decision records (JSON), one per rolled-back version,
            `<version>.json`, each naming its trigger; each logged to MLflow too, so every
            version's history shows its own rollback.
        trigger: The decision record of the A/B analysis that led here; none: the records
            say no analysis was given, with `reason`.
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after each change.
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the records.

    Returns:
        JSON summary: the versions rolled back and what changed.
    """
    import json
    import os

    from ctloop.components.canary.promotion_record import (
        applied_text,
        rollback_records,
        step_trigger,
    )
    from ctloop.components.canary.record_keeping import keep_records
    from ctloop.components.canary.variants import roll_back_challengers
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

    cause = step_trigger(trigger.path if trigger is not None else "", reason)
    outcome = roll_back_challengers(
        kube_api(),
        mlflow_tracking_uri,
        name=inference_service_name,
        namespace=resolve_namespace(namespace),
        registered_model=registered_model_name,
        reasons=[reason],
        deployment_mode=deployment_mode,
        timeout_s=timeout_s,
    )
    subject = {"registered_model": registered_model_name, "kfp_run_id": kfp_run_id}
    records = rollback_records(outcome, cause, reasons=[reason], **subject)
    os.makedirs(record.path, exist_ok=True)
    kept = [(r, os.path.join(record.path, f"{r.subject['model_version']}.json")) for r in records]
    keep_records(kept, mlflow_tracking_uri, applied=applied_text(outcome))
    return json.dumps(outcome, sort_keys=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def resolve_control_variant(
    control_variant: str, registered_model_name: str, mlflow_tracking_uri: str
) -> str:
    """The A/B experiment's control: `control_variant` when given, else the champion's version
    (on a cluster each variant is named for the version it serves).

    Args:
        control_variant: The control's variant name; empty means the champion's version.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).

    Returns:
        The control's variant name.
    """
    from ctloop.components.registry import mlflow_registry

    if control_variant:
        return control_variant
    champion = mlflow_registry.version_with_alias(mlflow_tracking_uri, registered_model_name)
    if champion is None:
        raise mlflow_registry.RegistryError(
            f"registered model {registered_model_name!r} has no {mlflow_registry.CHAMPION}: "
            "name the A/B experiment's control variant"
        )
    return champion
