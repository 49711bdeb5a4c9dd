"""KFP components of the canary family: analyse a canary, promote or roll back a version, and
end an A/B experiment (its control variant, its challengers rolled back)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def analyze_canary(
    model_version: str,
    prometheus_url: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    decision: Output[Markdown],
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    policy: str = "",
    metrics_model_name: str = "",
    timeout_s: int = 600,
) -> NamedTuple("CanaryOutputs", action=str, verdict=str):
    """Watch the canary's live metrics against the champion's, then promote or roll it back.

    Every `step_s` for `bake_time_s` (from the policy) the canary's error rate, p99 latency
    and score distribution are compared with the champion's, from the predictor's Prometheus
    metrics. A failing check rolls the canary back at once; passing every check to the end
    promotes it (all traffic, MLflow alias `champion`). Too few canary requests is
    inconclusive, which rolls back unless the policy says otherwise. A version that already
    serves all traffic as the champion (first deployment) is promoted without analysis.

    Args:
        model_version: The registered version serving as the canary.
        prometheus_url: Prometheus that scrapes the predictor, e.g. http://prometheus:9090.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        decision: The decision, every check with its value and threshold, and what was done.
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

    Returns:
        action: "promote" or "rollback".
        verdict: "promote", "rollback", "inconclusive", or "champion" when there was no
            canary to analyse.
    """
    from ctloop.components.canary.policy import parse_canary_policy
    from ctloop.components.canary.prometheus import PrometheusClient
    from ctloop.components.canary.promotion import run_canary_analysis
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
    with open(decision.path, "w") as handle:
        handle.write(outcome_markdown(analysed, outcome))
    label = analysed.verdict if analysed is not None else "champion"
    decision.metadata["display_name"] = f"Canary: {label} → {outcome['action']}"
    return (outcome["action"], label)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def promote_version(
    model_version: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
) -> str:
    """Give `model_version` all traffic and make it the champion (MLflow alias `champion`).

    Used where a decision other than canary analysis promotes: a blue-green switch after a
    passed shadow, the winner of an A/B experiment, a first deployment. Idempotent.

    Args:
        model_version: The registered version to promote (a canary, an A/B variant, or the
            version already serving all traffic).
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after the change.

    Returns:
        JSON summary: the service's steps and the registry's changes.
    """
    import json

    from ctloop.components.canary.promotion import promote
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

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
    return json.dumps(outcome, sort_keys=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def roll_back_version(
    model_version: str,
    reason: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
) -> str:
    """Take `model_version` out of service and record why in MLflow (`ctloop.rolled_back`).

    A version the service no longer serves (e.g. a rejected shadow, already removed) is only
    recorded. Idempotent.

    Args:
        model_version: The registered version to roll back.
        reason: Why, recorded on the version.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after each change.

    Returns:
        JSON summary: the service's steps and the registry's changes.
    """
    import json

    from ctloop.components.canary.promotion import roll_back
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

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
    return json.dumps(outcome, sort_keys=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def roll_back_variants(
    reason: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    timeout_s: int = 600,
) -> str:
    """End an A/B experiment the control won: roll back every challenger variant.

    Args:
        reason: Why, recorded on each rolled-back version.
        registered_model_name: Registered model in MLflow.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        inference_service_name: Name of the InferenceService.
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" or "Standard"; must be the service's mode.
        timeout_s: Seconds to wait for the service to be Ready after each change.

    Returns:
        JSON summary: the versions rolled back and what changed.
    """
    import json

    from ctloop.components.canary.variants import roll_back_challengers
    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.rollout import resolve_namespace

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
