"""The monitoring pipeline: window → score with the champion → drift → retrain when needed.

Read it top to bottom as the data flows. The decision is visible here: `route_retraining`
turns the drift step's findings (drift, the champion's quality estimated from its scores, the
window's labelled rows against `min_new_labelled_rows`) and the `retrain_mode` parameter into
one of three branches, each a `dsl.If`/`dsl.Elif`/`dsl.Else` at the pipeline level:

- nested: the retraining table is written and the very training pipeline runs inside this
  run — the same gate, registration and canary as any training run;
- api: the table is written and a separate run of the uploaded training pipeline is started
  through the KFP API, unless one is running or started within `cooldown_hours`;
- none: no trigger fired; the champion stays.

Every branch ends in a JSON summary (`retraining`), which the pipeline returns.
"""

from collections.abc import Mapping
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact
from kfp.dsl.base_component import BaseComponent

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.catalog import catalog
from ctloop.pipelines.placement import NETWORK_RETRY, GpuPlacement, Retry
from ctloop.pipelines.rollout import CANARY
from ctloop.pipelines.training import SERVING_RUNTIME, SINGLE, build_training_pipeline

PIPELINE_NAME = "ctloop-monitoring"


class MonitoringOutputs(NamedTuple):
    """What a monitoring run found and did: the CLI's summary."""

    drift_detected: bool
    drift_share: float
    drift: Artifact
    retraining: str


def build_monitoring_pipeline(
    image: str = DEFAULT_IMAGE,
    placement: GpuPlacement | None = None,
    trainjob: bool = True,
    resource_labels: Mapping[str, str] | None = None,
    network_retry: Retry = NETWORK_RETRY,
    feast_image: str = "",
) -> BaseComponent:
    """The monitoring pipeline, every task in `image` (the steps that may use Feast in
    `feast_image`, when given); nested retraining trains on `placement`
    (and, with `trainjob`, may train through a TrainJob: see `build_training_pipeline`);
    `resource_labels` is the default of the parameter of that name (`ctloop compile --label`);
    the steps that talk to networks are retried with `network_retry`."""
    c = catalog(image, feast_image)
    training = build_training_pipeline(
        image, placement, trainjob, network_retry=network_retry, feast_image=feast_image
    )
    retried = network_retry.apply
    default_resource_labels = dict(resource_labels or {})

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def monitoring(
        current_uri: str = "",
        window_offset_days: int = 0,
        reference_uri: str = "",
        target: str = "churn",
        key_columns: list = [],  # noqa: B006 - KFP reads defaults from the signature
        feature_repo: str = "",
        feature_service: str = "",
        drift_policy: str = "",
        min_new_labelled_rows: int = 0,
        registered_model_name: str = "ctloop-model",
        champion_alias: str = "champion",
        mlflow_tracking_uri: str = "http://mlflow.kubeflow.svc.cluster.local:5000",
        retrain_mode: str = "nested",
        retraining_data: str = "reference+current",
        retraining_max_rows: int = 0,
        retraining_data_uri: str = "",
        drop_columns: list = [],  # noqa: B006
        hyperparameters: str = "{}",
        gate_policy: str = "",
        intended_use: str = "",
        mlflow_experiment: str = "ctloop",
        mlflow_artifact_location: str = "",
        inference_service_name: str = "ctloop-model",
        namespace: str = "",
        deployment_mode: str = "Serverless",
        canary_percent: int = 10,
        serving_runtime: str = SERVING_RUNTIME,
        serving_capacity: str = "",
        deploy_target: str = "cluster",
        render_dir: str = "",
        canary_analysis: bool = True,
        prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090",
        canary_policy: str = "",
        rollout_strategy: str = CANARY,
        shadow_policy: str = "",
        ab_traffic_percent: int = 50,
        prediction_log_uri: str = "",
        trainer: str = SINGLE,
        trainjob_output_uri: str = "",
        trainjob_nodes: int = 2,
        trainjob_gpus_per_node: int = 1,
        trainjob_service_account: str = "",
        trainjob_credentials_secret: str = "",
        checkpoint_uri: str = "",
        resource_labels: dict = default_resource_labels,
        kfp_host: str = "http://ml-pipeline.kubeflow:8888",
        training_pipeline: str = "ctloop-training",
        kfp_experiment: str = "ctloop",
        training_arguments: str = "{}",
        cooldown_hours: float = 24.0,
    ) -> MonitoringOutputs:
        """Check a production window for drift against the champion and retrain when it moved.

        Args:
            current_uri: The window (Parquet/CSV path or URI); may hold {date}, {year},
                {month}, {day}, {hour} fields, filled from the run's clock (UTC).
            window_offset_days: Days back for the template's fields (1 = yesterday).
            reference_uri: The champion's training data, extended with the window when
                retraining.
            target: Label column (never a drift feature; quality is checked when present).
            key_columns: Window columns copied into the predictions (ids to join on; with
                `feature_repo`, the entity keys and event_timestamp are kept for this).
            feature_repo: Feast repository (a folder or URI holding feature_store.yaml) of
                a champion trained through Feast. Each run first materializes the feature
                values up to now into its online store, which the predictor reads; the
                window is then an entity table (keys, event_timestamp, the label when known)
                joined through `feature_service` as the training table was; retraining
                extends the champion's entity table with the window's, and the retrained
                model trains and is served through the same service. Empty: no Feast. Needs
                the Feast image (`ctloop compile --feast-image`).
            feature_service: The Feast feature service (with `feature_repo`).
            drift_policy: Drift thresholds as JSON, and bounds on the champion's quality as
                estimated from its scores (the "performance" section, e.g.
                {"performance": {"estimated_roc_auc": {"min": 0.7}, "max_drop": {"roc_auc":
                0.05}}}); empty for the defaults.
            min_new_labelled_rows: Retrain when the window holds at least this many labelled
                rows (rows the champion never saw), drifted or not; 0: no such trigger.
            registered_model_name: Registered model in MLflow.
            champion_alias: Alias of the model production serves.
            mlflow_tracking_uri: MLflow tracking server.
            retrain_mode: "nested" (train in this run) or "api" (start a training run).
            retraining_data: "reference+current", "current" or "sliding".
            retraining_max_rows: Rows kept by "sliding" (the newest).
            retraining_data_uri: Where the retraining table goes; empty:
                <reference folder>/retraining/<run id>.parquet.
            drop_columns: Columns never used as features when retraining.
            hyperparameters: XGBoost parameters (JSON) of the retrained model.
            gate_policy: Quality-gate policy (JSON) of the retrained model.
            intended_use: What the model is for (the retrained version's model card).
            mlflow_experiment: MLflow experiment of the retraining run.
            mlflow_artifact_location: Artifact root for a new experiment (empty: default).
            inference_service_name: KServe InferenceService the retrained model rolls out to.
            namespace: Namespace of the InferenceService (empty: the pipeline's).
            deployment_mode: KServe mode: "Serverless" (Knative) or "Standard".
            canary_percent: Traffic share of the retrained model while the champion keeps
                the rest.
            serving_runtime: KServe ServingRuntime of the predictor.
            serving_capacity: The predictor's replicas and resources as JSON (see the
                training pipeline); empty: KServe's defaults.
            deploy_target: "cluster" applies to Kubernetes; "render" only writes manifests.
            render_dir: Folder of rendered manifests when deploy_target is "render".
            canary_analysis: Watch the retrained model's canary in Prometheus, then promote
                or roll it back (the shadow strategies' shadow analysis runs either way).
            prometheus_url: Prometheus that scrapes the predictors (canary and shadow
                analysis).
            canary_policy: Canary analysis policy as JSON; empty uses the default.
            rollout_strategy: How the retrained model rolls out: "canary",
                "shadow-then-canary", "blue-green" or "ab" (see the training pipeline).
            shadow_policy: Shadow analysis policy as JSON; empty uses the default.
            ab_traffic_percent: Traffic share of the retrained model as an A/B variant.
            prediction_log_uri: Where A/B variants log their predictions (needed by "ab").
            trainer: Where the retrained model trains: "single" (one pod) or "trainjob"
                (several nodes through Kubeflow Trainer; see the training pipeline).
            trainjob_output_uri: Folder the TrainJob publishes the model to (for "trainjob").
            trainjob_nodes: Nodes of the TrainJob.
            trainjob_gpus_per_node: GPUs of each TrainJob node (0: CPUs only).
            trainjob_service_account: Service account of the TrainJob's workers (see the
                training pipeline).
            trainjob_credentials_secret: Secret with the workers' storage credentials (see the
                training pipeline).
            checkpoint_uri: Prefix where the retraining's one-pod train step checkpoints,
                so a retried step resumes; empty keeps none (see the training pipeline).
            resource_labels: Labels of the InferenceService the retrained model rolls out to
                (team, project, cost-center, ...); `ctloop compile --label` sets the default.
            kfp_host: KFP API endpoint, for retrain_mode "api" and the retrained version's
                lineage (which pipeline version ran).
            training_pipeline: Uploaded training pipeline, for retrain_mode "api".
            kfp_experiment: Experiment of the started training run, for retrain_mode "api".
            training_arguments: Further training parameters (JSON), for retrain_mode "api".
            cooldown_hours: No API retraining within this many hours of the last one.
        """
        with dsl.If(feature_repo != "", name="feast-online-store"):
            retried(
                c["materialize_features"](feature_repo=feature_repo).set_display_name(
                    "materialize features"
                )
            )
        window_uri = c["resolve_window"](
            uri_template=current_uri, offset_days=window_offset_days
        ).set_display_name("window")
        window = retried(
            c["load_dataset"](
                uri=window_uri.output,
                feature_repo=feature_repo,
                feature_service=feature_service,
                target=target,
                keep_entity_columns=True,
            ).set_display_name("load window")
        )
        scored = retried(
            c["score_dataset"](
                dataset=window.outputs["dataset"],
                model_uri=f"models:/{registered_model_name}@{champion_alias}",
                mlflow_tracking_uri=mlflow_tracking_uri,
                key_columns=key_columns,
            ).set_display_name("score with champion")
        )
        # Where each decision is recorded: the registry, and this KFP run.
        recorded = dict(
            registered_model_name=registered_model_name,
            mlflow_tracking_uri=mlflow_tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        drift = c["monitor_drift"](
            window=window.outputs["dataset"],
            reference_profile=scored.outputs["reference_profile"],
            predictions=scored.outputs["predictions"],
            target=target,
            policy=drift_policy,
            **recorded,
        ).set_display_name("drift")
        # The three triggers: drift, the estimated quality, and enough new labelled rows.
        triggers = dict(
            performance_alert=drift.outputs["performance_alert"],
            labelled_rows=drift.outputs["labelled_rows"],
            min_new_labelled_rows=min_new_labelled_rows,
        )
        route = c["route_retraining"](
            drift_detected=drift.outputs["drift_detected"],
            retrain_mode=retrain_mode,
            **recorded,
            **triggers,
        ).set_display_name("retrain?")

        def retraining_table():
            """The retraining table, written inside whichever branch calls this."""
            return retried(
                c["prepare_retraining_data"](
                    reference_uri=reference_uri,
                    current=window.outputs["dataset"],
                    target=target,
                    output_uri=retraining_data_uri,
                    mode=retraining_data,
                    max_rows=retraining_max_rows,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    feature_repo=feature_repo,
                ).set_display_name("retraining data")
            )

        with dsl.If(route.outputs["Output"] == "nested", name="retrain-here"):
            nested_data = retraining_table()
            retrained = training(
                data_uri=nested_data.output,
                feature_repo=feature_repo,
                feature_service=feature_service,
                target=target,
                drop_columns=drop_columns,
                hyperparameters=hyperparameters,
                gate_policy=gate_policy,
                intended_use=intended_use,
                kfp_host=kfp_host,
                mlflow_tracking_uri=mlflow_tracking_uri,
                mlflow_experiment=mlflow_experiment,
                mlflow_artifact_location=mlflow_artifact_location,
                registered_model_name=registered_model_name,
                inference_service_name=inference_service_name,
                namespace=namespace,
                deployment_mode=deployment_mode,
                canary_percent=canary_percent,
                serving_runtime=serving_runtime,
                serving_capacity=serving_capacity,
                deploy_target=deploy_target,
                render_dir=render_dir,
                canary_analysis=canary_analysis,
                prometheus_url=prometheus_url,
                canary_policy=canary_policy,
                rollout_strategy=rollout_strategy,
                shadow_policy=shadow_policy,
                ab_traffic_percent=ab_traffic_percent,
                prediction_log_uri=prediction_log_uri,
                trainer=trainer,
                trainjob_output_uri=trainjob_output_uri,
                trainjob_nodes=trainjob_nodes,
                trainjob_gpus_per_node=trainjob_gpus_per_node,
                trainjob_service_account=trainjob_service_account,
                trainjob_credentials_secret=trainjob_credentials_secret,
                checkpoint_uri=checkpoint_uri,
                resource_labels=resource_labels,
            ).set_display_name("retrain")
            summarized = c["summarize_retraining"](
                gate_passed=retrained.outputs["gate_passed"],
                gate_failures=retrained.outputs["gate_failures"],
                metrics=retrained.outputs["metrics"],
                deployment=retrained.outputs["deployment"],
            ).set_display_name("retraining outcome")
        with dsl.Elif(route.outputs["Output"] == "api", name="start-training-run"):
            api_data = retraining_table()
            started = retried(
                c["start_retraining_run"](
                    kfp_host=kfp_host,
                    training_pipeline=training_pipeline,
                    experiment=kfp_experiment,
                    data_uri=api_data.output,
                    training_arguments=training_arguments,
                    cooldown_hours=cooldown_hours,
                    feature_repo=feature_repo,
                    feature_service=feature_service,
                ).set_display_name("start training run")
            )
        with dsl.Else(name="keep-champion"):
            kept = c["keep_champion"](
                drift_share=drift.outputs["drift_share"], **triggers
            ).set_display_name("keep champion")

        return MonitoringOutputs(
            drift_detected=drift.outputs["drift_detected"],
            drift_share=drift.outputs["drift_share"],
            drift=drift.outputs["drift"],
            retraining=dsl.OneOf(summarized.output, started.output, kept.output),
        )

    return monitoring
