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


def test_a_service_account_runs_the_workers_through_the_runtime_patch():
    """IRSA / Workload Identity: the pods run as the account, nothing is mounted."""
    manifest = desired_trainjob(TrainJobRequest(**{**REQUEST.__dict__, "service_account": "lake"}))
    assert manifest["spec"]["runtimePatches"] == [
        {
            "manager": "ctloop",
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {
                                "name": "node",
                                "template": {
                                    "spec": {"template": {"spec": {"serviceAccountName": "lake"}}}
                                },
                            }
                        ]
                    }
                }
            },
        }
    ]
    assert "env" not in manifest["spec"]["trainer"]


def test_a_secret_gives_s3_workers_the_keys_pyarrow_reads():
    manifest = desired_trainjob(
        TrainJobRequest(**{**REQUEST.__dict__, "credentials_secret": "lake-keys"})
    )
    env = manifest["spec"]["trainer"]["env"]
    assert [(e["name"], e["valueFrom"]["secretKeyRef"]) for e in env] == [
        ("AWS_ACCESS_KEY_ID", {"name": "lake-keys", "key": "AWS_ACCESS_KEY_ID"}),
        ("AWS_SECRET_ACCESS_KEY", {"name": "lake-keys", "key": "AWS_SECRET_ACCESS_KEY"}),
        ("AWS_SESSION_TOKEN", {"name": "lake-keys", "key": "AWS_SESSION_TOKEN", "optional": True}),
        ("AWS_ENDPOINT_URL", {"name": "lake-keys", "key": "AWS_ENDPOINT_URL", "optional": True}),
        ("AWS_REGION", {"name": "lake-keys", "key": "AWS_REGION", "optional": True}),
    ]
    assert "runtimePatches" not in manifest["spec"]  # variables only: nothing to mount


def test_a_secret_gives_gcs_workers_a_mounted_key_file():
    gcs = {k: v.replace("s3://", "gs://") for k, v in REQUEST.__dict__.items() if k.endswith("uri")}
    request = TrainJobRequest(**{**REQUEST.__dict__, **gcs, "credentials_secret": "gcs-key"})
    manifest = desired_trainjob(request)
    assert manifest["spec"]["trainer"]["env"] == [
        {
            "name": "GOOGLE_APPLICATION_CREDENTIALS",
            "value": "/var/secrets/ctloop-storage/gcloud-application-credentials.json",
        }
    ]
    [patch] = manifest["spec"]["runtimePatches"]
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["template"]["spec"]["template"]["spec"] == {
        "volumes": [{"name": "ctloop-storage-credentials", "secret": {"secretName": "gcs-key"}}],
        "containers": [
            {
                "name": "node",
                "volumeMounts": [
                    {
                        "name": "ctloop-storage-credentials",
                        "mountPath": "/var/secrets/ctloop-storage",
                        "readOnly": True,
                    }
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "a" * (NAME_MAX + 1)}, "must be a DNS-1035 label"),
        ({"service_account": "Lake_Reader"}, "service_account 'Lake_Reader' is not a Kubernetes"),
        ({"credentials_secret": "keys/s3"}, "credentials_secret 'keys/s3' is not a Kubernetes"),
        (
            {"credentials_secret": "keys", "output_uri": "/mnt/models", "train_uri": "/mnt/t"}
            | {"validation_uri": "/mnt/v", "profile_uri": "hdfs://p"},
            "credentials_secret 'keys' is for s3:// or gs:// URIs",
        ),
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


def test_credentials_default_to_none_so_pipelines_compile_unchanged():
    inputs = train_model_distributed.component_spec.inputs
    assert inputs["service_account"].default == inputs["credentials_secret"].default == ""
