"""What CI and cluster users rely on in the compiled YAML, checked on the YAML itself."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import compiler, components, dsl

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.catalog import COMPONENTS
from ctloop.pipelines.cli import main
from ctloop.pipelines.compiler import compile_all
from ctloop.pipelines.placement import GpuPlacement, Toleration
from tests.compiled_spec import (
    body_of,
    pipeline_spec,
    task_inputs,
    tasks_under_condition,
    waits_for,
)


def _training(build: Path) -> dict:
    return body_of(pipeline_spec(build / "pipelines" / "training.yaml"))


def _monitoring(build: Path) -> dict:
    return body_of(pipeline_spec(build / "pipelines" / "monitoring.yaml"))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.yaml"))
    }


def test_compile_writes_every_pipeline_and_one_yaml_per_component(compiled_pipelines):
    names = {p.name for p in (compiled_pipelines / "pipelines").glob("*.yaml")}
    assert names == {"training.yaml", "monitoring.yaml", "ab-analysis.yaml"}
    names = {p.stem for p in (compiled_pipelines / "components").glob("*.yaml")}
    assert names == set(COMPONENTS)


def test_compiling_twice_gives_byte_identical_files(compiled_pipelines, tmp_path):
    compile_all(tmp_path)
    assert _digest(tmp_path) == _digest(compiled_pipelines)


def test_ctloop_compile_writes_the_same_bytes_in_every_process(tmp_path):
    """What CI relies on to upload a new version only when the source changed: KFP's default
    protobuf backend named the nested branches in a per-process order."""
    digests = []
    for seed in ("1", "2", "3"):
        folder = tmp_path / seed
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        environment.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
        command = [sys.executable, "-m", "ctloop", "compile", "--output-dir", str(folder)]
        subprocess.run(command, env=environment, check=True, capture_output=True)
        digests.append(_digest(folder))
    assert digests[0] == digests[1] == digests[2]


def test_train_task_asks_for_a_gpu_on_gpu_nodes(compiled_pipelines):
    spec = _training(compiled_pipelines)
    train = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["resources"]["cpuRequest"] > 0 and train["resources"]["memoryRequest"] > 0
    platform = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert platform["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in platform[
        "tolerations"
    ]
    others = set(spec["deploymentSpec"]["executors"]) - {"exec-train-model"}
    executors = spec["deploymentSpec"]["executors"]
    assert all("accelerator" not in executors[e]["container"].get("resources", {}) for e in others)


def test_register_and_deploy_run_only_when_the_gate_passed(compiled_pipelines):
    spec = _training(compiled_pipelines)
    guarded = tasks_under_condition(spec)
    passed = "inputs.parameter_values['pipelinechannel--quality-gate-passed'] == true"
    assert guarded["register-model"] == passed
    assert guarded["ctloop-rollout"] == passed
    deploys = [task for task in guarded if task.startswith("deploy-model")]
    assert deploys and all(guarded[task].startswith(f"{passed} | ") for task in deploys)
    assert guarded["record-rejection"].startswith("!(") and passed in guarded["record-rejection"]
    assert "register-model" not in spec["root"]["dag"]["tasks"]


def test_canary_analysis_runs_after_deploy_only_when_asked_and_the_gate_passed(compiled_pipelines):
    spec = _training(compiled_pipelines)
    guarded = tasks_under_condition(spec)
    passed = "inputs.parameter_values['pipelinechannel--quality-gate-passed'] == true"
    asked = "inputs.parameter_values['pipelinechannel--canary_analysis'] == true"
    canary = "inputs.parameter_values['pipelinechannel--rollout_strategy'] == 'canary'"
    assert guarded["analyze-canary"] == f"{passed} | {canary} | {asked}"
    # Every canary analysis (the canary strategy's, the canary's after a passed shadow, a first
    # deployment's) waits for a deploy step: KFP puts the dependency on the enclosing branch.
    waiting = waits_for(spec)
    analyses = [task for task in waiting if task.startswith("analyze-canary")]
    assert len(analyses) == 3
    assert all(any(t.startswith("deploy-model") for t in waiting[task]) for task in analyses)


def test_every_task_runs_the_pinned_project_image(compiled_pipelines):
    executors = _training(compiled_pipelines)["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {DEFAULT_IMAGE}
    assert not DEFAULT_IMAGE.endswith(":latest")
    for path in (compiled_pipelines / "components").glob("*.yaml"):
        assert f"image: {DEFAULT_IMAGE}" in path.read_text()
        assert "pip install" not in path.read_text()


def test_compile_options_set_image_and_gpu_placement(tmp_path):
    code = main(
        [
            "compile",
            "--output-dir",
            str(tmp_path),
            "--image",
            "registry.local/ctloop@sha256:" + "a" * 64,
            "--accelerator-type",
            "nvidia.com/mig-1g.10gb",
            "--accelerator-count",
            "2",
            "--node-selector",
            "pool=a100",
            "--toleration",
            "dedicated=ml:NoExecute",
        ]
    )
    assert code == 0
    spec = _training(tmp_path)
    train = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert train["image"] == "registry.local/ctloop@sha256:" + "a" * 64
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    platform = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert platform["nodeSelector"]["labels"] == {"pool": "a100"}
    assert platform["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    ]


def test_compile_rejects_an_unpinned_image(tmp_path, capsys):
    assert main(["compile", "--output-dir", str(tmp_path), "--image", "ctloop:latest"]) == 2
    assert "ctloop:latest" in capsys.readouterr().err
    assert not (tmp_path / "pipelines" / "training.yaml").exists()


def test_every_compiled_pipeline_ends_with_a_word_from_the_webhook_secret(tmp_path):
    flags = ["compile", "--output-dir", str(tmp_path), "--webhook-secret", "chat-webhook"]
    assert main(flags) == 0
    for name in ("training", "monitoring", "ab-analysis"):
        spec = pipeline_spec(tmp_path / "pipelines" / f"{name}.yaml")
        assert sorted(spec["root"]["dag"]["tasks"]) == ["exit-handler-1", "notify-run-end"]
        executors = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        [secret] = executors["exec-notify-run-end"]["secretAsEnv"]
        assert secret["secretName"] == "chat-webhook"


def test_a_webhook_secret_that_cannot_name_a_secret_is_refused(tmp_path, capsys):
    flags = ["compile", "--output-dir", str(tmp_path), "--webhook-secret", "Chat Hook!"]
    assert main(flags) == 2
    assert "--webhook-secret 'Chat Hook!' is not a Kubernetes object name" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "pipelines").exists()


def test_a_webhook_secret_is_refused_for_vertex(tmp_path, capsys):
    flags = ["compile", "--target", "vertex", "--output-dir", str(tmp_path)]
    assert main([*flags, "--webhook-secret", "chat-webhook"]) == 2
    assert "--webhook-secret names a Kubernetes Secret" in capsys.readouterr().err
    assert not (tmp_path / "vertex").exists()


def test_toleration_text_is_parsed_or_rejected_with_the_rule():
    assert Toleration.parse("nvidia.com/gpu") == Toleration("nvidia.com/gpu")
    with pytest.raises(ValueError, match="Effect one of"):
        Toleration.parse("gpu:Sometimes")


def test_cpu_only_placement_asks_for_no_accelerator(tmp_path):
    compile_all(
        tmp_path, placement=GpuPlacement(accelerator_count=0, node_selector={}, tolerations=())
    )
    train = _training(tmp_path)["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert "accelerator" not in train["resources"]


def test_every_component_yaml_loads_and_composes_into_a_new_pipeline(compiled_pipelines, tmp_path):
    loaded = {
        p.stem: components.load_component_from_file(str(p))
        for p in (compiled_pipelines / "components").glob("*.yaml")
    }
    load, validate, split = (
        loaded["load_dataset"],
        loaded["validate_dataset"],
        loaded["split_dataset"],
    )

    @dsl.pipeline(name="reuse")
    def reuse(uri: str):
        data = load(uri=uri)
        checked = validate(dataset=data.outputs["dataset"], target="y")
        split(dataset=checked.outputs["validated"], target="y")

    for name, component in loaded.items():
        assert component.component_spec.description, f"{name} has no description"
        compiler.Compiler().compile(component, str(tmp_path / f"{name}.yaml"))
    compiler.Compiler().compile(reuse, str(tmp_path / "reuse.yaml"))
    assert "exec-split-dataset" in (tmp_path / "reuse.yaml").read_text()


def test_monitoring_retrains_only_in_the_branch_its_drift_route_picks(compiled_pipelines):
    spec = _monitoring(compiled_pipelines)
    assert {"resolve-window", "load-dataset", "score-dataset", "monitor-drift"} <= set(
        spec["root"]["dag"]["tasks"]
    )
    guarded = tasks_under_condition(spec)
    route = "inputs.parameter_values['pipelinechannel--route-retraining-Output']"
    assert guarded["ctloop-training"] == f"{route} == 'nested'"
    assert guarded["prepare-retraining-data"] == f"{route} == 'nested'"
    assert guarded["start-retraining-run"].endswith(f"&& {route} == 'api'")
    assert guarded["keep-champion"] == f"!({route} == 'nested') && !({route} == 'api')"
    route_task = spec["root"]["dag"]["tasks"]["route-retraining"]
    drift_input = route_task["inputs"]["parameters"]["drift_detected"]["taskOutputParameter"]
    assert drift_input == {"outputParameterKey": "drift_detected", "producerTask": "monitor-drift"}


def test_nested_retraining_trains_on_the_gpu_nodes_with_the_pinned_image(compiled_pipelines):
    spec = _monitoring(compiled_pipelines)
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-model"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    platform = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert platform["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {e["container"]["image"] for e in executors.values()} == {DEFAULT_IMAGE}


@pytest.mark.parametrize("pipeline", ["training", "monitoring"])
def test_checkpoint_uri_reaches_the_one_pod_train_step(compiled_pipelines, pipeline):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / f"{pipeline}.yaml")
    takers = task_inputs(spec, "checkpoint_uri")
    # The TrainJob's workers keep no checkpoints; the exit handler's body and nested retraining
    # pass the parameter on.
    expected = {"train-model", "ctloop-training", f"ctloop-{pipeline}"}
    assert set(takers) == expected
    assert all(
        source == {"componentInputParameter": "pipelinechannel--checkpoint_uri"}
        for source in takers.values()
    )
    parameter = spec["root"]["inputDefinitions"]["parameters"]["checkpoint_uri"]
    assert parameter["defaultValue"] == ""


def test_the_feast_image_runs_only_the_steps_that_read_feast(tmp_path):
    feast_image = "registry.local/ctloop-feast:1.0"
    assert main(["compile", "--output-dir", str(tmp_path), "--feast-image", feast_image]) == 0

    for pipeline in ("training", "monitoring"):
        executors = pipeline_spec(tmp_path / "pipelines" / f"{pipeline}.yaml")["deploymentSpec"]
        in_feast = {
            name
            for name, executor in executors["executors"].items()
            if executor["container"]["image"] == feast_image
        }
        others = {e["container"]["image"] for e in executors["executors"].values()} - {feast_image}
        steps = {"exec-load-dataset", "exec-load-dataset-2", "exec-materialize-features"}
        assert in_feast and in_feast <= steps, pipeline
        assert others == {DEFAULT_IMAGE}, pipeline
    component = (tmp_path / "components" / "materialize_features.yaml").read_text()
    assert f"image: {feast_image}" in component
    assert f"image: {DEFAULT_IMAGE}" in (tmp_path / "components" / "train_model.yaml").read_text()


def test_the_training_table_comes_through_feast_when_a_feature_repo_is_given(compiled_pipelines):
    spec = _training(compiled_pipelines)
    load = spec["root"]["dag"]["tasks"]["load-dataset"]["inputs"]["parameters"]
    for parameter in ("feature_repo", "feature_service", "target"):
        assert load[parameter] == {"componentInputParameter": parameter}
    assert spec["root"]["inputDefinitions"]["parameters"]["feature_repo"]["defaultValue"] == ""


def test_monitoring_materializes_features_first_only_with_a_feature_repo(compiled_pipelines):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / "monitoring.yaml")
    guarded = tasks_under_condition(spec)
    assert guarded["materialize-features"] == (
        "inputs.parameter_values['pipelinechannel--feature_repo'] != ''"
    )
    # The window keeps its entity keys (its predictions name each entity); training does not.
    window = _monitoring(compiled_pipelines)["root"]["dag"]["tasks"]["load-dataset"]
    assert window["inputs"]["parameters"]["keep_entity_columns"]["runtimeValue"] == {
        "constant": True
    }
    training = _training(compiled_pipelines)["root"]["dag"]["tasks"]["load-dataset"]
    assert "keep_entity_columns" not in training["inputs"]["parameters"]


FEATURE_READERS = {"ctloop-rollout", "ctloop-training", "load-dataset"} | {
    f"deploy-model{suffix}" for suffix in ("", "-2", "-3", "-4", "-5", "-6")
}
"""Who takes a Feast repository and service in the training pipeline: the load step (the
join), the rollout and each of its deploy steps (the predictor's lookup); the monitoring
pipeline adds its window's load, the retraining table and the API retraining run."""


@pytest.mark.parametrize(
    "pipeline, feature_repo_readers, feature_service_readers",
    [
        ("training", set(), set()),
        (
            "monitoring",
            {"ctloop-monitoring", "materialize-features", "start-retraining-run"}
            | {"prepare-retraining-data", "prepare-retraining-data-2"},
            {"ctloop-monitoring", "start-retraining-run"},
        ),
    ],
)
def test_a_feature_repo_reaches_every_step_that_joins_or_serves_features(
    compiled_pipelines, pipeline, feature_repo_readers, feature_service_readers
):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / f"{pipeline}.yaml")
    for parameter, extra in (
        ("feature_repo", feature_repo_readers),
        ("feature_service", feature_service_readers),
    ):
        takers = task_inputs(spec, parameter)
        assert set(takers) == FEATURE_READERS | extra, parameter
        # Every one passes the run's value on: none is left at a constant.
        assert {source["componentInputParameter"] for source in takers.values()} == {
            parameter,
            f"pipelinechannel--{parameter}",
        }
