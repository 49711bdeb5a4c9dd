"""KFP component of the trainjob family: XGBoost on several nodes through Kubeflow Trainer."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_model_distributed(
    train: Input[Dataset],
    validation: Input[Dataset],
    reference_profile: Input[Artifact],
    model: Output[Model],
    mlflow_tracking_uri: str,
    output_uri: str,
    hyperparameters: str = "{}",
    device: str = "auto",
    num_nodes: int = 2,
    gpus_per_node: int = 1,
    cpu_per_node: str = "",
    memory_per_node: str = "",
    trainer_image: str = DEFAULT_IMAGE,
    runtime: str = "xgboost-distributed",
    namespace: str = "",
    service_account: str = "",
    credentials_secret: str = "",
    timeout_s: int = 86400,
    mlflow_experiment: str = "ctloop",
    mlflow_artifact_location: str = "",
    kfp_run_id: str = "",
    kfp_run_name: str = "",
) -> NamedTuple("TrainOutputs", run_id=str, model_uri=str):
    """Train an XGBoost model on several nodes (a Kubeflow Trainer TrainJob), log it to MLflow.

    The TrainJob uses the `xgboost-distributed` runtime: one worker per GPU, each training on
    its share of the training table's Parquet row groups, joined by XGBoost's collective.
    The outputs are those of train_model, so evaluation and the gate take either.

    Args:
        train: Rows to fit on; Parquet with at least as many row groups as workers.
        validation: Rows for early stopping (every worker reads all of them).
        reference_profile: The training data's profile; defines feature order and categories
            and is logged with the model.
        model: Folder holding `model.json`, what KServe serves.
        mlflow_tracking_uri: MLflow tracking server.
        output_uri: Folder (s3://, gs://, ...) the workers can write and this step can read;
            the job's model is published under `<output_uri>/<TrainJob name>`.
        hyperparameters: JSON object of XGBoost parameters merged over ctloop's defaults.
        device: "auto" (CUDA when the worker sees a GPU), "cuda" or "cpu".
        num_nodes: Nodes (pods) of the TrainJob.
        gpus_per_node: GPUs each node asks for (one worker each); 0 trains on CPUs, one
            worker per node.
        cpu_per_node: CPU request of each node, e.g. "8" (empty: the runtime's).
        memory_per_node: Memory request of each node, e.g. "64Gi" (empty: the runtime's).
        trainer_image: Image of the workers: the ctloop image this pipeline runs in.
        runtime: The ClusterTrainingRuntime to use.
        namespace: Namespace of the TrainJob; empty means the namespace this step runs in.
        service_account: Service account the workers run as, for object-store access through
            the cloud's workload identity (IRSA, GKE Workload Identity); empty: the runtime's.
        credentials_secret: Secret with object-store credentials for the workers, as KServe
            reads them: for s3:// the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
            (AWS_SESSION_TOKEN, AWS_ENDPOINT_URL and AWS_REGION if present), for gs:// the
            key gcloud-application-credentials.json; empty: none.
        timeout_s: Seconds the TrainJob may take; then it is deleted and the step fails.
        mlflow_experiment: Experiment the run is logged in.
        mlflow_artifact_location: Artifact root for a new experiment (empty: server default).
        kfp_run_id: The KFP run: tagged on the MLflow run, and names the TrainJob, so a retried
            step follows the job it started.
        kfp_run_name: The KFP run's name, tagged likewise.

    Returns:
        run_id: The MLflow run.
        model_uri: The logged MLflow model.
    """
    import json

    from ctloop.components.deploy.api_client import kube_api
    from ctloop.components.deploy.inference_service import storage_uri_for
    from ctloop.components.deploy.rollout import resolve_namespace
    from ctloop.components.trainjob.distributed_training import run_distributed_training
    from ctloop.components.trainjob.trainjob import TrainJobRequest, trainjob_name

    name = trainjob_name("ctloop-train", kfp_run_id)
    request = TrainJobRequest(
        name=name,
        namespace=resolve_namespace(namespace),
        image=trainer_image,
        train_uri=storage_uri_for(train.uri),
        validation_uri=storage_uri_for(validation.uri),
        profile_uri=storage_uri_for(reference_profile.uri),
        output_uri=f"{output_uri.rstrip('/')}/{name}",
        hyperparameters=hyperparameters,
        device=device,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        cpu_per_node=cpu_per_node,
        memory_per_node=memory_per_node,
        runtime=runtime,
        service_account=service_account,
        credentials_secret=credentials_secret,
    )
    with open(reference_profile.path) as handle:
        profile = json.load(handle)
    outcome = run_distributed_training(
        request,
        api=kube_api(),
        profile=profile,
        validation_path=validation.path,
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        artifact_location=mlflow_artifact_location,
        model_dir=model.path,
        run_tags={"kfp.run_id": kfp_run_id, "kfp.run_name": kfp_run_name},
        timeout_s=timeout_s,
    )
    model.metadata.update(
        {
            "framework": "xgboost",
            "mlflow_run_id": outcome.run_id,
            "best_iteration": outcome.best_iteration,
            "device": outcome.device,
            "trainjob": f"{request.namespace}/{name}",
        }
    )
    return (outcome.run_id, outcome.model_uri)
