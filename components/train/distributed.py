"""One worker of a training run spread over several processes, joined by XGBoost's collective.

Kubeflow Trainer's `xgboost-distributed` runtime starts one pod per node and gives each the
tracker's address: `DMLC_TRACKER_URI` (the DNS name of node 0's pod), `DMLC_TRACKER_PORT`,
`DMLC_TASK_ID` (the pod's Job completion index: the node's index) and `DMLC_NUM_WORKER` (nodes
times GPUs per node: one worker per GPU). Node 0 runs the tracker. A node with several GPUs is
handed one task id, so `--workers-per-node N` starts N worker processes there, each on its own
GPU with rank `task id * N + local rank`; the tracker orders workers by that rank
(`sortby="task"`), so the collective's ranks are the shard numbers.

Worker `r` of `w` trains on Parquet row groups r, r+w, r+2w, ... of the training table: row
groups are the unit a Parquet reader can fetch alone, so no worker reads another's rows. A
table with fewer row groups than workers fails at once, naming both counts (rewrite it with
smaller row groups). Every worker reads the whole validation table, so the validation metrics
XGBoost sums over the workers, and the early stopping they drive, are those of one process.

Each worker copies its shard (and the validation table) to local disk once, then trains through
`ctloop.components.train.trainer.train_booster`, the one-process path, unchanged: XGBoost reads
its input twice (sketch, then index), which would otherwise be two reads from the object
store, and the hyperparameters, the category codes (the reference profile's lists, the same on
every worker) and the in-memory or on-disk choice stay those of one process. The histograms are
summed over the workers, so the trees are those of one process up to the quantile sketch, which
is merged from per-worker sketches.

Rank 0 publishes the model folder (`write_model_folder`) and `training_result.json` (the
validation curves and row counts the train step logs to MLflow) to the output location, a
local folder or any URI pyarrow has a filesystem for; `read_published_model` brings them back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
from xgboost import collective
from xgboost.tracker import RabitTracker

from ctloop.components.contract.model_folder import MODEL_FILE, folder_booster, write_model_folder
from ctloop.components.contract.profile import ReferenceProfile, check_profile, feature_schema
from ctloop.components.train.hyperparameters import parse_hyperparameters, resolve_device
from ctloop.components.train.trainer import TrainingDataError, TrainResult, train_booster

TRACKER_URI, TRACKER_PORT = "DMLC_TRACKER_URI", "DMLC_TRACKER_PORT"
TASK_ID, NUM_WORKER = "DMLC_TASK_ID", "DMLC_NUM_WORKER"
"""The environment Kubeflow Trainer's XGBoost plugin gives every trainer pod."""
RESULT_FILE = "training_result.json"
"""Beside the model folder's files: what training saw (curves, rows, workers)."""


class ShardError(TrainingDataError):
    """A training table that cannot be split among the workers."""


class WorkerEnvironmentError(RuntimeError):
    """The process was not started the way the runtime starts a worker (DMLC_* unset or bad)."""


@dataclass(frozen=True)
class Placement:
    """Where one worker stands in the run: its rank, the number of workers, the tracker."""

    rank: int
    world_size: int
    tracker_host: str
    tracker_port: int
    local_rank: int = 0
    """The worker's index on its node (its GPU there)."""


def placement_from_environment(
    environ: Mapping[str, str], workers_per_node: int = 1, local_rank: int = 0
) -> Placement:
    """The worker's placement from the runtime's DMLC_* variables.

    Raises:
        WorkerEnvironmentError: a variable is missing or not what the runtime sets.
    """
    missing = [
        name for name in (TRACKER_URI, TRACKER_PORT, TASK_ID, NUM_WORKER) if not environ.get(name)
    ]
    if missing:
        raise WorkerEnvironmentError(
            f"{', '.join(missing)} not set: a distributed worker runs where Kubeflow Trainer's "
            "xgboost-distributed runtime (or a test standing in for it) sets the DMLC_* variables"
        )
    numbers = {}
    for name in (TRACKER_PORT, TASK_ID, NUM_WORKER):
        try:
            numbers[name] = int(environ[name])
        except ValueError:
            raise WorkerEnvironmentError(f"{name}={environ[name]!r} is not an integer") from None
    world_size = numbers[NUM_WORKER]
    rank = numbers[TASK_ID] * workers_per_node + local_rank
    if world_size % workers_per_node or not 0 <= rank < world_size:
        raise WorkerEnvironmentError(
            f"{TASK_ID}={numbers[TASK_ID]} with {workers_per_node} worker(s) per node does not fit "
            f"{NUM_WORKER}={world_size}"
        )
    return Placement(rank, world_size, environ[TRACKER_URI], numbers[TRACKER_PORT], local_rank)


def shard_row_groups(num_row_groups: int, rank: int, world_size: int, where: str = "") -> list[int]:
    """The row groups worker `rank` of `world_size` trains on: rank, rank + world_size, ...

    Raises:
        ShardError: fewer row groups than workers (some worker would have no rows).
    """
    if num_row_groups < world_size:
        raise ShardError(
            f"{where or 'the training table'}: has {num_row_groups} Parquet row group(s) for "
            f"{world_size} workers; each worker needs at least one (write it with smaller row "
            "groups, e.g. pyarrow.parquet.write_table(..., row_group_size=rows // workers))"
        )
    return list(range(rank, num_row_groups, world_size))


def _filesystem(uri: str) -> tuple[pa_fs.FileSystem, str]:
    return pa_fs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))


def _open_parquet(uri: str) -> pq.ParquetFile:
    filesystem, path = _filesystem(uri)
    try:
        return pq.ParquetFile(filesystem.open_input_file(path))
    except (OSError, ValueError) as error:  # pyarrow's errors are both
        raise TrainingDataError(f"{uri}: cannot be read as Parquet: {error}") from error


def stage_shard(uri: str, row_groups: Sequence[int], path: Path) -> Path:
    """Copy `row_groups` of the Parquet table at `uri` to a local file, one group at a time."""
    source = _open_parquet(uri)
    with pq.ParquetWriter(path, source.schema_arrow) as writer:
        for group in row_groups:
            writer.write_table(source.read_row_group(group))
    return path


def _stage_whole(uri: str, path: Path) -> str:
    """A local path for the file at `uri`: itself when local, else a copy under `path`."""
    filesystem, source = _filesystem(uri)
    if isinstance(filesystem, pa_fs.LocalFileSystem):
        return source
    pa_fs.copy_files(source, str(path), source_filesystem=filesystem)
    return str(path)


def read_profile(uri: str) -> ReferenceProfile:
    """The reference profile JSON at a local path or URI."""
    filesystem, path = _filesystem(uri)
    with filesystem.open_input_stream(path) as stream:
        return check_profile(json.loads(stream.read()))


def train_worker(
    placement: Placement,
    *,
    train_uri: str,
    validation_uri: str,
    profile_uri: str,
    hyperparameters: str,
    device: str,
    output_uri: str,
    start_tracker: bool = True,
) -> TrainResult:
    """Train this worker's shard in the collective; rank 0 publishes the model at `output_uri`.

    Hyperparameters and the profile are checked before any data is read or any tracker
    joined, so bad input fails on every worker alike.
    """
    profile = read_profile(profile_uri)
    params = parse_hyperparameters(hyperparameters, profile["task"])
    resolved = resolve_device(device)
    if resolved == "cuda":  # one GPU per worker process on a node
        resolved = f"cuda:{placement.local_rank}"
    table = _open_parquet(train_uri)
    groups = shard_row_groups(
        table.metadata.num_row_groups, placement.rank, placement.world_size, train_uri
    )
    tracker = None
    if start_tracker and placement.rank == 0:
        tracker = RabitTracker(
            placement.world_size, "0.0.0.0", placement.tracker_port, sortby="task"
        )
        tracker.start()
    with tempfile.TemporaryDirectory(prefix="ctloop-shard-") as folder:
        shard = stage_shard(train_uri, groups, Path(folder) / "train.parquet")
        validation = _stage_whole(validation_uri, Path(folder) / "validation.parquet")
        with collective.CommunicatorContext(
            dmlc_tracker_uri=placement.tracker_host,
            dmlc_tracker_port=placement.tracker_port,
            dmlc_task_id=str(placement.rank),
        ):
            result = train_booster(
                shard,
                validation,
                target=profile["target"],
                schema=feature_schema(profile),
                params=params,
                device=resolved,
            )
    if tracker is not None:
        tracker.wait_for()
    if placement.rank == 0:
        everyone = replace(result, train_rows=table.metadata.num_rows)
        publish(
            PublishedModel(everyone, placement.world_size, resolved.split(":")[0]),
            profile,
            output_uri,
        )
    return result


@dataclass(frozen=True)
class PublishedModel:
    """What a distributed run leaves at its output location."""

    result: TrainResult
    """As one process returns it: `train_rows` counts every worker's rows."""
    workers: int
    device: str
    """XGBoost's device type on the workers: "cpu" or "cuda"."""


def publish(published: PublishedModel, profile: ReferenceProfile, output_uri: str) -> None:
    """Write the model folder and `RESULT_FILE` to `output_uri`, the result last."""
    result = published.result
    summary = {
        "best_iteration": result.best_iteration,
        "evals_result": result.evals_result,
        "train_rows": result.train_rows,
        "validation_rows": result.validation_rows,
        "early_stopped": result.early_stopped,
        "workers": published.workers,
        "device": published.device,
    }
    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as folder:
        write_model_folder(result.booster, profile, folder)
        (Path(folder) / RESULT_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True))
        filesystem, target = _filesystem(output_uri)
        filesystem.create_dir(target, recursive=True)
        names = sorted(os.listdir(folder), key=lambda name: name == RESULT_FILE)
        for name in names:
            with filesystem.open_output_stream(f"{target}/{name}") as stream:
                stream.write((Path(folder) / name).read_bytes())


def read_published_model(output_uri: str, model_dir: str) -> PublishedModel:
    """Bring the model folder published at `output_uri` into `model_dir`.

    Raises:
        TrainingDataError: `output_uri` holds no complete published model.
    """
    filesystem, source = _filesystem(output_uri)
    listing = filesystem.get_file_info(pa_fs.FileSelector(source, allow_not_found=True))
    names = {Path(info.path).name for info in listing if info.type == pa_fs.FileType.File}
    if RESULT_FILE not in names or MODEL_FILE not in names:
        raise TrainingDataError(
            f"{output_uri}: holds no published model ({RESULT_FILE} and {MODEL_FILE}); it has "
            f"{sorted(names)}"
        )
    os.makedirs(model_dir, exist_ok=True)
    for name in sorted(names):
        with filesystem.open_input_stream(f"{source}/{name}") as stream:
            Path(model_dir, name).write_bytes(stream.read())
    summary = json.loads(Path(model_dir, RESULT_FILE).read_text())
    Path(model_dir, RESULT_FILE).unlink()  # the model folder holds the model's files only
    result = TrainResult(
        booster=folder_booster(model_dir),
        best_iteration=summary["best_iteration"],
        evals_result=summary["evals_result"],
        train_rows=summary["train_rows"],
        validation_rows=summary["validation_rows"],
        early_stopped=summary["early_stopped"],
    )
    return PublishedModel(result, summary["workers"], summary["device"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ctloop.components.train.distributed",
        description="One worker of a distributed XGBoost training run (Kubeflow Trainer).",
    )
    parser.add_argument("--train", required=True, help="Parquet training table (path or URI)")
    parser.add_argument("--validation", required=True, help="Parquet validation table")
    parser.add_argument("--profile", required=True, help="reference profile JSON")
    parser.add_argument("--output", required=True, help="folder (path or URI) rank 0 writes")
    parser.add_argument("--hyperparameters", default="{}", help="JSON object of overrides")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument(
        "--workers-per-node", type=int, default=1, help="worker processes here (GPUs per node)"
    )
    parser.add_argument("--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-tracker", action="store_true", help="rank 0 does not start the tracker"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers_per_node < 1:
        parser.error(f"--workers-per-node {args.workers_per_node} must be >= 1")
    if args.workers_per_node > 1 and args.local_rank is None:
        sys.exit(_run_local_workers(list(argv if argv is not None else sys.argv[1:]), args))
    try:
        placement = placement_from_environment(
            os.environ, args.workers_per_node, args.local_rank or 0
        )
        train_worker(
            placement,
            train_uri=args.train,
            validation_uri=args.validation,
            profile_uri=args.profile,
            hyperparameters=args.hyperparameters,
            device=args.device,
            output_uri=args.output,
            start_tracker=not args.no_tracker,
        )
    except ValueError as error:  # bad input: one line in the pod's log, exit 2
        parser.exit(2, f"{parser.prog}: {error}\n")
    except RuntimeError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")


def _run_local_workers(argv: list[str], args: argparse.Namespace) -> int:
    """One worker process per GPU of this node; the first failure stops the others (a
    collective waits for every worker, so the rest would otherwise wait for ever)."""
    command = [sys.executable, "-m", "ctloop.components.train.distributed", *argv]
    workers = [
        subprocess.Popen([*command, "--local-rank", str(local)])
        for local in range(args.workers_per_node)
    ]
    while True:
        codes = [worker.poll() for worker in workers]
        failed = [code for code in codes if code]
        if failed or all(code == 0 for code in codes):
            for worker in workers:
                worker.kill()
                worker.wait()
            return failed[0] if failed else 0
        time.sleep(0.2)


if __name__ == "__main__":
    main()
