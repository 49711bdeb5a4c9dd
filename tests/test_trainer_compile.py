"""The `trainer` parameter: one pod (the default) or a Kubeflow Trainer TrainJob on several nodes.

Checked on the compiled YAML: both train steps are there, each in its branch; whichever ran
feeds evaluation, the gate's consumers and the rollout (`dsl.OneOf`); the TrainJob's step asks
for no GPU (its pod only waits), is retried, and starts the workers in the compile-time image.
"""

import re

import pytest

from ctloop.pipelines.cli import main
from ctloop.pipelines.parameters import ParameterError, check_json_arguments
from tests.compiled_spec import body_of, pipeline_spec, tasks_under_condition

SINGLE = "inputs.parameter_values['pipelinechannel--trainer'] == 'single'"
ONE_POD, NODES = "train-model", "train-model-distributed"
IMAGE = "registry.local/ctloop@sha256:" + "b" * 64


def _training(build) -> dict:
    return body_of(pipeline_spec(build / "pipelines" / "training.yaml"))


def _holder(spec: dict, task: str) -> dict:
    """The DAG that holds `task` (its branch)."""
    [dag] = [
        c["dag"] for c in spec["components"].values() if task in c.get("dag", {}).get("tasks", {})
    ]
    return dag


def _branches(spec: dict) -> tuple[str, dict]:
    """The root task whose outputs are the train step's, whichever branch ran, and its DAG."""
    [(name, dag)] = [
        (name, spec["components"][task["componentRef"]["name"]]["dag"])
        for name, task in spec["root"]["dag"]["tasks"].items()
        if f"pipelinechannel--{ONE_POD}-model"
        in str(spec["components"][task["componentRef"]["name"]].get("dag", {}).get("outputs"))
    ]
    return name, dag


def test_the_trainer_picks_one_of_the_two_train_steps(compiled_pipelines):
    spec = _training(compiled_pipelines)
    guarded = tasks_under_condition(spec)

    assert guarded[ONE_POD] == SINGLE
    assert guarded[NODES] == f"!({SINGLE})"
    trainer = spec["root"]["inputDefinitions"]["parameters"]["trainer"]
    assert trainer["defaultValue"] == "single"


def test_evaluation_registration_and_rollout_take_the_model_of_whichever_step_ran(
    compiled_pipelines,
):
    spec = _training(compiled_pipelines)
    branches, dag = _branches(spec)
    outputs = dag["outputs"]
    [model] = outputs["artifacts"].values()
    assert {s["outputArtifactKey"] for s in model["artifactSelectors"]} == {
        f"pipelinechannel--{ONE_POD}-model",
        f"pipelinechannel--{NODES}-model",
    }
    chosen = {
        key: {s["outputParameterKey"] for s in value["valueFromOneof"]["parameterSelectors"]}
        for key, value in outputs["parameters"].items()
    }
    assert sorted(chosen.values(), key=sorted) == sorted(
        (
            {f"pipelinechannel--{ONE_POD}-{name}", f"pipelinechannel--{NODES}-{name}"}
            for name in ("model_uri", "run_id")
        ),
        key=sorted,
    )
    tasks = spec["root"]["dag"]["tasks"]
    evaluate = tasks["evaluate-model"]["inputs"]
    assert evaluate["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == branches
    assert evaluate["parameters"]["run_id"]["taskOutputParameter"]["producerTask"] == branches
    register = _holder(spec, "register-model")["tasks"]["register-model"]["inputs"]["parameters"]
    rejection = _holder(spec, "record-rejection")["tasks"]["record-rejection"]["inputs"]
    for consumer in (register["run_id"], register["model_uri"], rejection["parameters"]["run_id"]):
        assert consumer["componentInputParameter"].endswith(tuple(outputs["parameters"]))
    rollout = _holder(spec, "ctloop-rollout")["tasks"]["ctloop-rollout"]["inputs"]["artifacts"]
    assert rollout["model"]["componentInputArtifact"].endswith(tuple(outputs["artifacts"]))


def test_the_trainjob_step_waits_without_a_gpu_and_is_retried(compiled_pipelines):
    spec = _training(compiled_pipelines)
    executor = spec["deploymentSpec"]["executors"][f"exec-{NODES}"]["container"]
    task = _holder(spec, NODES)["tasks"][NODES]

    assert "accelerator" not in str(executor.get("resources", {}))
    assert f"exec-{NODES}" not in spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert task["retryPolicy"]["maxRetryCount"] > 0
    parameters = task["inputs"]["parameters"]
    assert parameters["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert parameters["output_uri"]["componentInputParameter"].endswith("trainjob_output_uri")
    assert parameters["num_nodes"]["componentInputParameter"].endswith("trainjob_nodes")
    assert parameters["gpus_per_node"]["componentInputParameter"].endswith("trainjob_gpus_per_node")


def test_the_workers_run_the_image_the_pipeline_is_compiled_for(tmp_path):
    assert main(["compile", "--output-dir", str(tmp_path), "--image", IMAGE]) == 0
    spec = _training(tmp_path)
    parameters = _holder(spec, NODES)["tasks"][NODES]["inputs"]["parameters"]

    assert parameters["trainer_image"]["runtimeValue"]["constant"] == IMAGE
    assert spec["deploymentSpec"]["executors"][f"exec-{NODES}"]["container"]["image"] == IMAGE


def test_nested_retraining_passes_the_trainer_on(compiled_pipelines):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / "monitoring.yaml")
    retrain = _holder(spec, "ctloop-training")["tasks"]["ctloop-training"]["inputs"]["parameters"]

    for name in ("trainer", "trainjob_output_uri", "trainjob_nodes", "trainjob_gpus_per_node"):
        assert retrain[name]["componentInputParameter"] == f"pipelinechannel--{name}"
    assert spec["root"]["inputDefinitions"]["parameters"]["trainer"]["defaultValue"] == "single"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"trainer": "spark"}, "trainer='spark': not one of single, trainjob"),
        ({"trainer": "trainjob"}, "trainer=trainjob: needs --param trainjob_output_uri="),
        (
            {"trainer": "trainjob", "trainjob_output_uri": "s3://b/t", "trainjob_nodes": 0},
            "trainjob_nodes=0: a TrainJob needs at least 1 node",
        ),
        (
            {
                "trainer": "trainjob",
                "trainjob_output_uri": "s3://b/t",
                "trainjob_gpus_per_node": -1,
            },
            "trainjob_gpus_per_node=-1: below 0",
        ),
    ],
)
def test_trainer_parameters_are_checked_before_a_run(arguments, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        check_json_arguments(arguments)


def test_a_trainjob_with_its_output_folder_passes_the_checks():
    check_json_arguments({"trainer": "trainjob", "trainjob_output_uri": "s3://bucket/trainjobs"})
    check_json_arguments({"trainer": "single"})


def test_a_local_run_trains_in_one_step_outside_any_branch(tmp_path):
    """kfp.local cannot pick an artifact out of two branches: its pipeline has one train step."""
    from kfp import compiler

    from ctloop.pipelines.training import build_training_pipeline

    path = tmp_path / "training.yaml"
    compiler.Compiler().compile(build_training_pipeline(trainjob=False), str(path))
    spec = pipeline_spec(path)

    assert ONE_POD in spec["root"]["dag"]["tasks"]
    assert ONE_POD not in tasks_under_condition(spec)
    assert f"exec-{NODES}" not in spec["deploymentSpec"]["executors"]


def test_a_local_run_refuses_a_trainjob_before_it_starts(tmp_path):
    from ctloop.pipelines.local_run import run_training_pipeline

    with pytest.raises(ParameterError, match=r"trainer=trainjob: a local run trains in one"):
        run_training_pipeline("data.csv", "churn", tmp_path / "work", {"trainer": "trainjob"})
    assert not (tmp_path / "work").exists()
