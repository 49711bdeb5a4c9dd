"""KFP components of the registry family: register a blessed model, record a rejection, write
a registered version's model card."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register_model(
    run_id: str,
    model_uri: str,
    evaluation: Input[Artifact],
    mlflow_tracking_uri: str,
    registered_model_name: str,
    kfp_run_id: str = "",
    kfp_run_name: str = "",
    kfp_host: str = "",
) -> NamedTuple("RegisterOutputs", version=str, alias=str):
    """Register the candidate that passed the gate as a new model version.

    The first version becomes `champion`; later ones `challenger` while they are canaries.
    The version is tagged with the gate result, its test metrics, the dataset hash and the
    KFP run, so the registry alone says why a version exists, and with its lineage
    (`ctloop.lineage.*`: ctloop version, git commit, image, compile options, KFP pipeline
    version), so it says what made it. When the `champion` alias no
    longer names the version the evaluation compared with (another run registered or promoted
    a model meanwhile), the step fails and registers nothing, so nothing unjudged is deployed.

    Args:
        run_id: The candidate's MLflow run.
        model_uri: The candidate's logged MLflow model.
        evaluation: The evaluation the gate passed on.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        registered_model_name: Name in the MLflow model registry.
        kfp_run_id: The KFP run that produced it.
        kfp_run_name: That run's name.
        kfp_host: KFP API endpoint to ask for the run's pipeline version (in cluster:
            `http://ml-pipeline.kubeflow:8888`); "" records it as unknown.

    Returns:
        version: The registered version.
        alias: `champion` or `challenger`.
    """
    import json

    from ctloop.components.registry.mlflow_registry import run_registration

    with open(evaluation.path) as handle:
        result = json.load(handle)
    return run_registration(
        mlflow_tracking_uri,
        registered_model_name,
        run_id=run_id,
        model_uri=model_uri,
        evaluation=result,
        kfp_run={"id": kfp_run_id, "name": kfp_run_name},
        kfp_host=kfp_host,
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def record_rejection(run_id: str, failures: str, mlflow_tracking_uri: str) -> NamedTuple(
    "RejectOutputs", deployment=str
):
    """Tag a candidate the gate rejected, so MLflow shows why it was never registered.

    Args:
        run_id: The candidate's MLflow run.
        failures: The gate's failures (JSON list).
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).

    Returns:
        deployment: JSON saying nothing was registered or deployed.
    """
    import json

    from ctloop.components.registry.mlflow_registry import tag_run

    tag_run(
        mlflow_tracking_uri,
        run_id,
        {"ctloop.gate": "failed", "ctloop.gate.failures": json.loads(failures)},
    )
    return (
        json.dumps(
            {
                "registered_model": None,
                "model_version": None,
                "alias": None,
                "inference_service_manifest": None,
                "action": "none",
            }
        ),
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def write_model_card(
    evaluation: Input[Artifact],
    gate_record: Input[Artifact],
    reference_profile: Input[Artifact],
    model_version: str,
    registered_model_name: str,
    run_id: str,
    mlflow_tracking_uri: str,
    model_card: Output[Markdown],
    intended_use: str = "",
) -> NamedTuple("ModelCardOutputs", card_uri=str):
    """Write the model card of a registered version, for people (Markdown) and tools (JSON).

    The card says what the model is for, the training data (rows, features, label balance,
    data hash), the metrics overall and per slice, the fairness gaps and the gate's decision,
    its limitations (slices too small to judge, categories never seen in training) and its
    lineage (the version's tags). The JSON is logged on the version's MLflow run as
    `model_card/model_card.json`, and the version's `ctloop.model_card` tag points at it.

    Args:
        evaluation: The evaluation the gate decided on.
        gate_record: The quality gate's decision record.
        reference_profile: The training data's reference profile.
        model_version: The registered version.
        registered_model_name: Name in the MLflow model registry.
        run_id: The MLflow run the version was registered from.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        model_card: The card as Markdown, for the UI.
        intended_use: What the model is for and not for, in a sentence or two.

    Returns:
        card_uri: Where the JSON card is (`runs:/<run>/model_card/model_card.json`).
    """
    from ctloop.components.registry.model_card import read_card_inputs, run_model_card

    documents = read_card_inputs(
        evaluation=evaluation.path,
        gate_record=gate_record.path,
        reference_profile=reference_profile.path,
    )
    _, markdown, uri = run_model_card(
        mlflow_tracking_uri,
        registered_model_name,
        model_version,
        run_id=run_id,
        intended_use=intended_use,
        **documents,
    )
    with open(model_card.path, "w") as handle:
        handle.write(markdown)
    model_card.metadata["display_name"] = f"Model card: {registered_model_name} v{model_version}"
    return (uri,)
