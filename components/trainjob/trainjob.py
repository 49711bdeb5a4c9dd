"""The TrainJob manifest that trains a ctloop model on several nodes through Kubeflow Trainer.

A Kubeflow Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1) names a runtime, here the
built-in `xgboost-distributed` ClusterTrainingRuntime, and overrides what the runtime leaves
to each job: the image, the command, the number of nodes and each node's resources. The
runtime turns it into a JobSet of `numNodes` pods; its XGBoost plugin gives each pod the
tracker's address (`DMLC_*`, see `ctloop.components.train.distributed`), one worker per GPU
of `resourcesPerNode` (one per node without GPUs). So the command is ctloop's worker entry in
the ctloop image, told how many GPUs (worker processes) each node has, and the job must not set
a `DMLC_*` variable itself (the runtime's webhook refuses that).

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

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "xgboost-distributed"
"""The ClusterTrainingRuntime Kubeflow Trainer installs for XGBoost."""
WORKER_COMMAND = ("python", "-m", "ctloop.components.train.distributed")
GPU_RESOURCE = "nvidia.com/gpu"
NAME_MAX = 40
"""Longest TrainJob name: its pods are `<name>-node-0-<index>`, and their host name (which the
tracker address uses) is a DNS label of at most 63 characters."""
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


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


def trainjob_name(prefix: str, run_id: str = "") -> str:
    """A TrainJob name for the KFP run `run_id`: the same for every retry of the run's step
    (a retry then finds the job it started), a new one when there is no run id."""
    suffix = hashlib.sha256(run_id.encode()).hexdigest()[:10] if run_id else uuid.uuid4().hex[:10]
    return f"{prefix}-{suffix}"


def desired_trainjob(request: TrainJobRequest) -> dict:
    """The TrainJob manifest for `request`.

    Raises:
        TrainJobError: a name the API server or the pods' host names would refuse, fewer than
            one node, a negative GPU count, or a URI that is empty.
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
    metadata: dict = {"name": request.name, "namespace": request.namespace}
    if request.labels:
        metadata["labels"] = dict(request.labels)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {"runtimeRef": {"name": request.runtime}, "trainer": trainer},
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
    uris = {
        "train": request.train_uri,
        "validation": request.validation_uri,
        "reference profile": request.profile_uri,
        "output": request.output_uri,
    }
    empty = [what for what, uri in uris.items() if not uri]
    if empty:
        raise TrainJobError(f"TrainJob {request.name}: no URI for {', '.join(empty)}")


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
