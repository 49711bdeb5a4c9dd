"""KFP component of the deploy family: move the KServe InferenceService to a rollout stage."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    model_version: str,
    registered_model_name: str,
    alias: str,
    manifest: Output[Artifact],
    inference_service_name: str = "ctloop-model",
    namespace: str = "",
    deployment_mode: str = "Serverless",
    canary_percent: int = 10,
    serving_runtime: str = "",
    service_account: str = "",
    serving_capacity: str = "",
    target: str = "cluster",
    render_dir: str = "",
    timeout_s: int = 600,
    stage: str = "canary",
    prediction_log_uri: str = "",
    labels: dict = {},  # noqa: B006 - KFP reads defaults from the signature
    mlflow_tracking_uri: str = "",
    feature_repo: str = "",
    feature_service: str = "",
) -> NamedTuple("DeployOutputs", deployment=str, serves_as=str):
    """Create the InferenceService (100 % traffic) or move the new model into a rollout stage.

    Stages: "canary" (the new model takes `canary_percent`; 100 switches all traffic at
    once), "shadow" (the champion keeps all traffic and scores the new model beside it),
    "unshadow" (the shadow removed), "ab" (the new model joins the champion as an A/B
    variant with `canary_percent` of traffic, every variant logging its predictions).
    Shadow and A/B need ctloop's serving runtime; entity-key requests (`feature_repo`) its
    Feast runtime, ctloop-xgboost-feast. With no service yet, the new model takes
    all traffic whatever the stage.

    Idempotent: deploying the model it already serves changes nothing. With
    target="cluster" it applies through the Kubernetes API and waits until the service is
    Ready with the expected traffic, failing with the last status on timeout; with
    target="render" (no cluster) it validates the manifest against the KServe CRD and
    writes it to `render_dir`.

    Args:
        model: The model artifact KServe loads (its URI becomes storageUri).
        model_version: Registered version, labelled on the service.
        registered_model_name: Registered model the version belongs to.
        alias: The version's registry alias (champion or challenger).
        manifest: The applied (or rendered) InferenceService, YAML.
        inference_service_name: Name of the InferenceService (a DNS-1035 label).
        namespace: Namespace; empty means the namespace this step runs in.
        deployment_mode: "Serverless" (Knative, canaryTrafficPercent) or "Standard"
            (raw deployment, spec.canary).
        canary_percent: Traffic share for a new model when a model is already served.
        serving_runtime: ServingRuntime name; empty lets KServe pick one for xgboost.
        service_account: Service account the predictor runs as (storage credentials).
        serving_capacity: JSON object of the new predictor's min_replicas, max_replicas,
            requests and limits (each optional); empty leaves them to KServe.
        target: "cluster" applies through the Kubernetes API; "render" only writes files.
        render_dir: Folder of rendered manifests for target="render".
        timeout_s: Seconds to wait for readiness before failing.
        stage: "canary", "shadow", "unshadow" or "ab".
        prediction_log_uri: Where A/B variants log their predictions (stage "ab"; a path
            or a pyarrow filesystem URI such as s3://bucket/prefix).
        labels: Labels of the InferenceService besides its model version, e.g. {"team":
            "fraud", "cost-center": "cc-42"}, so cost tools group its spend; each a valid
            Kubernetes label.
        mlflow_tracking_uri: MLflow tracking server: the version is tagged with where this
            stage put it (`ctloop.deployed.<stage>`), for `ctloop audit`; empty: not tagged.
        feature_repo: Feast repository (the folder holding feature_store.yaml, by a URI the
            predictor pod reads: s3://, gs://) whose online store the predictor looks entity
            keys' features up in (`--feast-repo`); needs `feature_service` and the serving
            runtime ctloop-xgboost-feast. Empty: callers send features.
        feature_service: The feature service the model was trained on (`--feature-service`).

    Returns:
        deployment: JSON summary of what was done.
        serves_as: What the new version is now: "all-traffic", "canary" (a canary or an A/B
            variant), "shadow" or "nothing".
    """
    import json

    from ctloop.components.deploy import rollout
    from ctloop.components.deploy.inference_service import render_yaml
    from ctloop.components.deploy.serving_capacity import parse_serving_capacity

    request = rollout.RolloutRequest(
        name=inference_service_name,
        namespace=rollout.resolve_namespace(namespace),
        model_artifact_uri=model.uri,
        model_version=model_version,
        deployment_mode=deployment_mode,
        canary_percent=canary_percent,
        runtime=serving_runtime,
        service_account=service_account,
        capacity=parse_serving_capacity(serving_capacity),
        stage=stage,
        prediction_log_uri=prediction_log_uri,
        labels=labels,
        feature_repo=feature_repo,
        feature_service=feature_service,
    )
    outcome = rollout.run_deployment(
        request, target=target, render_dir=render_dir, timeout_s=timeout_s
    )
    with open(manifest.path, "w") as handle:
        handle.write(render_yaml(outcome.pop("manifest")))
    manifest.metadata.update({"display_name": "InferenceService", "action": outcome["action"]})
    outcome.setdefault("inference_service_manifest", manifest.path)
    outcome["manifest_artifact"] = manifest.path
    outcome.update({"registered_model": registered_model_name, "alias": alias})
    if mlflow_tracking_uri:
        from ctloop.components.registry.mlflow_registry import record_deployment

        record_deployment(mlflow_tracking_uri, registered_model_name, model_version, stage, outcome)
    return (json.dumps(outcome, sort_keys=True), outcome["serves_as"])
