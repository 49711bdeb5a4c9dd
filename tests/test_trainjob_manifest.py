"""The TrainJob manifest (pure) and the step's KFP interface, with no API server."""

import pytest

from ctloop.components.train.component import train_model
from ctloop.components.trainjob.component import train_model_distributed
from ctloop.components.trainjob.trainjob import (
    NAME_MAX,
    TrainJobError,
    TrainJobRequest,
    desired_trainjob,
    trainjob_name,
)

REQUEST = TrainJobRequest(
    name="ctloop-train-0123456789",
    namespace="team-a",
    image="ghcr.io/ctloop/ctloop:0.1.0",
    train_uri="s3://data/train.parquet",
    validation_uri="s3://data/validation.parquet",
    profile_uri="s3://data/reference_profile.json",
    output_uri="s3://models/ctloop-train-0123456789",
    gpus_per_node=4,
)


def test_the_manifest_runs_the_worker_entry_on_the_xgboost_runtime():
    manifest = desired_trainjob(REQUEST)
    assert manifest == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "ctloop-train-0123456789", "namespace": "team-a"},
        "spec": {
            "runtimeRef": {"name": "xgboost-distributed"},
            "trainer": {
                "image": "ghcr.io/ctloop/ctloop:0.1.0",
                "command": ["python", "-m", "ctloop.components.train.distributed"],
                "args": [
                    "--train=s3://data/train.parquet",
                    "--validation=s3://data/validation.parquet",
                    "--profile=s3://data/reference_profile.json",
                    "--output=s3://models/ctloop-train-0123456789",
                    "--hyperparameters={}",
                    "--device=auto",
                    "--workers-per-node=4",
                ],
                "numNodes": 2,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": 4}},
            },
        },
    }


def test_a_cpu_job_has_one_worker_per_node_and_no_gpu_limit():
    trainer = desired_trainjob(
        TrainJobRequest(**{**REQUEST.__dict__, "gpus_per_node": 0, "memory_per_node": "8Gi"})
    )["spec"]["trainer"]
    assert trainer["args"][-1] == "--workers-per-node=1"
    assert trainer["resourcesPerNode"] == {"requests": {"memory": "8Gi"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "a" * (NAME_MAX + 1)}, "must be a DNS-1035 label"),
        ({"name": "Train_1"}, "must be a DNS-1035 label"),
        ({"num_nodes": 0}, "num_nodes = 0 must be >= 1"),
        ({"gpus_per_node": -1}, "gpus_per_node = -1 must be >= 0"),
        ({"output_uri": ""}, "no URI for output"),
    ],
)
def test_what_the_api_server_would_take_but_cannot_run_is_refused(change, message):
    with pytest.raises(TrainJobError, match=message):
        desired_trainjob(TrainJobRequest(**{**REQUEST.__dict__, **change}))


def test_a_run_names_one_job_for_all_its_retries():
    name = trainjob_name("ctloop-train", "run-1")
    assert name == trainjob_name("ctloop-train", "run-1") != trainjob_name("ctloop-train", "run-2")
    assert len(name) <= NAME_MAX
    assert trainjob_name("ctloop-train") != trainjob_name("ctloop-train")


def test_the_distributed_step_takes_and_gives_what_evaluation_and_the_gate_use():
    """The pipeline feeds either step the same splits and profile, and evaluation, the gate
    and registration read `model`, `run_id` and `model_uri` from either."""
    one, many = train_model.component_spec, train_model_distributed.component_spec
    for name in ("model", "run_id", "model_uri"):
        assert many.outputs[name] == one.outputs[name]
    for name in ("train", "validation", "reference_profile", "mlflow_tracking_uri"):
        assert many.inputs[name] == one.inputs[name]
