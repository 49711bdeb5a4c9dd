"""The distributed train step against a real kube-apiserver with Kubeflow Trainer's CRDs.

The TrainJob ctloop builds is created as a service account bound to the project's Role alone
(manifests/rbac/), so the real CRD schema (pruning, defaults, 422s) and RBAC judge every
request. No Kubeflow Trainer controller runs: the test writes the
TrainJob's status through the status subresource, as the controller would, each time the step
reports what it saw; and it plays rank 0 by publishing a model at the job's output location.
The CRDs are the released ones (../shared/kubeflow-trainer/) with their CEL rules removed,
which a 1.20 API server does not know (see SOURCE.md there).
"""

import json
import os
import signal
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml
from kubernetes import client

from ctloop.components.contract.model_folder import load_model
from ctloop.components.contract.model_input import to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.deploy.api_client import KubernetesApiError
from ctloop.components.train.distributed import PublishedModel, publish
from ctloop.components.train.trainer import TrainResult
from ctloop.components.trainjob import cluster
from ctloop.components.trainjob.distributed_training import run_distributed_training
from ctloop.components.trainjob.trainjob import (
    RUNTIME,
    TrainJobError,
    TrainJobRequest,
    desired_trainjob,
)
from tests import envtest, sqlite_registry

envtest.require_apiserver()
kube_apiserver = envtest.kube_apiserver
tracking_uri = sqlite_registry.tracking_uri

TRAINER = Path(__file__).resolve().parents[2] / "shared" / "kubeflow-trainer"
CRD_FILES = [
    f"trainer.kubeflow.org_{plural}.yaml"
    for plural in ("trainjobs", "clustertrainingruntimes", "trainingruntimes")
]
PROFILE = {
    "target": "churn",
    "task": "binary",
    "feature_order": ["tenure", "contract"],
    "features": {
        "tenure": {"kind": "numeric"},
        "contract": {"kind": "categorical", "categories": {"month": 0.5, "year": 0.5}},
    },
}
FAST = {"timeout_s": 30.0, "poll_s": 0.02}

if not TRAINER.is_dir():
    pytest.skip(f"no Kubeflow Trainer CRDs at {TRAINER}", allow_module_level=True)


def without_cel(node):
    """`node` without `x-kubernetes-validations` keys (CEL, unknown to a 1.20 server)."""
    if isinstance(node, dict):
        return {k: without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(item) for item in node]
    return node


@pytest.fixture(scope="module")
def trainer_installed(kube_apiserver):
    """Kubeflow Trainer's CRDs and its xgboost-distributed runtime, as released."""
    crds = [
        without_cel(yaml.load((TRAINER / name).read_text(), Loader=yaml.CSafeLoader))
        for name in CRD_FILES
    ]
    kube_apiserver.install_crds(crds)
    runtime = yaml.safe_load((TRAINER / "xgboost_distributed.yaml").read_text())
    group, version = runtime["apiVersion"].split("/")
    admin = kube_apiserver.admin.custom_objects_api()
    admin.create_cluster_custom_object(group, version, "clustertrainingruntimes", runtime)
    return kube_apiserver


class Namespace:
    """A namespace where ctloop acts as a Role-bound service account and the test plays
    Kubeflow Trainer (the status) and rank 0 (the published model)."""

    def __init__(self, server, tmp_path: Path):
        self.namespace = server.namespace("trainjob")
        subject = server.role_bound(self.namespace)
        admin = server.admin.api_client()
        self.api = subject.custom_objects_api()
        self._await_rules(subject)
        self.admin = server.admin.custom_objects_api()
        self.core = client.CoreV1Api(admin)
        self.tmp_path = tmp_path

    def _await_rules(self, subject) -> None:
        """Until the server's authorizer has seen the new binding (its cache lags a write)."""
        review = client.AuthorizationV1Api(subject.api_client())
        access = {"namespace": self.namespace, "group": "trainer.kubeflow.org",
                  "resource": "trainjobs", "verb": "create"}  # fmt: skip
        deadline = time.monotonic() + 30
        while not review.create_self_subject_access_review(
            {"spec": {"resourceAttributes": access}}
        ).status.allowed:
            assert time.monotonic() < deadline, f"{subject.user} never got {access}"
            time.sleep(0.05)

    def request(self, name="churn-train", **changes) -> TrainJobRequest:
        fields = {
            "name": name,
            "namespace": self.namespace,
            "image": "ghcr.io/ctloop/ctloop:0.1.0",
            "train_uri": "s3://data/churn/train.parquet",
            "validation_uri": "s3://data/churn/validation.parquet",
            "profile_uri": "s3://data/churn/reference_profile.json",
            "output_uri": str(self.tmp_path / "published" / name),
            "hyperparameters": '{"max_depth": 4}',
            "num_nodes": 2,
            "gpus_per_node": 1,
            "cpu_per_node": "4",
            "memory_per_node": "16Gi",
        }
        return TrainJobRequest(**{**fields, **changes})

    def stored(self, name: str) -> dict:
        group, version, plural = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
        return self.admin.get_namespaced_custom_object(group, version, self.namespace, plural, name)

    def write_status(self, name: str, *conditions, active=0, succeeded=0, failed=0) -> None:
        """What Kubeflow Trainer writes: conditions, and the node Job's counts."""
        trainjob = self.stored(name)
        trainjob["status"] = {
            "conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": "2026-12-04T22:00:00Z"}
                for kind, reason, message in conditions
            ],
            "jobsStatus": [{"name": "node", "active": active, "ready": active,
                            "succeeded": succeeded, "failed": failed, "suspended": 0}],
        }  # fmt: skip
        self.admin.replace_namespaced_custom_object_status(
            "trainer.kubeflow.org", "v1alpha1", self.namespace, "trainjobs", name, trainjob
        )

    def worker_pod(self, trainjob: str, index: int, terminated: dict | None = None) -> None:
        """A worker pod as the JobSet labels it (no kubelet runs it: its status is written)."""
        self.core.create_namespaced_service_account(
            self.namespace, {"metadata": {"name": "default"}}
        )
        pod = self.core.create_namespaced_pod(
            self.namespace,
            {
                "metadata": {
                    "name": f"{trainjob}-node-0-{index}-abcde",
                    "labels": {
                        "jobset.sigs.k8s.io/jobset-name": trainjob,
                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                        "batch.kubernetes.io/job-completion-index": str(index),
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "node", "image": "ghcr.io/ctloop/ctloop:0.1.0"}],
                },
            },
        )
        if terminated:
            pod.status.phase = "Failed"
            pod.status.container_statuses = [
                client.V1ContainerStatus(
                    name="node", image="ghcr.io/ctloop/ctloop:0.1.0", image_id="", ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
                        **terminated)),
                )
            ]  # fmt: skip
            self.core.replace_namespaced_pod_status(pod.metadata.name, self.namespace, pod)


@pytest.fixture
def space(trainer_installed, tmp_path):
    return Namespace(trainer_installed, tmp_path)


@pytest.fixture(scope="module")
def validation_table(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows = 400
    tenure = rng.normal(size=rows)
    contract = rng.choice(["month", "year"], size=rows)
    churn = (tenure + (contract == "month") + rng.normal(size=rows) > 0.5).astype("int64")
    path = tmp_path_factory.mktemp("tables") / "validation.parquet"
    pq.write_table(pa.table({"tenure": tenure, "contract": contract, "churn": churn}), path)
    return str(path)


def publish_as_rank_0(output_uri: str, validation_path: str) -> xgb.Booster:
    """What rank 0 leaves at the output location when training succeeds."""
    table = pq.read_table(validation_path)
    frame = to_frame(table, feature_schema(PROFILE))
    matrix = xgb.DMatrix(frame, label=table.column("churn").to_numpy(), enable_categorical=True)
    evals: dict = {}
    params = {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"]}
    booster = xgb.train(params, matrix, 4, evals=[(matrix, "validation")], evals_result=evals)
    result = TrainResult(booster, 3, evals["validation"], 8000, 400)
    publish(PublishedModel(result, workers=2, device="cpu"), PROFILE, output_uri)
    return booster


def run_step(space, request, tracking_uri, validation_path, controller):
    """The distributed train step as its component runs it, reporting to `controller`."""
    return run_distributed_training(
        request,
        api=space.api,
        profile=PROFILE,
        validation_path=validation_path,
        tracking_uri=tracking_uri,
        experiment="distributed",
        model_dir=str(space.tmp_path / "model"),
        report=controller,
        **FAST,
    )


def test_the_trainjob_the_step_builds_is_stored_as_built(space):
    request = space.request()
    created, action = cluster.create_trainjob(space.api, desired_trainjob(request))
    assert action == "created"
    stored = space.stored(request.name)
    # Nothing pruned: every field ctloop sends is one the CRD knows; the runtime ref defaults.
    assert stored["spec"]["trainer"] == desired_trainjob(request)["spec"]["trainer"]
    assert stored["spec"]["runtimeRef"] == {
        "name": RUNTIME,
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert stored["spec"]["trainer"]["resourcesPerNode"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"nvidia.com/gpu": 1},
    }
    assert stored["spec"]["trainer"]["args"][-1] == "--workers-per-node=1"


def test_the_workers_storage_credentials_are_stored_as_built(space):
    """Service account and volume through `runtimePatches`, the Secret's keys in
    `trainer.env`: a field the CRD did not know would be pruned, silently, and the workers
    would run without credentials."""
    request = space.request(
        output_uri="gs://models/churn-train",
        service_account="lake-reader",
        credentials_secret="lake-keys",
    )
    manifest = desired_trainjob(request)
    cluster.create_trainjob(space.api, manifest)
    stored = space.stored(request.name)
    assert stored["spec"]["trainer"] == manifest["spec"]["trainer"]
    assert stored["spec"]["runtimePatches"] == manifest["spec"]["runtimePatches"]
    [job] = stored["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ]
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lake-reader"
    assert pod["volumes"] == [
        {"name": "ctloop-storage-credentials", "secret": {"secretName": "lake-keys"}}
    ]
    names = [variable["name"] for variable in stored["spec"]["trainer"]["env"]]
    assert names[:2] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]  # the train table: s3://
    assert names[-1] == "GOOGLE_APPLICATION_CREDENTIALS"  # the output: gs://


def test_a_retried_step_follows_its_own_job_and_refuses_another(space):
    request = space.request(service_account="lake-reader")
    cluster.create_trainjob(space.api, desired_trainjob(request))
    _, action = cluster.create_trainjob(space.api, desired_trainjob(request))
    assert action == "existing"
    with pytest.raises(TrainJobError, match=f"TrainJob {space.namespace}/churn-train exists"):
        cluster.create_trainjob(space.api, desired_trainjob(space.request(num_nodes=4)))
    other_account = space.request(service_account="someone-else")
    with pytest.raises(TrainJobError, match=f"TrainJob {space.namespace}/churn-train exists"):
        cluster.create_trainjob(space.api, desired_trainjob(other_account))


def test_a_quantity_the_crd_refuses_is_a_422_naming_the_field(space):
    request = space.request(memory_per_node="16 GB")
    with pytest.raises(KubernetesApiError) as refused:
        cluster.create_trainjob(space.api, desired_trainjob(request))
    assert refused.value.status == 422
    assert "spec.trainer.resourcesPerNode.requests.memory" in str(refused.value)
    assert cluster.get_trainjob(space.api, request.name, space.namespace) is None


def test_the_step_follows_the_job_to_complete_and_brings_the_model_back(
    space, tracking_uri, validation_table, tmp_path
):
    request = space.request()
    seen = []

    def controller(line: str) -> None:
        """Each time the step reports, Kubeflow Trainer (and rank 0) move the job on."""
        seen.append(line)
        created = ("Created", "JobsCreationSucceeded", "Succeeded to create Jobs")
        if len(seen) == 1:
            space.write_status(request.name, created, active=2)
        elif len(seen) == 2:
            booster_holder.append(publish_as_rank_0(request.output_uri, validation_table))
            complete = ("Complete", "JobsCompleted", "TrainJob completed")
            space.write_status(request.name, created, complete, succeeded=2)

    booster_holder = []
    outcome = run_step(space, request, tracking_uri, validation_table, controller)
    where = f"TrainJob {space.namespace}/churn-train"
    assert seen == [
        f"{where}: created (runtime xgboost-distributed, 2 node(s))",
        f"{where}: Created (JobsCreationSucceeded); node: 2 active, 2 ready, 0 succeeded, 0 failed",
        f"{where}: Created (JobsCreationSucceeded); Complete (JobsCompleted); "
        "node: 0 active, 0 ready, 2 succeeded, 0 failed",
    ]
    model = load_model(tmp_path / "model")
    assert model.booster.save_raw() == booster_holder[0].save_raw()
    assert sorted(os.listdir(tmp_path / "model")) == ["model.json", "reference_profile.json"]
    run = mlflow.MlflowClient(tracking_uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train_rows"] == 8000 and run.data.metrics["workers"] == 2
    assert run.data.tags["ctloop.trainjob"] == f"{space.namespace}/churn-train"
    assert outcome.model_uri.startswith("models:/") and outcome.device == "cpu"


def test_a_failed_job_is_one_error_with_the_reason_and_the_workers_state(
    space, tracking_uri, validation_table, tmp_path
):
    request = space.request()
    space.worker_pod(request.name, 1, {"reason": "OOMKilled", "exit_code": 137})

    def controller(line: str) -> None:
        failed = ("Failed", "JobSetFailed", "jobset failed: node-1 exceeded its backoff limit")
        space.write_status(request.name, failed, failed=1)

    with pytest.raises(cluster.TrainJobFailed) as failure:
        run_step(space, request, tracking_uri, validation_table, controller)
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        f"TrainJob {space.namespace}/churn-train failed: JobSetFailed: "
        "jobset failed: node-1 exceeded its backoff limit"
    )
    assert lines[1] == "--- worker 1: pod churn-train-node-0-1-abcde Failed, node: terminated " + (
        "OOMKilled (exit 137)"
    )
    assert lines[2:] == ["(empty log)"]  # no kubelet ran it: the server has no lines
    assert not (tmp_path / "model").exists()
    [run] = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("distributed").experiment_id],
        filter_string=f"tags.`ctloop.trainjob` = '{space.namespace}/churn-train'",
    )
    assert run.info.status == "FAILED"


def test_a_stopped_step_deletes_its_job_and_says_so(space, tracking_uri, validation_table):
    """Cancelling a KFP run deletes the step's pod: its process gets SIGTERM. The job, which
    nothing else owns, must not keep its nodes; the step exits as a stopped step does."""
    request = space.request()
    seen = []
    before = signal.getsignal(signal.SIGTERM)

    def controller(line: str) -> None:
        seen.append(line)
        if len(seen) == 1:  # the job is created and running: KFP cancels the run
            space.write_status(request.name, ("Created", "JobsCreationSucceeded", "ok"), active=2)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as stopped:
        run_step(space, request, tracking_uri, validation_table, controller)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert cluster.get_trainjob(space.api, request.name, space.namespace) is None
    assert seen[-1] == f"TrainJob {space.namespace}/churn-train: deleted, the step got SIGTERM"
    [run] = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("distributed").experiment_id],
        filter_string=f"tags.`ctloop.trainjob` = '{space.namespace}/churn-train'",
    )
    assert run.info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_job_that_runs_out_of_time_is_deleted(space):
    request = space.request()
    cluster.create_trainjob(space.api, desired_trainjob(request))
    with pytest.raises(cluster.TrainJobTimeout) as timeout:
        cluster.wait_for_trainjob(
            space.api, request.name, space.namespace, timeout_s=0.1, poll_s=0.02, report=print
        )
    assert str(timeout.value).splitlines() == [
        f"TrainJob {space.namespace}/churn-train did not end within 0.1 s (last: no status yet); "
        "deleted it",
        "no worker pods (jobset.sigs.k8s.io/jobset-name=churn-train,"
        "jobset.sigs.k8s.io/replicatedjob-name=node)",
    ]
    assert cluster.get_trainjob(space.api, request.name, space.namespace) is None


def test_the_step_reads_nothing_of_a_namespace_the_role_does_not_cover(space):
    """The Role is namespaced: the same subject is refused elsewhere (403), in one line."""
    request = space.request(namespace="default")
    with pytest.raises(KubernetesApiError, match="403 Forbidden") as refused:
        cluster.create_trainjob(space.api, desired_trainjob(request))
    assert json.dumps(str(refused.value)).count("\\n") == 0
