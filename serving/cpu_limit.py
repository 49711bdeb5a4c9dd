"""The CPUs a process may use in a container, which sizes the predictor's scoring threads."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by the container's CPU limit.

    In a pod, affinity lists every CPU of the node, but the CPU limit (cgroup v2 `cpu.max`,
    "<quota> <period>" or "max <period>") throttles the container to quota / period of them;
    more scoring threads than that only wait for each other.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, int(int(quota) // int(period))))
