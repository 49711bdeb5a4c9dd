"""The rollout of a registered candidate: canary, shadow then canary, blue-green, or A/B.

A pipeline of its own, nested in the training pipeline after the gate (and so in the
retraining that monitoring runs), so that each strategy's decisions are visible as
`dsl.If` branches here rather than inside a step:

- canary: deploy as a canary → canary analysis promotes or rolls back (today's rollout);
- shadow-then-canary: deploy as a shadow of the champion → shadow analysis → go on: deploy as
  a canary → canary analysis; rejected: remove the shadow → record the rollback;
- blue-green: deploy as a shadow → shadow analysis → go on: switch all traffic at once →
  promote; rejected: as above;
- ab: deploy as an A/B variant beside the champion, every variant logging its predictions;
  the decision comes later, from the scheduled `ctloop-ab-analysis` pipeline
  (`ctloop.pipelines.experiment`).

With no service yet there is nothing to compare with: any strategy's first deploy serves the
new model to all traffic, and canary analysis (when on) promotes it as the first champion.
"""

from kfp import dsl
from kfp.dsl import Input, Model
from kfp.dsl.base_component import BaseComponent

from ctloop.components.image import SERVING_RUNTIME
from ctloop.pipelines.placement import NETWORK_RETRY, Retry

PIPELINE_NAME = "ctloop-rollout"
CANARY, SHADOW_THEN_CANARY, BLUE_GREEN, AB = "canary", "shadow-then-canary", "blue-green", "ab"
ROLLOUT_STRATEGIES = (CANARY, SHADOW_THEN_CANARY, BLUE_GREEN, AB)


def build_rollout_pipeline(
    c: dict[str, BaseComponent], network_retry: Retry = NETWORK_RETRY
) -> BaseComponent:
    """The rollout pipeline from the catalog `c` (components bound to the run's image); every
    step talks to Kubernetes, MLflow or Prometheus and is retried with `network_retry`."""
    retried = network_retry.apply

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def rollout(
        model: Input[Model],
        model_version: str,
        alias: str,
        registered_model_name: str,
        mlflow_tracking_uri: str,
        rollout_strategy: str = CANARY,
        inference_service_name: str = "ctloop-model",
        namespace: str = "",
        deployment_mode: str = "Serverless",
        canary_percent: int = 10,
        serving_runtime: str = SERVING_RUNTIME,
        service_account: str = "",
        serving_capacity: str = "",
        deploy_target: str = "cluster",
        render_dir: str = "",
        canary_analysis: bool = True,
        prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090",
        canary_policy: str = "",
        shadow_policy: str = "",
        ab_traffic_percent: int = 50,
        prediction_log_uri: str = "",
        resource_labels: dict = {},  # noqa: B006 - KFP reads defaults from the signature
        feature_repo: str = "",
        feature_service: str = "",
    ) -> str:
        """Roll the registered version out with the chosen strategy; returns the first
        deploy step's summary (JSON). Every deploy step puts `resource_labels` on the
        InferenceService."""
        service = {
            "inference_service_name": inference_service_name,
            "namespace": namespace,
            "deployment_mode": deployment_mode,
        }
        # Where each decision is recorded: the registry, and this KFP run.
        registry = {
            "registered_model_name": registered_model_name,
            "mlflow_tracking_uri": mlflow_tracking_uri,
            "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        }

        def deploy(stage: str, percent, name: str):
            return retried(
                c["deploy_model"](
                    model=model,
                    model_version=model_version,
                    registered_model_name=registered_model_name,
                    alias=alias,
                    canary_percent=percent,
                    serving_runtime=serving_runtime,
                    service_account=service_account,
                    serving_capacity=serving_capacity,
                    target=deploy_target,
                    render_dir=render_dir,
                    stage=stage,
                    prediction_log_uri=prediction_log_uri,
                    labels=resource_labels,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                    feature_repo=feature_repo,
                    feature_service=feature_service,
                    **service,
                ).set_display_name(name)
            )

        def analyze_canary(after):
            with dsl.If(canary_analysis == True, name="canary-analysis"):  # noqa: E712
                retried(
                    c["analyze_canary"](
                        model_version=model_version,
                        prometheus_url=prometheus_url,
                        policy=canary_policy,
                        **service,
                        **registry,
                    )
                    .after(after)
                    .set_display_name("canary analysis")
                )

        with dsl.If(rollout_strategy == CANARY, name="canary"):
            canaried = deploy("canary", canary_percent, "deploy canary")
            analyze_canary(canaried)
        with dsl.Elif(rollout_strategy == AB, name="ab"):
            variant = deploy("ab", ab_traffic_percent, "deploy A/B variant")
        with dsl.Else(name="shadow-first"):
            shadowed = deploy("shadow", canary_percent, "deploy shadow")
            with dsl.If(shadowed.outputs["serves_as"] == "shadow", name="shadowing"):
                shadow = retried(
                    c["analyze_shadow"](
                        shadow_version=model_version,
                        prometheus_url=prometheus_url,
                        inference_service_name=inference_service_name,
                        namespace=namespace,
                        policy=shadow_policy,
                        **registry,
                    ).set_display_name("shadow analysis")
                )
                with dsl.If(shadow.outputs["go_on"] == True, name="shadow-passed"):  # noqa: E712
                    with dsl.If(rollout_strategy == BLUE_GREEN, name="blue-green"):
                        switched = deploy("canary", 100, "switch all traffic")
                        retried(
                            c["promote_version"](
                                model_version=model_version,
                                trigger=shadow.outputs["record"],
                                **service,
                                **registry,
                            )
                            .after(switched)
                            .set_display_name("promote")
                        )
                    with dsl.Else(name="then-canary"):
                        canaried_after_shadow = deploy("canary", canary_percent, "deploy canary")
                        analyze_canary(canaried_after_shadow)
                with dsl.Else(name="shadow-rejected"):
                    removed = deploy("unshadow", canary_percent, "remove shadow")
                    retried(
                        c["roll_back_version"](
                            model_version=model_version,
                            reason=f"shadow analysis: {shadow.outputs['verdict']}",
                            trigger=shadow.outputs["record"],
                            **service,
                            **registry,
                        )
                        .after(removed)
                        .set_display_name("record rejection")
                    )
            with dsl.Else(name="first-deployment"):
                analyze_canary(shadowed)

        return dsl.OneOf(
            canaried.outputs["deployment"],
            variant.outputs["deployment"],
            shadowed.outputs["deployment"],
        )

    return rollout
