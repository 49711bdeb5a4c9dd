"""The train step on several nodes: a TrainJob does the boosting, the step does the rest.

What the step gives the pipeline is what the one-process train step gives
(`ctloop.components.train.training_run`): the model folder as the KFP Model artifact, an MLflow
run with the parameters, the per-iteration validation curves, the row counts and the logged
model with its reference profile, so evaluation, the gate and registration run unchanged. Only
the boosting moves: into the workers of a Kubeflow Trainer TrainJob
(`ctloop.components.train.distributed`), which publish the model folder at the job's output
location, from where it is brought back here.

The MLflow run is open while the job runs, so a job that fails leaves a FAILED run, as a
failing one-process step does. A step stopped while the job runs (a cancelled KFP run deletes
its pod: SIGTERM) deletes the job, leaves a KILLED run and exits 143. Hyperparameters and the
profile are checked before the run is created and before the TrainJob is: bad input leaves
nothing behind in MLflow or the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kubernetes import client

from ctloop.components.contract.profile import ReferenceProfile, check_profile, feature_schema
from ctloop.components.registry import mlflow_registry
from ctloop.components.train.distributed import read_published_model
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.training_run import (
    TrainingOutcome,
    log_trained_model,
    training_tags,
)
from ctloop.components.trainjob.cluster import (
    create_trainjob,
    deleted_when_stopped,
    wait_for_trainjob,
)
from ctloop.components.trainjob.trainjob import TrainJobRequest, desired_trainjob


def run_distributed_training(
    request: TrainJobRequest,
    *,
    api: client.CustomObjectsApi,
    profile: ReferenceProfile,
    validation_path: str,
    tracking_uri: str,
    experiment: str,
    model_dir: str,
    artifact_location: str = "",
    run_tags: Mapping[str, str] = {},  # noqa: B006 - read only
    timeout_s: float = 24 * 3600,
    poll_s: float = 10.0,
    report: Callable[[str], None] = print,
) -> TrainingOutcome:
    """Train through the TrainJob `request` describes and log the run as the train step does.

    Args:
        request: The TrainJob: its workers read `request.train_uri` etc. and publish the model
            at `request.output_uri`.
        api: The Kubernetes API client (`ctloop.components.deploy.api_client.kube_api`).
        profile: The reference profile (the one `request.profile_uri` names).
        validation_path: The validation table here, for the logged model's input example.
        model_dir: Where the model folder is brought back to (the Model artifact's path).
        timeout_s: How long the job may take from creation to completion.

    Raises:
        TrainJobFailed, TrainJobTimeout: the job failed or ran out of time (the message has
            the reason and the workers' last log lines).
        SystemExit: SIGTERM or SIGINT while the job ran; the job is deleted.
    """
    profile = check_profile(profile)
    params = parse_hyperparameters(request.hyperparameters, profile["task"])
    schema = feature_schema(profile)
    manifest = desired_trainjob(request)
    where = f"TrainJob {request.namespace}/{request.name}"
    tags = training_tags(
        profile, {"ctloop.trainjob": f"{request.namespace}/{request.name}", **run_tags}
    )
    nodes = {"num_nodes": request.num_nodes, "gpus_per_node": request.gpus_per_node}
    with mlflow_registry.training_run(
        tracking_uri,
        experiment,
        run_name=run_tags.get("kfp.run_name") or "ctloop-training",
        tags=tags,
        params={**params, "device": request.device, "features": len(schema.features), **nodes},
        artifact_location=artifact_location,
    ) as run:
        with deleted_when_stopped(api, request.name, request.namespace, report):
            _, action = create_trainjob(api, manifest)
            report(f"{where}: {action} (runtime {request.runtime}, {request.num_nodes} node(s))")
            wait_for_trainjob(
                api,
                request.name,
                request.namespace,
                timeout_s=timeout_s,
                poll_s=poll_s,
                report=report,
            )
        published = read_published_model(request.output_uri, model_dir)
        result = published.result
        model_uri = log_trained_model(
            run.info.run_id, result, profile, validation_path, {"workers": published.workers}
        )
    return TrainingOutcome(run.info.run_id, model_uri, result.best_iteration, published.device)
