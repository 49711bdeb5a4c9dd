"""KFP component of the train family: XGBoost on the splits, tracked in MLflow."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_model(
    train: Input[Dataset],
    validation: Input[Dataset],
    reference_profile: Input[Artifact],
    model: Output[Model],
    layout: Output[Metrics],
    mlflow_tracking_uri: str,
    hyperparameters: str = "{}",
    device: str = "auto",
    mlflow_experiment: str = "ctloop",
    mlflow_artifact_location: str = "",
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    checkpoint_uri: str = "",
) -> NamedTuple("TrainOutputs", run_id=str, model_uri=str):
    """Train an XGBoost model with early stopping and log it to MLflow.

    Data streams from Parquet into a QuantileDMatrix, so memory stays near the size of the
    quantised matrix, not of the table; categorical features are used natively.

    Args:
        train: Rows to fit on.
        validation: Rows for early stopping.
        reference_profile: The training data's profile; defines feature order and categories
            and is logged with the model.
        model: Folder holding `model.json`, what KServe serves.
        layout: How the step trained (in memory, external memory, or the workers it would
            need), the estimate behind the choice, the time and peak memory it took.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        hyperparameters: JSON object of XGBoost parameters merged over ctloop's defaults,
            e.g. {"max_depth": 4, "eta": 0.05, "num_boost_round": 800}.
        device: "auto" (CUDA when a GPU is visible), "cuda" or "cpu".
        mlflow_experiment: Experiment the run is logged in.
        mlflow_artifact_location: Artifact root for a new experiment (empty: server default).
        kfp_run_id: The KFP run, tagged on the MLflow run (the pipeline passes its job id).
        kfp_run_name: The KFP run's name, tagged likewise.
        checkpoint_uri: Object-store prefix (s3://, gs://, or a path) for checkpoints every 50
            rounds, keyed by the KFP run and the inputs: a retried step (a preempted spot node)
            resumes there instead of starting over; empty keeps none.

    Returns:
        run_id: The MLflow run.
        model_uri: The logged MLflow model.
    """
    import json

    from ctloop.components.train.training_run import run_training

    with open(reference_profile.path) as handle:
        profile = json.load(handle)
    outcome = run_training(
        train_path=train.path,
        validation_path=validation.path,
        profile=profile,
        hyperparameters=hyperparameters,
        device=device,
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        artifact_location=mlflow_artifact_location,
        model_dir=model.path,
        run_tags={
            "kfp.run_id": kfp_run_id,
            "kfp.run_name": kfp_run_name,
        },
        checkpoint_uri=checkpoint_uri,
    )
    for name, value in outcome.figures.items():
        layout.log_metric(name, value)
    layout.metadata.update(
        {
            "display_name": f"Layout: {outcome.layout.choice}",
            "choice": outcome.layout.choice,
            "reasons": outcome.layout.reasons,
        }
    )
    model.metadata.update(
        {
            "framework": "xgboost",
            "mlflow_run_id": outcome.run_id,
            "best_iteration": outcome.best_iteration,
            "device": outcome.device,
        }
    )
    return (outcome.run_id, outcome.model_uri)
