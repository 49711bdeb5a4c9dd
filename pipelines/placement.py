"""Where the train step runs: the GPU request and the machine or node it may land on.

Set at compile time, since KFP fixes task resources when it compiles. A placement does two
things to the train step, and the training pipeline calls both: `wrap` the component before
it is called, `apply` to the task it made.

- `GpuPlacement` (`ctloop compile`, Kubeflow Pipelines on Kubernetes): the component as it
  is; the task asks for the accelerator and, through kfp-kubernetes, lands on GPU nodes
  (`--accelerator-type … --node-selector k=v --toleration key[=value]:Effect`). The defaults
  fit NVIDIA GPU nodes labelled by the GPU operator and tainted the usual way.
- `VertexPlacement` (`ctloop compile --target vertex`, Vertex AI Pipelines): the component
  becomes a Vertex AI CustomJob on one machine with its accelerators
  (`--machine-type … --accelerator-type … --accelerator-count …`), through
  google-cloud-pipeline-components; there are no Kubernetes nodes to select or tolerate.

Both retry the train step (`Retry`, KFP's `set_retry`): a preempted spot node or a lost pod
costs a restart, and the step resumes from its last checkpoint (`checkpoint_uri`,
components/train/checkpoints.py). `spot` puts the step on spot capacity: on Kubernetes the
cloud's spot node label (`SPOT_POOLS`, with the toleration GKE's docs give for tainted spot
pools), on Vertex AI the CustomJob's SPOT scheduling strategy.

`label_every_pod` gives every pod of a compiled pipeline the same labels (team, project,
cost-center, ...), so a cluster's cost tools can group spend by them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf import json_format
from kfp import kubernetes
from kfp.dsl import PipelineTask, structures
from kfp.dsl.base_component import BaseComponent
from kfp.dsl.graph_component import GraphComponent
from kfp.kubernetes import kubernetes_executor_config_pb2

from ctloop.components.kube_labels import check_labels


class Placement(Protocol):
    """What the training pipeline asks of a placement for its train step."""

    def wrap(self, component: BaseComponent) -> BaseComponent:
        """The component the train task is made from."""

    def apply(self, task: PipelineTask) -> PipelineTask:
        """The train task, with what the placement sets on a task."""


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str = "NoSchedule"

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """`key[=value][:Effect]`, e.g. `nvidia.com/gpu:NoSchedule` or `pool=gpu:NoExecute`."""
        spec, _, effect = text.partition(":")
        key, _, value = spec.partition("=")
        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        if not key or (effect and effect not in effects):
            raise ValueError(
                f"toleration {text!r}: expected key[=value][:Effect] with Effect one of {effects}"
            )
        return cls(
            key=key,
            operator="Equal" if value else "Exists",
            value=value or None,
            effect=effect or "NoSchedule",
        )


@dataclass(frozen=True)
class Retry:
    """KFP's retry policy for the train step: `num_retries` restarts, the first after
    `backoff_duration`, each later one `backoff_factor` times longer, none after
    `backoff_max_duration` (durations as KFP writes them: "60s", "5m", "1h")."""

    num_retries: int = 3
    backoff_duration: str = "60s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"

    def __post_init__(self) -> None:
        if self.num_retries < 0:
            raise ValueError(f"retries {self.num_retries} is below 0")
        if self.backoff_factor < 1:
            raise ValueError(f"retry backoff factor {self.backoff_factor} is below 1")
        for duration in (self.backoff_duration, self.backoff_max_duration):
            try:
                structures.convert_duration_to_seconds(duration)
            except (ValueError, IndexError) as error:
                raise ValueError(
                    f"retry duration {duration!r}: expected a number and a unit of s, m, h, d "
                    "or w, e.g. 60s or 5m"
                ) from error

    def apply(self, task: PipelineTask) -> PipelineTask:
        if self.num_retries:
            task.set_retry(
                self.num_retries,
                backoff_duration=self.backoff_duration,
                backoff_factor=self.backoff_factor,
                backoff_max_duration=self.backoff_max_duration,
            )
        return task


NETWORK_RETRY = Retry(
    num_retries=3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s"
)
"""KFP's retry of the steps that talk to networks (object storage, MLflow, Kubernetes,
Prometheus, the KFP API): a tracking server restarting or an API server's brief 503 costs a
retry, not the run. Every step it is given to can run again without harm: reads, idempotent
applies, analyses that re-read their figures, and the retraining start, whose cooldown finds
the run a lost answer had started. Registration is not retried: a retry after a version was
created but its answer lost would register the candidate twice."""

NO_RETRY = Retry(num_retries=0)
"""No retries: kfp.local honours `set_retry`, and on a laptop a failing step should fail at
once with its error, not after minutes of backoff."""


SPOT_POOLS: dict[str, tuple[dict[str, str], tuple[Toleration, ...]]] = {
    # GKE labels spot nodes; pools created with the taint its docs suggest need the toleration.
    "gke": (
        {"cloud.google.com/gke-spot": "true"},
        (Toleration("cloud.google.com/gke-spot", "Equal", "true", "NoSchedule"),),
    ),
    # EKS managed node groups label the capacity type and taint nothing by default.
    "eks": ({"eks.amazonaws.com/capacityType": "SPOT"}, ()),
}
"""Node labels and tolerations of each cloud's spot (preemptible) capacity."""


@dataclass(frozen=True)
class GpuPlacement:
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = 1
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    memory_limit: str = "32Gi"
    spot: str = ""
    """"gke" or "eks": train on that cloud's spot nodes (`SPOT_POOLS`); "" on any."""
    retry: Retry = Retry()

    def __post_init__(self) -> None:
        if self.spot and self.spot not in SPOT_POOLS:
            raise ValueError(
                f"spot capacity {self.spot!r} is not known: expected one of {sorted(SPOT_POOLS)}"
            )

    def wrap(self, component: BaseComponent) -> BaseComponent:
        """The component unchanged: on Kubernetes the task itself carries the placement."""
        return component

    def apply(self, task: PipelineTask) -> PipelineTask:
        """Ask for the accelerator, CPU and memory, pin the task to GPU (and spot) nodes,
        retry it."""
        task.set_cpu_request(self.cpu_request).set_memory_request(self.memory_request)
        task.set_memory_limit(self.memory_limit)
        if self.accelerator_count > 0:
            task.set_accelerator_type(self.accelerator_type)
            task.set_accelerator_limit(self.accelerator_count)
        spot_selector, spot_tolerations = SPOT_POOLS.get(self.spot, ({}, ()))
        for key, value in sorted({**self.node_selector, **spot_selector}.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in (*self.tolerations, *spot_tolerations):
            kubernetes.add_toleration(
                task,
                key=toleration.key,
                operator=toleration.operator,
                value=toleration.value,
                effect=toleration.effect,
            )
        return self.retry.apply(task)


VERTEX_ACCELERATOR = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class VertexPlacement:
    """The train step as a Vertex AI CustomJob on one `machine_type` machine.

    `accelerator_type` is a Vertex AI `MachineSpec.acceleratorType` (NVIDIA_TESLA_T4,
    NVIDIA_L4, NVIDIA_TESLA_A100, ...); `accelerator_count` 0 trains on CPU only.
    """

    machine_type: str = "n1-standard-8"
    accelerator_type: str = "NVIDIA_TESLA_T4"
    accelerator_count: int = 1
    boot_disk_size_gb: int = 100
    spot: bool = False
    """Run the CustomJob on Spot VMs (Vertex AI's SPOT scheduling strategy)."""
    retry: Retry = Retry()

    def __post_init__(self) -> None:
        if self.accelerator_count < 0:
            raise ValueError(f"accelerator count {self.accelerator_count} is below 0")
        if self.accelerator_count and not VERTEX_ACCELERATOR.fullmatch(self.accelerator_type):
            raise ValueError(
                f"accelerator type {self.accelerator_type!r} is not a Vertex AI accelerator "
                "type: expected an upper-case name such as NVIDIA_TESLA_T4 or NVIDIA_L4"
            )

    def wrap(self, component: BaseComponent) -> BaseComponent:
        """`component` as a CustomJob: same inputs and outputs, run on the machine asked for.

        google-cloud-pipeline-components merges the component's parameters into the CustomJob
        op's own (project, location, display_name, ...) and lets the component's win on a
        clash; a clash is refused here instead, since it would silently change the job.
        """
        from google_cloud_pipeline_components.v1.custom_job import (
            CustomTrainingJobOp,
            create_custom_training_job_from_component,
        )

        own = set(component.component_spec.inputs or {}) | set(
            component.component_spec.outputs or {}
        )
        reserved = set(CustomTrainingJobOp.component_spec.inputs or {}) | set(
            CustomTrainingJobOp.component_spec.outputs or {}
        )
        if own & reserved:
            raise ValueError(
                f"component {component.name} has parameters the Vertex AI CustomJob op also "
                f"defines: {sorted(own & reserved)}"
            )
        return create_custom_training_job_from_component(
            component,
            machine_type=self.machine_type,
            accelerator_type=self.accelerator_type if self.accelerator_count else "",
            accelerator_count=self.accelerator_count,
            boot_disk_size_gb=self.boot_disk_size_gb,
            strategy="SPOT" if self.spot else "STANDARD",
        )

    def apply(self, task: PipelineTask) -> PipelineTask:
        """The task retried; the CustomJob's worker pool spec holds machine and accelerator."""
        return self.retry.apply(task)


def label_every_pod(pipeline: GraphComponent, labels: Mapping[str, str]) -> GraphComponent:
    """`pipeline` with `labels` on the pod of every task, nested pipelines' tasks included.

    kfp-kubernetes labels one task at a time (`add_pod_label`); the same Kubernetes executor
    config is written here into the platform spec of each executor the compiled pipeline has,
    so no pipeline definition has to label each of its tasks.
    """
    if not labels:
        return pipeline
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    configs = pipeline.platform_spec.platforms["kubernetes"].deployment_spec.executors
    for name in sorted(executors):
        config = kubernetes_executor_config_pb2.KubernetesExecutorConfig()
        if name in configs:
            json_format.ParseDict(json_format.MessageToDict(configs[name]), config)
        config.pod_metadata.labels.update(check_labels(labels, ValueError))
        configs[name].Clear()
        configs[name].update(json_format.MessageToDict(config))
    return pipeline


def key_values(flag: str, pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` texts as a dict, or a ValueError naming `flag` and the text without "="."""
    parsed = {}
    for text in pairs:
        key, equals, value = text.partition("=")
        if not equals or not key:
            raise ValueError(f"{flag} {text!r}: expected KEY=VALUE")
        parsed[key] = value
    return parsed


LOCAL_PLACEMENT = GpuPlacement(retry=NO_RETRY)
"""The train step of a kfp.local run: kfp.local ignores the accelerator and node settings but
honours retries, which on a laptop only delay a failure."""


def placement_for(
    target: str,
    *,
    accelerator_type: str | None = None,
    accelerator_count: int = 1,
    machine_type: str | None = None,
    node_selector: Sequence[str] | None = None,
    toleration: Sequence[str] | None = None,
    spot: str | None = None,
    retries: int = 3,
    retry_backoff: str = "60s",
    label: Sequence[str] | None = None,
) -> GpuPlacement | VertexPlacement:
    """The placement `ctloop compile`'s flags ask for on `target` ("kfp" or "vertex"); a flag
    of the other target is refused with the rule. `spot` is None (not asked), "" (asked with no
    cloud: Vertex AI's Spot VMs) or the cloud of a Kubernetes spot pool (`SPOT_POOLS`)."""
    retry = Retry(num_retries=retries, backoff_duration=retry_backoff)
    if target == "vertex":
        if node_selector or toleration or label:
            raise ValueError(
                "--node-selector, --toleration and --label set Kubernetes pods; Vertex AI "
                "picks the machine from --machine-type and --accelerator-type"
            )
        if spot:
            raise ValueError("--spot takes no cloud with --target vertex: Vertex AI's Spot VMs")
        defaults = VertexPlacement()
        return VertexPlacement(
            machine_type=machine_type or defaults.machine_type,
            accelerator_type=accelerator_type or defaults.accelerator_type,
            accelerator_count=accelerator_count,
            spot=spot is not None,
            retry=retry,
        )
    if machine_type:
        raise ValueError("--machine-type applies to --target vertex only")
    if spot == "":
        raise ValueError("--spot needs the cloud whose spot nodes to use: --spot gke or --spot eks")
    defaults = GpuPlacement()
    return GpuPlacement(
        accelerator_type=accelerator_type or defaults.accelerator_type,
        accelerator_count=accelerator_count,
        node_selector=key_values("--node-selector", node_selector)
        if node_selector
        else defaults.node_selector,
        tolerations=tuple(Toleration.parse(t) for t in toleration)
        if toleration
        else defaults.tolerations,
        spot=spot or "",
        retry=retry,
    )
