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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.base_component import BaseComponent


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

    def wrap(self, component: BaseComponent) -> BaseComponent:
        """The component unchanged: on Kubernetes the task itself carries the placement."""
        return component

    def apply(self, task: PipelineTask) -> PipelineTask:
        """Ask for the accelerator, CPU and memory, and pin the task to GPU nodes."""
        task.set_cpu_request(self.cpu_request).set_memory_request(self.memory_request)
        task.set_memory_limit(self.memory_limit)
        if self.accelerator_count > 0:
            task.set_accelerator_type(self.accelerator_type)
            task.set_accelerator_limit(self.accelerator_count)
        for key, value in sorted(self.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in self.tolerations:
            kubernetes.add_toleration(
                task,
                key=toleration.key,
                operator=toleration.operator,
                value=toleration.value,
                effect=toleration.effect,
            )
        return task


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
        )

    def apply(self, task: PipelineTask) -> PipelineTask:
        """The task unchanged: the CustomJob's worker pool spec holds machine and accelerator."""
        return task
