"""The training pipeline: load → validate → split → train → evaluate → gate → register → rollout.

Read it top to bottom as the data flows. The gate's decision is visible here, as a
`dsl.If` at the pipeline level: only a blessed candidate is registered and rolled out; a
rejected one is tagged in MLflow with the reasons. The rollout is a nested pipeline
(`ctloop.pipelines.rollout`) whose branches are the strategies and their decisions.
"""

from collections.abc import Mapping
from typing import NamedTuple

from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from ctloop.components.image import DEFAULT_IMAGE, SERVING_RUNTIME
from ctloop.pipelines.catalog import catalog
from ctloop.pipelines.placement import NETWORK_RETRY, GpuPlacement, Placement, Retry
from ctloop.pipelines.rollout import CANARY, build_rollout_pipeline

PIPELINE_NAME = "ctloop-training"
SINGLE, TRAINJOB = "single", "trainjob"
TRAINERS = (SINGLE, TRAINJOB)
"""Where the train step trains: its own pod, or a Kubeflow Trainer TrainJob on several nodes."""


class TrainingOutputs(NamedTuple):
    """What a training run decided: the CLI's summary and a parent pipeline's inputs."""

    gate_passed: bool
    gate_failures: str
    metrics: str
    deployment: str


def build_training_pipeline(
    image: str = DEFAULT_IMAGE,
    placement: Placement | None = None,
    trainjob: bool = True,
    resource_labels: Mapping[str, str] | None = None,
    network_retry: Retry = NETWORK_RETRY,
    feast_image: str = "",
) -> BaseComponent:
    """The training pipeline with every task in `image` (the load step in `feast_image`, when
    given, for the `feature_repo` parameter) and the train task on `placement`;
    `resource_labels` is the default of the parameter of that name (`ctloop compile --label`);
    the steps that talk to networks are retried with `network_retry` (registration excepted,
    see `NETWORK_RETRY`).

    `trainjob` False leaves out the TrainJob branch, for kfp.local: it cannot create a
    TrainJob, nor pick an artifact out of two branches (`dsl.OneOf` of artifacts fails there
    with "Expected 1 artifact in ArtifactSelectorSpec"), so a local run trains in one step,
    outside any branch, and refuses `trainer=trainjob` (`check_local_trainer`).
    """
    c = catalog(image, feast_image)
    placement = placement or GpuPlacement()
    train_model = placement.wrap(c["train_model"])
    rollout = build_rollout_pipeline(c, network_retry)
    retried = network_retry.apply
    default_resource_labels = dict(resource_labels or {})

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def training(
        data_uri: str = "",
        feature_repo: str = "",
        feature_service: str = "",
        target: str = "churn",
        task: str = "binary",
        drop_columns: list = [],  # noqa: B006 - KFP reads defaults from the signature
        min_rows: int = 100,
        validation_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        time_column: str = "",
        hyperparameters: str = "{}",
        device: str = "auto",
        gate_policy: str = "",
        intended_use: str = "",
        mlflow_tracking_uri: str = "http://mlflow.kubeflow.svc.cluster.local:5000",
        mlflow_experiment: str = "ctloop",
        mlflow_artifact_location: str = "",
        registered_model_name: str = "ctloop-model",
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
    ) -> TrainingOutputs:
        """Train an XGBoost model, gate it against the champion and roll it out on KServe.

        Args:
            data_uri: Parquet or CSV training table (path or pyarrow URI: s3://, gs://, ...,
                or dvc://<repo>?path=<path>&rev=<rev>); with `feature_repo`, the entity table:
                key, event_timestamp and the label, nothing else.
            feature_repo: Feast repository, a folder or a URI (s3://, gs://) holding
                feature_store.yaml: the features are joined onto `data_uri`'s entity rows as
                of each row's time (Feast's point-in-time join), the feature service and its
                version go into the model's lineage; needs the Feast image (`ctloop compile
                --feast-image`). The predictor then takes entity keys too, looking their
                features up in the online store (needs serving_runtime ctloop-xgboost-feast).
                Empty: `data_uri` is the table.
            feature_service: The Feast feature service the model trains on (with
                `feature_repo`).
            target: Label column.
            task: "binary" or "regression".
            drop_columns: Columns never used as features (ids, timestamps).
            min_rows: Fewest rows accepted.
            validation_fraction: Share of rows for early stopping.
            test_fraction: Share of rows for evaluation and the gate.
            split_seed: Seed of the random split.
            time_column: Split by this column (oldest train, newest test) instead of randomly.
            hyperparameters: JSON object of XGBoost parameters over ctloop's defaults.
            device: "auto" (CUDA when a GPU is visible), "cuda" or "cpu".
            gate_policy: Quality-gate policy as JSON; empty uses the default for the task. Its
                `slices` section judges groups too (per-group floors, regression against the
                champion, the largest gap in TPR, FPR or selection rate between the groups of a
                column), e.g. {"slices": {"categorical": ["gender"], "max_gap": {"gender":
                {"tpr": 0.1}}}}; the evaluation then measures every group.
            intended_use: What the model is for, and not for, in a sentence or two: the
                model card of each registered version opens with it.
            mlflow_tracking_uri: MLflow tracking server.
            mlflow_experiment: MLflow experiment of the training runs.
            mlflow_artifact_location: Artifact root for a new experiment (empty: default).
            registered_model_name: Registered model in MLflow.
            inference_service_name: KServe InferenceService to create or update.
            namespace: Namespace of the InferenceService (empty: the pipeline's).
            deployment_mode: KServe mode: "Serverless" (Knative) or "Standard".
            canary_percent: Traffic share of a new model while the champion keeps the rest.
            serving_runtime: KServe ServingRuntime; ctloop-xgboost runs ctloop's predictor
                (apply manifests/serving in the namespace first); empty lets KServe pick one.
            service_account: Service account of the predictor (storage credentials).
            serving_capacity: The predictor's replicas and resources as JSON, each key
                optional, e.g. {"min_replicas": 1, "max_replicas": 4, "requests": {"cpu":
                "1", "memory": "2Gi"}, "limits": {"cpu": "2"}}; empty: KServe's defaults.
            deploy_target: "cluster" applies to Kubernetes; "render" only writes manifests.
            render_dir: Folder of rendered manifests when deploy_target is "render".
            canary_analysis: After deploying, watch the canary against the champion in
                Prometheus, then promote or roll it back; false leaves the split as deployed
                (no Prometheus, or a person decides with ctloop promote/rollback). The
                shadow strategies' shadow analysis runs either way.
            prometheus_url: Prometheus that scrapes the predictors (canary and shadow
                analysis).
            canary_policy: Canary analysis policy as JSON; empty uses the default.
            rollout_strategy: "canary" (a canary, then canary analysis), "shadow-then-canary"
                (the champion scores the new model as a shadow; shadow analysis decides
                whether a canary follows), "blue-green" (a shadow, then all traffic at once)
                or "ab" (an A/B variant beside the champion, judged later by the
                ctloop-ab-analysis pipeline). Shadow and A/B need ctloop's serving runtime.
            shadow_policy: Shadow analysis policy as JSON; empty uses the default.
            ab_traffic_percent: Traffic share of the new model as an A/B variant (1-99).
            prediction_log_uri: Where A/B variants log their predictions (needed by "ab"):
                a path or URI, e.g. s3://bucket/ctloop/predictions.
            trainer: "single" trains in the train step's own pod; "trainjob" trains on
                several nodes through a Kubeflow Trainer TrainJob (the xgboost-distributed
                runtime must be installed in the cluster; kfp.local runs only "single").
            trainjob_output_uri: Folder (s3://, gs://, ...) the TrainJob's workers publish
                the model to and the pipeline reads it back from (needed by "trainjob").
            trainjob_nodes: Nodes (pods) of the TrainJob.
            trainjob_gpus_per_node: GPUs of each TrainJob node, one worker each; 0 trains
                on CPUs, one worker per node.
            trainjob_service_account: Service account of the TrainJob's workers (IRSA,
                Workload Identity: their access to the data and trainjob_output_uri); empty:
                the namespace's default.
            trainjob_credentials_secret: Secret with storage credentials for the workers, as
                KServe's storage initializer reads them (AWS_ACCESS_KEY_ID and
                AWS_SECRET_ACCESS_KEY for s3://, gcloud-application-credentials.json for gs://).
            checkpoint_uri: Prefix (s3://, gs://, or a path) where the one-pod train step
                checkpoints the booster every 50 rounds, so a retried step (a preempted spot
                node) resumes there; empty keeps no checkpoints: a retry starts over.
            resource_labels: Labels of the InferenceService (team, project, cost-center,
                ...), e.g. {"team": "fraud"}, so cost tools group its spend; `ctloop compile
                --label` sets the default, as it labels every pod of the pipeline.
            kfp_host: KFP API endpoint the register step asks which pipeline version this run
                ran (recorded in the version's lineage); unreachable or empty: recorded as
                unknown, never failing the registration.
        """
        loaded = retried(
            c["load_dataset"](
                uri=data_uri,
                feature_repo=feature_repo,
                feature_service=feature_service,
                target=target,
            ).set_display_name("load")
        )
        validated = c["validate_dataset"](
            dataset=loaded.outputs["dataset"],
            target=target,
            task=task,
            min_rows=min_rows,
            drop_columns=drop_columns,
            time_column=time_column,
        ).set_display_name("validate")
        split = c["split_dataset"](
            dataset=validated.outputs["validated"],
            target=target,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=split_seed,
            time_column=time_column,
        ).set_display_name("split")

        # What both train steps take: the splits, the profile, the parameters, MLflow.
        train_inputs = dict(
            train=split.outputs["train"],
            validation=split.outputs["validation"],
            reference_profile=validated.outputs["reference_profile"],
            hyperparameters=hyperparameters,
            device=device,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_artifact_location=mlflow_artifact_location,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )

        def train_in_one_pod():
            """The train step in its own pod, on `placement`."""
            return placement.apply(
                train_model(**train_inputs, checkpoint_uri=checkpoint_uri).set_display_name("train")
            )

        if not trainjob:
            trained = train_in_one_pod()
            model, run_id = trained.outputs["model"], trained.outputs["run_id"]
            model_uri = trained.outputs["model_uri"]
        else:
            with dsl.If(trainer == SINGLE, name="train-in-one-pod"):
                trained = train_in_one_pod()
            with dsl.Else(name="train-on-several-nodes"):
                # The pod only creates the TrainJob and waits: the GPUs are the workers'. A retry
                # follows the same job, which the KFP run id names.
                trained_on_nodes = placement.retry.apply(
                    c["train_model_distributed"](
                        **train_inputs,
                        output_uri=trainjob_output_uri,
                        num_nodes=trainjob_nodes,
                        gpus_per_node=trainjob_gpus_per_node,
                        service_account=trainjob_service_account,
                        credentials_secret=trainjob_credentials_secret,
                        trainer_image=image,
                    ).set_display_name("train on several nodes")
                )
            model = dsl.OneOf(trained.outputs["model"], trained_on_nodes.outputs["model"])
            run_id = dsl.OneOf(trained.outputs["run_id"], trained_on_nodes.outputs["run_id"])
            model_uri = dsl.OneOf(
                trained.outputs["model_uri"], trained_on_nodes.outputs["model_uri"]
            )
        evaluated = retried(
            c["evaluate_model"](
                test=split.outputs["test"],
                model=model,
                reference_profile=validated.outputs["reference_profile"],
                run_id=run_id,
                mlflow_tracking_uri=mlflow_tracking_uri,
                registered_model_name=registered_model_name,
                gate_policy=gate_policy,
            ).set_display_name("evaluate")
        )
        gate = c["quality_gate"](
            evaluation=evaluated.outputs["evaluation"],
            policy=gate_policy,
            run_id=run_id,
            registered_model_name=registered_model_name,
            mlflow_tracking_uri=mlflow_tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("quality gate")

        with dsl.If(gate.outputs["passed"] == True, name="gate-passed"):  # noqa: E712
            registered = c["register_model"](
                run_id=run_id,
                model_uri=model_uri,
                evaluation=evaluated.outputs["evaluation"],
                mlflow_tracking_uri=mlflow_tracking_uri,
                registered_model_name=registered_model_name,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                kfp_host=kfp_host,
            ).set_display_name("register")
            retried(
                c["write_model_card"](
                    evaluation=evaluated.outputs["evaluation"],
                    gate_record=gate.outputs["record"],
                    reference_profile=validated.outputs["reference_profile"],
                    model_version=registered.outputs["version"],
                    registered_model_name=registered_model_name,
                    run_id=run_id,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                    intended_use=intended_use,
                ).set_display_name("model card")
            )
            rolled_out = rollout(
                model=model,
                model_version=registered.outputs["version"],
                alias=registered.outputs["alias"],
                registered_model_name=registered_model_name,
                mlflow_tracking_uri=mlflow_tracking_uri,
                rollout_strategy=rollout_strategy,
                inference_service_name=inference_service_name,
                namespace=namespace,
                deployment_mode=deployment_mode,
                canary_percent=canary_percent,
                serving_runtime=serving_runtime,
                service_account=service_account,
                serving_capacity=serving_capacity,
                deploy_target=deploy_target,
                render_dir=render_dir,
                canary_analysis=canary_analysis,
                prometheus_url=prometheus_url,
                canary_policy=canary_policy,
                shadow_policy=shadow_policy,
                ab_traffic_percent=ab_traffic_percent,
                prediction_log_uri=prediction_log_uri,
                resource_labels=resource_labels,
                feature_repo=feature_repo,
                feature_service=feature_service,
            ).set_display_name("rollout")
        with dsl.Else(name="gate-failed"):
            rejected = retried(
                c["record_rejection"](
                    run_id=run_id,
                    failures=gate.outputs["failures"],
                    mlflow_tracking_uri=mlflow_tracking_uri,
                ).set_display_name("record rejection")
            )

        return TrainingOutputs(
            gate_passed=gate.outputs["passed"],
            gate_failures=gate.outputs["failures"],
            metrics=evaluated.outputs["candidate_metrics"],
            deployment=dsl.OneOf(rolled_out.output, rejected.outputs["deployment"]),
        )

    return training
