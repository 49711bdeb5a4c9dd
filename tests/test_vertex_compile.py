"""`ctloop compile --target vertex`: the training pipeline for Vertex AI Pipelines.

Checked on the compiled YAML, against the Kubeflow compilation of the same source: the train
step becomes a Vertex AI CustomJob whose worker pool runs the very same container command on
the machine and accelerator asked for; every other task, and the gate that guards register
and deploy, is the same as in the one-pod Kubeflow build (Vertex AI has no Kubeflow Trainer:
no TrainJob branch, and none of its parameters, so the Vertex AI SDK refuses a run that asks
for one); nothing Kubernetes-specific is emitted.
"""

import copy
import hashlib
import json

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform
from kfp import compiler, dsl

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.cli import main
from ctloop.pipelines.compiler import compile_vertex
from ctloop.pipelines.placement import GpuPlacement, VertexPlacement
from ctloop.pipelines.training import build_training_pipeline
from tests.compiled_spec import body_of, pipeline_spec, tasks_under_condition

TRAIN = "train-model"
PASSED = "inputs.parameter_values['pipelinechannel--quality-gate-passed'] == true"
TRAINJOB_PARAMETERS = {
    "trainer",
    "trainjob_output_uri",
    "trainjob_nodes",
    "trainjob_gpus_per_node",
    "trainjob_service_account",
    "trainjob_credentials_secret",
}


@pytest.fixture(scope="module")
def compiled(compiled_pipelines, tmp_path_factory) -> dict[str, dict]:
    [vertex] = compile_vertex(tmp_path_factory.mktemp("vertex"))
    one_pod = tmp_path_factory.mktemp("one-pod") / "training.yaml"
    pipeline = build_training_pipeline(DEFAULT_IMAGE, GpuPlacement(), trainjob=False)
    compiler.Compiler().compile(pipeline, str(one_pod))
    return {
        # Vertex AI sends its own notifications: its build has no exit handler around the body.
        "kfp": body_of(pipeline_spec(compiled_pipelines / "pipelines" / "training.yaml")),
        "kfp-one-pod": pipeline_spec(one_pod),
        "vertex": pipeline_spec(vertex),
        "vertex-path": vertex,
    }


def _train_branch(spec: dict) -> dict:
    """The DAG holding the train task (the one-pod trainer's): a branch, or the root."""
    [dag] = [
        c["dag"]
        for c in [spec["root"], *spec["components"].values()]
        if TRAIN in c.get("dag", {}).get("tasks", {})
    ]
    return dag


def _worker_pools(spec: dict) -> list[dict]:
    parameters = spec["components"][f"comp-{TRAIN}"]["inputDefinitions"]["parameters"]
    return parameters["worker_pool_specs"]["defaultValue"]


def test_train_step_is_a_custom_job_on_the_default_gpu_machine(compiled):
    [pool] = _worker_pools(compiled["vertex"])

    assert pool["machine_spec"] == {
        "machine_type": "n1-standard-8",
        "accelerator_type": "NVIDIA_TESLA_T4",
        "accelerator_count": 1,
    }
    assert pool["replica_count"] == 1
    assert pool["container_spec"]["image_uri"] == DEFAULT_IMAGE
    launcher = compiled["vertex"]["deploymentSpec"]["executors"][f"exec-{TRAIN}"]["container"]
    assert (
        launcher["command"][-1]
        == "google_cloud_pipeline_components.container.v1.custom_job.launcher"
    )
    assert "--type" in launcher["args"] and "CustomJob" in launcher["args"]


def test_custom_job_runs_the_same_train_command_as_kubeflow(compiled):
    kfp_train = compiled["kfp"]["deploymentSpec"]["executors"][f"exec-{TRAIN}"]["container"]
    [pool] = _worker_pools(compiled["vertex"])
    # The CustomJob payload is a JSON string, so the executor input arrives JSON-escaped.
    escaped = ["{{$.json_escape[1]}}" if a == "{{$}}" else a for a in kfp_train["args"]]

    assert pool["container_spec"]["command"] == kfp_train["command"]
    assert pool["container_spec"]["args"] == escaped


def test_train_task_keeps_its_name_inputs_and_outputs(compiled):
    kfp_task = _train_branch(compiled["kfp-one-pod"])["tasks"][TRAIN]
    vertex_task = _train_branch(compiled["vertex"])["tasks"][TRAIN]
    kfp_outputs = compiled["kfp"]["components"][f"comp-{TRAIN}"]["outputDefinitions"]
    vertex_outputs = compiled["vertex"]["components"][f"comp-{TRAIN}"]["outputDefinitions"]

    assert vertex_task["inputs"] == kfp_task["inputs"]
    assert vertex_task["taskInfo"] == kfp_task["taskInfo"] == {"name": "train"}
    assert vertex_outputs["artifacts"] == kfp_outputs["artifacts"]
    # The CustomJob adds its resource name (gcp_resources); run_id and model_uri stay.
    assert set(vertex_outputs["parameters"]) == set(kfp_outputs["parameters"]) | {"gcp_resources"}


def test_gate_still_guards_register_and_deploy(compiled):
    guarded = tasks_under_condition(compiled["vertex"])

    assert guarded["register-model"] == PASSED
    assert guarded["ctloop-rollout"] == PASSED
    assert guarded["record-rejection"].startswith("!(") and PASSED in guarded["record-rejection"]
    assert TRAIN not in guarded  # one trainer: no branch to pick it
    assert guarded == tasks_under_condition(compiled["kfp-one-pod"])


def test_the_trainjob_branch_and_its_parameters_are_left_out(compiled):
    """Vertex AI has no Kubeflow Trainer: nothing of the TrainJob trainer is compiled."""
    vertex, kfp = compiled["vertex"], compiled["kfp"]
    assert "exec-train-model-distributed" in kfp["deploymentSpec"]["executors"]
    assert "exec-train-model-distributed" not in vertex["deploymentSpec"]["executors"]
    parameters = vertex["root"]["inputDefinitions"]["parameters"]
    kfp_parameters = kfp["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(kfp_parameters) - TRAINJOB_PARAMETERS
    assert TRAINJOB_PARAMETERS <= set(kfp_parameters)
    assert parameters == {name: kfp_parameters[name] for name in parameters}


@pytest.mark.parametrize(
    "asked",
    [{"trainer": "trainjob"}, {"trainer": "single"}, {"trainjob_nodes": 4}],
    ids=["trainjob", "single", "nodes"],
)
def test_a_vertex_run_asking_for_the_trainjob_trainer_is_refused_when_submitted(compiled, asked):
    """With the Vertex AI SDK, as a user submits the compiled file: refused before any
    request (it used to be accepted, then fail in the TrainJob step after the split)."""
    [name] = asked

    def submit(parameter_values: dict) -> aiplatform.PipelineJob:
        return aiplatform.PipelineJob(
            display_name="churn",
            template_path=str(compiled["vertex-path"]),
            pipeline_root="gs://lake/pipeline-root",
            parameter_values=parameter_values,
            project="ctloop-test",
            location="us-central1",
            credentials=AnonymousCredentials(),
        )

    submit({"data_uri": "gs://lake/churn.parquet"})  # the same run without it is accepted
    with pytest.raises(
        ValueError, match=f"^The pipeline parameter {name} is not found in the pipeline job input"
    ):
        submit({"data_uri": "gs://lake/churn.parquet", **asked})


def test_every_other_task_is_unchanged(compiled):
    kfp, vertex = copy.deepcopy(compiled["kfp-one-pod"]), copy.deepcopy(compiled["vertex"])
    for parameter in TRAINJOB_PARAMETERS:  # declared by the Kubeflow build alone
        del kfp["root"]["inputDefinitions"]["parameters"][parameter]
    for spec in (kfp, vertex):
        del _train_branch(spec)["tasks"][TRAIN]
        del spec["components"][f"comp-{TRAIN}"]
        del spec["deploymentSpec"]["executors"][f"exec-{TRAIN}"]
        spec.pop("platforms", None)
        for executor in spec["deploymentSpec"]["executors"].values():
            executor["container"].pop("env", None)  # ctloop compile's image and options

    assert vertex["components"] == kfp["components"]
    assert vertex["deploymentSpec"] == kfp["deploymentSpec"]
    assert vertex["root"] == kfp["root"]
    assert vertex["pipelineInfo"] == kfp["pipelineInfo"]


def test_no_kubernetes_placement_or_container_accelerator_is_emitted(compiled):
    vertex = compiled["vertex"]

    assert "kubernetes" in compiled["kfp"]["platforms"]  # the Kubeflow build has them
    assert "platforms" not in vertex
    for name, executor in vertex["deploymentSpec"]["executors"].items():
        resources = executor.get("container", {}).get("resources")
        assert "accelerator" not in json.dumps(resources), name


def test_compiling_twice_gives_byte_identical_files(tmp_path):
    first, second = compile_vertex(tmp_path / "a"), compile_vertex(tmp_path / "b")

    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in first] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in second
    ]


def test_vertex_output_stays_out_of_what_ctloop_upload_publishes(tmp_path):
    assert main(["compile", "--target", "vertex", "--output-dir", str(tmp_path)]) == 0

    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "vertex",
        "vertex/training.yaml",
    ]


def test_machine_and_accelerator_flags_reach_the_worker_pool(tmp_path):
    code = main(
        ["compile", "--target", "vertex", "--output-dir", str(tmp_path)]
        + ["--machine-type", "a2-highgpu-2g", "--accelerator-type", "NVIDIA_TESLA_A100"]
        + ["--accelerator-count", "2"]
    )

    assert code == 0
    [pool] = _worker_pools(pipeline_spec(tmp_path / "vertex" / "training.yaml"))
    assert pool["machine_spec"] == {
        "machine_type": "a2-highgpu-2g",
        "accelerator_type": "NVIDIA_TESLA_A100",
        "accelerator_count": 2,
    }


def test_accelerator_count_zero_trains_on_cpu_only(tmp_path):
    compile_vertex(tmp_path, placement=VertexPlacement(accelerator_count=0))

    [pool] = _worker_pools(pipeline_spec(tmp_path / "vertex" / "training.yaml"))
    assert pool["machine_spec"] == {"machine_type": "n1-standard-8"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--target", "vertex", "--node-selector", "pool=gpu"], "--node-selector"),
        (["--target", "vertex", "--toleration", "nvidia.com/gpu"], "--toleration"),
        (["--target", "vertex", "--accelerator-type", "nvidia.com/gpu"], "NVIDIA_TESLA_T4"),
        (["--machine-type", "n1-standard-8"], "--target vertex only"),
    ],
)
def test_flags_of_the_other_target_are_refused_with_the_rule(flags, message, tmp_path, capsys):
    assert main(["compile", "--output-dir", str(tmp_path), *flags]) == 2

    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.yaml"))


def test_wrapping_refuses_a_component_whose_parameter_the_custom_job_also_defines():
    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def fit(project: str, rows: int) -> str:
        return f"{project}:{rows}"

    with pytest.raises(ValueError, match=r"\['project'\]"):
        VertexPlacement().wrap(fit)
