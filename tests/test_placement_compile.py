"""`ctloop compile`'s spot, retry and cost-label options, checked on the compiled YAML."""

import pytest

from ctloop.components.kube_labels import check_labels
from ctloop.pipelines.cli import main
from ctloop.pipelines.compiler import compile_vertex
from ctloop.pipelines.placement import (
    GpuPlacement,
    Retry,
    VertexPlacement,
    label_every_pod,
)
from ctloop.pipelines.training import build_training_pipeline
from tests.compiled_spec import pipeline_spec, task_inputs

LABELS = {"team": "fraud", "project": "churn", "cost-center": "cc-42"}


def _executors(spec: dict) -> dict:
    return spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _train_task(spec: dict) -> dict:
    tasks = [
        task
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if name == "train-model"
    ]
    [task] = tasks
    return task


@pytest.fixture(scope="module")
def gke_spot(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    flags = ["--spot", "gke", "--retries", "5", "--retry-backoff", "2m"]
    labels = [f"--label={key}={value}" for key, value in LABELS.items()]
    assert main(["compile", "--output-dir", str(build), *flags, *labels]) == 0
    return build


def test_spot_gke_puts_the_train_step_on_spot_gpu_nodes(gke_spot):
    spec = pipeline_spec(gke_spot / "pipelines" / "training.yaml")
    train = _executors(spec)["exec-train-model"]
    assert train["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-spot": "true",
        "nvidia.com/gpu.present": "true",
    }
    assert {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in train["tolerations"]
    others = {name: e for name, e in _executors(spec).items() if name != "exec-train-model"}
    assert not any("nodeSelector" in e or "tolerations" in e for e in others.values())


def test_train_task_is_retried_with_backoff(gke_spot):
    spec = pipeline_spec(gke_spot / "pipelines" / "training.yaml")
    assert _train_task(spec)["retryPolicy"] == {
        "maxRetryCount": 5,
        "backoffDuration": "120s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
    }


@pytest.mark.parametrize("pipeline", ["training", "monitoring"])
def test_every_pod_carries_the_cost_labels(gke_spot, pipeline):
    spec = pipeline_spec(gke_spot / "pipelines" / f"{pipeline}.yaml")
    executors = _executors(spec)
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    assert all(e["podMetadata"]["labels"] == LABELS for e in executors.values())


@pytest.mark.parametrize("pipeline", ["training", "monitoring"])
def test_the_cost_labels_also_label_the_inference_service_of_every_deploy(gke_spot, pipeline):
    spec = pipeline_spec(gke_spot / "pipelines" / f"{pipeline}.yaml")
    parameter = spec["root"]["inputDefinitions"]["parameters"]["resource_labels"]
    assert parameter["defaultValue"] == LABELS
    from_parameter = {"componentInputParameter": "pipelinechannel--resource_labels"}
    deploys = task_inputs(spec, "labels")
    assert len(deploys) == 6  # every deploy of every strategy
    assert all(source == from_parameter for source in deploys.values())
    nested = task_inputs(spec, "resource_labels")
    # The exit handler's body, nested retraining and the rollout pass the parameter on.
    assert set(nested) == {"ctloop-rollout", "ctloop-training", f"ctloop-{pipeline}"}
    assert all(source == from_parameter for source in nested.values())


def test_without_labels_the_inference_service_labels_default_to_none(compiled_pipelines):
    for pipeline in ("training", "monitoring"):
        spec = pipeline_spec(compiled_pipelines / "pipelines" / f"{pipeline}.yaml")
        parameter = spec["root"]["inputDefinitions"]["parameters"]["resource_labels"]
        assert parameter.get("defaultValue", {}) == {}


def test_eks_spot_selects_the_capacity_type_and_default_compiles_retry_without_labels(tmp_path):
    pipeline = build_training_pipeline(placement=GpuPlacement(spot="eks"))
    from kfp import compiler

    compiler.Compiler().compile(pipeline, str(tmp_path / "training.yaml"))
    spec = pipeline_spec(tmp_path / "training.yaml")
    train = _executors(spec)["exec-train-model"]
    assert train["nodeSelector"]["labels"]["eks.amazonaws.com/capacityType"] == "SPOT"
    assert not [t for t in train["tolerations"] if "spot" in t["key"]]
    assert not any("podMetadata" in e for e in _executors(spec).values())
    assert _train_task(spec)["retryPolicy"]["maxRetryCount"] == Retry().num_retries


def test_vertex_spot_runs_the_custom_job_on_spot_vms(tmp_path):
    [path] = compile_vertex(tmp_path, placement=VertexPlacement(spot=True, retry=Retry(2)))
    spec = pipeline_spec(path)
    parameters = spec["components"]["comp-train-model"]["inputDefinitions"]["parameters"]
    assert parameters["strategy"]["defaultValue"] == "SPOT"
    assert _train_task(spec)["retryPolicy"]["maxRetryCount"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--spot"], "--spot gke or --spot eks"),
        (["--spot", "azure"], "spot capacity 'azure' is not known"),
        (["--target", "vertex", "--spot", "gke"], "--spot takes no cloud with --target vertex"),
        (["--target", "vertex", "--label", "team=ml"], "--label set Kubernetes pods"),
        (["--label", "team"], "--label 'team': expected KEY=VALUE"),
        (["--label", "team=data science"], "label team='data science'"),
        (["--label=-team=ml"], "label key '-team'"),
        (["--retries", "-1"], "retries -1 is below 0"),
        (["--retry-backoff", "soon"], "retry duration 'soon'"),
        (["--node-selector", "pool"], "--node-selector 'pool': expected KEY=VALUE"),
    ],
)
def test_bad_placement_options_are_refused_before_anything_is_written(
    flags, message, tmp_path, capsys
):
    assert main(["compile", "--output-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.yaml"))


def test_label_rules_follow_kubernetes():
    assert check_labels({"example.com/cost-center": "cc_42.a", "empty": ""}, ValueError)
    with pytest.raises(ValueError, match="label key 'Bad_Prefix.com/x'"):
        check_labels({"Bad_Prefix.com/x": "1"}, ValueError)
    with pytest.raises(ValueError, match="at most 63"):
        check_labels({"team": "x" * 64}, ValueError)


def test_labelling_an_unlabelled_pipeline_changes_nothing():
    pipeline = build_training_pipeline()
    before = pipeline.platform_spec.SerializeToString(deterministic=True)
    assert label_every_pod(pipeline, {}).platform_spec.SerializeToString(deterministic=True) == (
        before
    )
