"""Before training: in memory, external memory, or several workers, from the table and the node.

The train step should not learn that a table does not fit by being OOM-killed an hour in. From
the Parquet footer (rows and columns, nothing read), the memory this process may use (the
cgroup limit of its container, else the machine's) and the GPU (nvidia-smi, when XGBoost was
built with CUDA; cupy is not imported), `plan_layout` estimates what each way of training needs
and picks the first that fits:

- in memory: XGBoost's quantised index (`QuantileDMatrix`) of the training and validation rows;
- external memory (CPU): the same index in pages on disk, of which a few are resident;
- N workers: the index split across N nodes (Kubeflow Trainer), each holding its share in memory.

The estimates come from the measured figures in docs/performance.md: the in-memory index holds
about 5.4 bytes a cell with missing values (a 4-byte bin id plus a column-major copy for the hist
updater), each row costs about 32 bytes more (gradient pair, prediction cache, label, row
partition), and a process with XGBoost, pyarrow and pandas loaded starts near 400 MiB. On a GPU
the ELLPACK index packs a cell in about 1.2 bytes. External memory keeps about a third of the
in-memory peak (measured at 2M rows). `BUDGET_SHARE` of the memory is planned for; the rest is
headroom for the allocator and for what the estimate leaves out.

XGBoost's GPU external memory needs batches already on the GPU (cupy); this step builds batches
on the host, so on cuda a table past the GPU's memory is planned as several GPU workers.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from ctloop.components.train.trainer import EXTERNAL_MEMORY_MIN_ROWS

BYTES_PER_CELL = 5.4
"""In-memory CPU index, per training cell (docs/performance.md)."""
GPU_BYTES_PER_CELL = 1.2
BYTES_PER_ROW = 32
PROCESS_BYTES = 400 * 2**20
EXTERNAL_MEMORY_SHARE = 1 / 3
"""External memory's peak as a share of the in-memory one (measured at 2M rows)."""
BUDGET_SHARE = 0.8

CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


@dataclass(frozen=True)
class NodeFacts:
    """What the node gives this process."""

    memory_bytes: int
    gpu_name: str = ""
    gpu_memory_bytes: int = 0
    """0 when no GPU is visible or its memory is unknown."""


@dataclass(frozen=True)
class TableFacts:
    """The training table as its Parquet footer describes it."""

    rows: int
    features: int
    validation_rows: int = 0


@dataclass(frozen=True)
class Layout:
    """How to train, why, and what it was estimated to need."""

    choice: str
    """"in_memory", "external_memory" or "workers"."""
    workers: int
    device: str
    estimate_bytes: int
    """What the chosen layout needs on one node (on a GPU: of the GPU's memory)."""
    budget_bytes: int
    reasons: list[str] = field(default_factory=list)

    @property
    def external_memory(self) -> bool:
        """Whether this (single-node) step pages its index to disk: chosen, or the leanest
        it can do where several workers were asked for (CPU only)."""
        return self.device == "cpu" and self.choice != "in_memory"

    def figures(self) -> dict[str, float]:
        return {
            "layout_workers": self.workers,
            "layout_estimate_bytes": self.estimate_bytes,
            "layout_budget_bytes": self.budget_bytes,
        }


def table_facts(train_path: str | Path, validation_path: str | Path, features: int) -> TableFacts:
    """Rows from both files' Parquet footers; `features`: the model's input columns."""
    return TableFacts(
        rows=pq.read_metadata(train_path).num_rows,
        features=features,
        validation_rows=pq.read_metadata(validation_path).num_rows,
    )


def node_facts(device: str) -> NodeFacts:
    """This container's memory limit (else the machine's memory) and, on cuda, the GPU."""
    memory = psutil.virtual_memory().total
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1) mean no limit
            memory = min(memory, int(text))
        break
    name, gpu_memory = _gpu() if device == "cuda" else ("", 0)
    return NodeFacts(memory_bytes=memory, gpu_name=name, gpu_memory_bytes=gpu_memory)


def _gpu() -> tuple[str, int]:
    """The first GPU's name and memory from nvidia-smi; ("", 0) when it cannot tell."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return "", 0
    try:
        listing = subprocess.run(
            [nvidia_smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        name, mebibytes = listing.stdout.splitlines()[0].rsplit(",", 1)
        return name.strip(), int(float(mebibytes)) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return "", 0


def plan_layout(table: TableFacts, node: NodeFacts, device: str) -> Layout:
    """The first layout that fits `node`: in memory, external memory (CPU), then N workers."""
    rows = table.rows + table.validation_rows
    host_budget = int(node.memory_bytes * BUDGET_SHARE) - PROCESS_BYTES
    in_memory = int(rows * (table.features * BYTES_PER_CELL + BYTES_PER_ROW))
    reasons = [
        f"{table.rows:,} training + {table.validation_rows:,} validation rows x "
        f"{table.features} features: ~{_gib(in_memory)} in memory; "
        f"{BUDGET_SHARE:.0%} of {_gib(node.memory_bytes)} less the process: {_gib(host_budget)}"
    ]
    if device == "cuda":
        return _plan_gpu(table, node, rows, reasons)
    if in_memory <= host_budget and table.rows < EXTERNAL_MEMORY_MIN_ROWS:
        reasons.append("fits in memory")
        return Layout("in_memory", 1, device, in_memory, host_budget, reasons)
    external = int(in_memory * EXTERNAL_MEMORY_SHARE)
    if external <= host_budget:
        reasons.append(
            f"from {EXTERNAL_MEMORY_MIN_ROWS:,} rows pages on disk cost ~1/3 of the memory at "
            "about the same speed"
            if in_memory <= host_budget
            else f"too large for memory; pages on disk need ~{_gib(external)}"
        )
        return Layout("external_memory", 1, device, external, host_budget, reasons)
    workers = math.ceil(in_memory / max(host_budget, 1))
    reasons.append(
        f"even pages on disk need ~{_gib(external)}: {workers} workers hold "
        f"~{_gib(in_memory // workers)} each in memory"
    )
    return Layout("workers", workers, device, in_memory // workers, host_budget, reasons)


def _plan_gpu(table: TableFacts, node: NodeFacts, rows: int, reasons: list[str]) -> Layout:
    needed = int(rows * (table.features * GPU_BYTES_PER_CELL + BYTES_PER_ROW))
    if not node.gpu_memory_bytes:
        reasons.append(f"GPU memory unknown (no nvidia-smi): planned in memory, ~{_gib(needed)}")
        return Layout("in_memory", 1, "cuda", needed, 0, reasons)
    budget = int(node.gpu_memory_bytes * BUDGET_SHARE)
    reasons.append(
        f"on {node.gpu_name or 'the GPU'} ({_gib(node.gpu_memory_bytes)}): ~{_gib(needed)} "
        f"of {_gib(budget)}"
    )
    if needed <= budget:
        reasons.append("fits in GPU memory")
        return Layout("in_memory", 1, "cuda", needed, budget, reasons)
    workers = math.ceil(needed / budget)
    reasons.append(
        f"past GPU memory (GPU external memory needs device batches, not built here): "
        f"{workers} GPU workers"
    )
    return Layout("workers", workers, "cuda", needed // workers, budget, reasons)


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB"
