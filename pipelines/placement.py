"""Where the train step runs on a cluster: the GPU request and the node it may land on.

Set at compile time (`ctloop compile --accelerator-type … --node-selector k=v
--toleration key[=value]:Effect`), since KFP fixes task resources when it compiles.
The defaults fit NVIDIA GPU nodes labelled by the GPU operator and tainted the usual way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kfp import kubernetes
from kfp.dsl import PipelineTask


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
