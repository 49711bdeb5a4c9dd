"""The TrainJob manifest that trains a ctloop model on several nodes through Kubeflow Trainer.

A Kubeflow Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1) names a runtime, here the
built-in `xgboost-distributed` ClusterTrainingRuntime, and overrides what the runtime leaves
to each job: the image, the command, the number of nodes and each node's resources. The
runtime turns it into a JobSet of `numNodes` pods; its XGBoost plugin gives each pod the
tracker's address (`DMLC_*`, see `ctloop.components.train.distributed`), one worker per GPU
of `resourcesPerNode` (one per node without GPUs). So the command is ctloop's worker entry in
the ctloop image, told how many GPUs (worker processes) each node has, and the job must not set
a `DMLC_*` variable itself (the runtime's webhook refuses that).

The workers read the splits and write the model in object storage, so they get credentials
the two ways KServe's storage initializer gets them: a service account the pods run as (IRSA on
EKS, Workload Identity on GKE: nothing to mount), or a Secret (`storage_credentials`). The
service account, and the Secret's volume where one is mounted, go through the TrainJob's
`runtimePatches` (Trainer >= 2.2; it replaced `podTemplateOverrides`), whose pod spec takes
`serviceAccountName`, `volumes` and per-container `volumeMounts` for the runtime's `node` job;
the Secret's variables go to `trainer.env`.

Pure: the manifest is a plain dict the Kubernetes client sends as is. The checks here are the
ones the CRD's schema cannot make on every API server: its CEL rules (a name of at most 63
characters in DNS-1035 form) are not enforced before Kubernetes 1.25, and the pods' host names,
`<name>-node-0-<index>`, must fit a DNS label too.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ctloop.components.kube_labels import check_object_name

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "xgboost-distributed"
"""The ClusterTrainingRuntime Kubeflow Trainer installs for XGBoost."""
WORKER_COMMAND = ("python", "-m", "ctloop.components.train.distributed")
NODE_JOB = "node"
"""The runtime's replicated job, and its container, that run the workers."""
PATCH_MANAGER = "ctloop"
"""This step's entry in `spec.runtimePatches` (one entry per manager)."""
GPU_RESOURCE = "nvidia.com/gpu"
NAME_MAX = 40
"""Longest TrainJob name: its pods are `<name>-node-0-<index>`, and their host name (which the
tracker address uses) is a DNS label of at most 63 characters."""
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": False,
    "AWS_SECRET_ACCESS_KEY": False,
    "AWS_SESSION_TOKEN": True,
    "AWS_ENDPOINT_URL": True,
    "AWS_REGION": True,
}
"""For s3:// URIs: the Secret's keys the workers get as variables of the same name, which
pyarrow's S3 filesystem reads (KServe's S3 Secret keys, plus the endpoint and region MinIO or
another S3 store needs); True: optional, a Secret without the key is fine."""
GCS_CREDENTIALS_FILE = "gcloud-application-credentials.json"
"""For gs:// URIs: the Secret's key holding a service-account key file (KServe's name for it),
mounted and named by GOOGLE_APPLICATION_CREDENTIALS, which pyarrow's GCS filesystem reads."""
GCS_CREDENTIALS_DIR = "/var/secrets/ctloop-storage"
CREDENTIALS_VOLUME = "ctloop-storage-credentials"


class TrainJobError(ValueError):
    """A TrainJob request that Kubeflow Trainer would refuse or could not run."""


@dataclass(frozen=True)
class TrainJobRequest:
    """What a distributed training run needs: where its data is, where the model goes, and
    the nodes it runs on. URIs are read and written by the worker pods, so they must be
    reachable from there (an object store: s3://, gs://, ...)."""

    name: str
    namespace: str
    image: str
    train_uri: str
    validation_uri: str
    profile_uri: str
    output_uri: str
    hyperparameters: str = "{}"
    device: str = "auto"
    num_nodes: int = 2
    gpus_per_node: int = 0
    cpu_per_node: str = ""
    memory_per_node: str = ""
    runtime: str = RUNTIME
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    """The ServiceAccount the worker pods run as (empty: the runtime's, usually `default`)."""
    credentials_secret: str = ""
    """A Secret with the object store's credentials (`storage_credentials`); empty: none."""


def trainjob_name(prefix: str, run_id: str = "") -> str:
    """A TrainJob name for the KFP run `run_id`: the same for every retry of the run's step
    (a retry then finds the job it started), a new one when there is no run id."""
    suffix = hashlib.sha256(run_id.encode()).hexdigest()[:10] if run_id else uuid.uuid4().hex[:10]
    return f"{prefix}-{suffix}"


def desired_trainjob(request: TrainJobRequest) -> dict:
    """The TrainJob manifest for `request`.

    Raises:
        TrainJobError: a name the API server or the pods' host names would refuse, fewer than
            one node, a negative GPU count, a URI that is empty, a service account or Secret
            name Kubernetes would refuse, or a Secret where no URI is s3:// or gs://.
    """
    _check(request)
    gpus = request.gpus_per_node
    args = [
        f"--train={request.train_uri}",
        f"--validation={request.validation_uri}",
        f"--profile={request.profile_uri}",
        f"--output={request.output_uri}",
        f"--hyperparameters={request.hyperparameters}",
        f"--device={request.device}",
        f"--workers-per-node={max(gpus, 1)}",
    ]
    trainer: dict = {
        "image": request.image,
        "command": list(WORKER_COMMAND),
        "args": args,
        "numNodes": request.num_nodes,
    }
    resources = _resources(request)
    if resources:
        trainer["resourcesPerNode"] = resources
    env, volumes, mounts = storage_credentials(request)
    if env:
        trainer["env"] = env
    metadata: dict = {"name": request.name, "namespace": request.namespace}
    if request.labels:
        metadata["labels"] = dict(request.labels)
    spec: dict = {"runtimeRef": {"name": request.runtime}, "trainer": trainer}
    pod_patch = _pod_patch(request.service_account, volumes, mounts)
    if pod_patch:
        spec["runtimePatches"] = [_runtime_patch(pod_patch)]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


def storage_credentials(request: TrainJobRequest) -> tuple[list[dict], list[dict], list[dict]]:
    """The workers' environment, volumes and volume mounts for `request.credentials_secret`,
    by the schemes of the URIs they read and write: s3:// gets `S3_SECRET_KEYS` as variables,
    gs:// the Secret's `GCS_CREDENTIALS_FILE` mounted and named by GOOGLE_APPLICATION_CREDENTIALS.
    """
    secret = request.credentials_secret
    env: list[dict] = []
    volumes: list[dict] = []
    mounts: list[dict] = []
    schemes = {urlsplit(uri).scheme for uri in _uris(request).values()} if secret else set()
    if "s3" in schemes:
        for key, optional in S3_SECRET_KEYS.items():
            reference = {"name": secret, "key": key, **({"optional": True} if optional else {})}
            env.append({"name": key, "valueFrom": {"secretKeyRef": reference}})
    if "gs" in schemes:
        path = f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_FILE}"
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path})
        volumes.append({"name": CREDENTIALS_VOLUME, "secret": {"secretName": secret}})
        mounts.append(
            {"name": CREDENTIALS_VOLUME, "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        )
    return env, volumes, mounts


def _pod_patch(service_account: str, volumes: list[dict], mounts: list[dict]) -> dict:
    """The worker pods' part of the runtime patch: their service account and volumes."""
    pod: dict = {}
    if service_account:
        pod["serviceAccountName"] = service_account
    if volumes:
        pod["volumes"] = volumes
        pod["containers"] = [{"name": NODE_JOB, "volumeMounts": mounts}]
    return pod


def _runtime_patch(pod_spec: dict) -> dict:
    """ctloop's `spec.runtimePatches` entry: `pod_spec` patched into the node job's pods."""
    job = {"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod_spec}}}}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
    }


def _uris(request: TrainJobRequest) -> dict[str, str]:
    return {
        "train": request.train_uri,
        "validation": request.validation_uri,
        "reference profile": request.profile_uri,
        "output": request.output_uri,
    }


def _check(request: TrainJobRequest) -> None:
    if len(request.name) > NAME_MAX or not _NAME.fullmatch(request.name):
        raise TrainJobError(
            f"TrainJob name {request.name!r} must be a DNS-1035 label (lower-case letters, digits "
            f"and '-', starting with a letter) of at most {NAME_MAX} characters"
        )
    if isinstance(request.num_nodes, bool) or request.num_nodes < 1:
        raise TrainJobError(f"num_nodes = {request.num_nodes!r} must be >= 1")
    if isinstance(request.gpus_per_node, bool) or request.gpus_per_node < 0:
        raise TrainJobError(f"gpus_per_node = {request.gpus_per_node!r} must be >= 0")
    uris = _uris(request)
    empty = [what for what, uri in uris.items() if not uri]
    if empty:
        raise TrainJobError(f"TrainJob {request.name}: no URI for {', '.join(empty)}")
    for what, name in (
        ("service_account", request.service_account),
        ("credentials_secret", request.credentials_secret),
    ):
        if name:
            check_object_name(name, f"TrainJob {request.name}: {what}", TrainJobError)
    schemes = {urlsplit(uri).scheme for uri in uris.values()}
    if request.credentials_secret and not schemes & {"s3", "gs"}:
        raise TrainJobError(
            f"TrainJob {request.name}: credentials_secret {request.credentials_secret!r} is "
            "for s3:// or gs:// URIs, and none of the train, validation, profile and output "
            f"URIs is one ({', '.join(sorted(uris.values()))})"
        )


def _resources(request: TrainJobRequest) -> dict:
    """Requests for CPU and memory, a limit for GPUs (an extended resource's request is its
    limit); quantities are left for the API server to check against the CRD's pattern."""
    requests = {
        name: quantity
        for name, quantity in (("cpu", request.cpu_per_node), ("memory", request.memory_per_node))
        if quantity
    }
    resources: dict = {}
    if requests:
        resources["requests"] = requests
    if request.gpus_per_node:
        resources["limits"] = {GPU_RESOURCE: request.gpus_per_node}
    return resources
