"""Peak memory and time of ctloop's streamed training against the naive pandas path.

Run: `.venv/bin/python tests/benchmarks/bench_training.py [--rows 2000000] [--rounds 50]
[--nthread 0]`.

Writes synthetic train/validation/test Parquet files (26 float32 features with ~2% missing,
4 categorical string features with 10 levels, a binary label drawn from a known logistic
model) to a temporary folder, then trains in separate child processes so each peak RSS is
its own:

- ctloop-disk: `train_booster(external_memory=True)`, streaming Parquet record batches into
  ExtMemQuantileDMatrix, whose quantised pages are cached in a temporary folder on disk
  (what `external_memory="auto"` picks on CPU from 1M training rows);
- ctloop-mem: `train_booster(external_memory=False)`, the same batches into the in-memory
  QuantileDMatrix (the path for small files and for device="cuda");
- ctloop-ckpt: ctloop-mem checkpointing every 50 rounds to a temporary folder (what a train
  step with `checkpoint_uri` does): what resumable segments cost;
- ctloop-2workers: two worker processes joined by XGBoost's tracker, each training on its half
  of the train file's row groups (copied to a file of its own first, as a TrainJob worker
  stages its shard; not timed) through the path ctloop-mem takes: the TrainJob's layout on
  one host. Its figures are rank 0's, its peak RSS the larger worker's; both workers share
  the host's cores (each runs --nthread threads), so it shows what the collective costs, not
  what a second node gains;
- naive:    `pd.read_parquet` -> `xgb.DMatrix(enable_categorical=True)` -> `xgb.train`;
- baseline: only imports xgboost, pandas and pyarrow (the floor both paths pay).

Both paths use the same hyperparameters and early stopping on the validation file; AUC is
measured on the held-out test file. Goal: ctloop-disk's peak RSS <= 1/3 of naive's at an AUC
within 0.002. Nothing here is asserted: it prints figures.

Where the time goes, per path: `build s` is building the training and validation matrices (up to
the first boosting round), `convert s` the part of it spent turning Parquet into model input
(decoding and ctloop's `to_frame` for the streamed paths, `read_parquet` and the categorical cast
for naive; the rest of the build is XGBoost's quantile sketch and index), `boost s` the rest.
Each is given as wall time and as CPU time of the process (all its threads): on a shared, busy
host the CPU figures are the ones to compare. (One file past 350 lines: each child it starts
runs this same script, so the paths and the report stay together.)

Only CPU paths are here, so it runs anywhere; none needs a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUMERIC = [f"x{i:02d}" for i in range(26)]
CATEGORICAL = [f"c{i}" for i in range(4)]
LEVELS = {name: [f"{name}_level{j}" for j in range(10)] for name in CATEGORICAL}
TARGET = "label"
CHUNK_ROWS = 250_000
WORKERS = 2
"""Workers of the ctloop-2workers path: the train file has at least this many row groups."""


def write_split(path: Path, rows: int, seed: int, group_rows: int = CHUNK_ROWS) -> None:
    """Write `rows` synthetic rows, CHUNK_ROWS at a time (memory stays one chunk), in row
    groups of at most `group_rows` (the rows drawn do not depend on it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = np.random.default_rng(12345)  # the same planted model for every split
    weights = model.normal(scale=0.6, size=len(NUMERIC)) * (np.arange(len(NUMERIC)) < 12)
    effects = {name: model.normal(scale=0.8, size=10) for name in CATEGORICAL}
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        x = rng.normal(size=(n, len(NUMERIC))).astype(np.float32)
        logit = np.nan_to_num(x) @ weights - 0.5
        columns = {}
        for name in CATEGORICAL:
            codes = rng.integers(0, 10, size=n)
            logit += effects[name][codes]
            values = np.asarray(LEVELS[name], dtype=object)[codes]
            values[rng.random(n) < 0.01] = None
            columns[name] = pa.array(values, type=pa.string())
        x[rng.random(x.shape) < 0.02] = np.nan
        for i, name in enumerate(NUMERIC):
            columns[name] = pa.array(x[:, i])
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        columns[TARGET] = pa.array(label)
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=group_rows)
    writer.close()


def _params(rounds: int, depth: int) -> dict:
    from ctloop.components.train.hyperparameters import parse_hyperparameters

    nthread = int(os.environ.get("BENCH_NTHREAD", "0"))  # 0: every core
    return parse_hyperparameters(
        json.dumps({"num_boost_round": rounds, "max_depth": depth, "nthread": nthread}), "binary"
    )


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(started: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _now()
    return wall - started[0], cpu - started[1]


class _Clock:
    """(wall, CPU) seconds spent inside wrapped generators, and when boosting began."""

    def __init__(self):
        self.convert = (0.0, 0.0)
        self.boosting_at: tuple[float, float] | None = None

    def timed(self, generator_function):
        def wrapped(*args, **kwargs):
            items = generator_function(*args, **kwargs)
            while True:
                started = _now()
                item = next(items, None)
                spent = _since(started)
                self.convert = (self.convert[0] + spent[0], self.convert[1] + spent[1])
                if item is None:
                    return
                yield item

        return wrapped

    def callback(self):
        import xgboost as xgb

        clock = self

        class FirstRound(xgb.callback.TrainingCallback):
            def before_training(self, model):
                if clock.boosting_at is None:
                    clock.boosting_at = _now()
                return model

        return FirstRound()


def child_ctloop(
    folder: Path, rounds: int, depth: int, *, external_memory: bool, checkpoints: bool = False
) -> dict:
    from ctloop.components.train.checkpoints import CheckpointStore

    store = CheckpointStore(str(folder / "checkpoints")) if checkpoints else None
    figures = _timed_training(
        folder, folder / "train.parquet", rounds, depth, external_memory, store
    )
    if store:
        store.clear()
    return figures


def _timed_training(
    folder: Path, train: Path, rounds: int, depth: int, external_memory: bool, store=None
) -> dict:
    """`train_booster` on `train`, timed (build, conversion, boosting), and its test AUC."""
    import numpy as np

    from ctloop.components.contract.model_input import FeatureSchema, predict_scores
    from ctloop.components.evaluate.metrics import roc_auc
    from ctloop.components.train import trainer

    schema = FeatureSchema(features=NUMERIC + CATEGORICAL, categories=dict(LEVELS))
    clock = _Clock()
    trainer.iter_frames = clock.timed(trainer.iter_frames)  # what the batches spend in ctloop
    started = _now()
    result = trainer.train_booster(
        train,
        folder / "validation.parquet",
        target=TARGET,
        schema=schema,
        params=_params(rounds, depth),
        external_memory=external_memory,
        callbacks=[clock.callback()],
        checkpoints=store,
    )
    wall, cpu = _since(started)
    labels, scores = [], []
    for frame, extra in trainer.iter_frames(folder / "test.parquet", schema, [TARGET]):
        scores.append(predict_scores(result.booster, frame))
        labels.append(extra.column(TARGET).to_numpy())
    auc = roc_auc(np.concatenate(labels), np.concatenate(scores))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "build_s": clock.boosting_at[0] - started[0],
        "build_cpu_s": clock.boosting_at[1] - started[1],
        "convert_s": clock.convert[0],
        "convert_cpu_s": clock.convert[1],
        "auc": auc,
        "best_iteration": result.best_iteration,
    }


def child_workers(folder: Path, rounds: int, depth: int) -> dict:
    """Start the tracker and WORKERS worker children; rank 0's figures, the larger peak RSS."""
    from xgboost.tracker import RabitTracker

    tracker = RabitTracker(WORKERS, "127.0.0.1", sortby="task")
    tracker.start()
    port = tracker.worker_args()["dmlc_tracker_port"]
    common = ["--dir", str(folder), "--rounds", str(rounds), "--depth", str(depth)]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", "ctloop-worker", *common]
            + ["--rank", str(rank), "--tracker-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORKERS)
    ]
    outputs = [worker.communicate() for worker in workers]
    failed = [err for worker, (_, err) in zip(workers, outputs, strict=True) if worker.returncode]
    if failed:
        raise RuntimeError(f"a worker failed:\n{failed[0]}")
    tracker.wait_for()
    figures = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    hwm = [row["vm_hwm_mb"] for row in figures if row["vm_hwm_mb"] is not None]
    return {
        **figures[0],
        "peak_rss_mb": max(row["peak_rss_mb"] for row in figures),
        "vm_hwm_mb": max(hwm) if hwm else None,
    }


def child_worker(folder: Path, rounds: int, depth: int, rank: int, port: int) -> dict:
    """One worker of ctloop-2workers: its shard staged, then trained in the collective."""
    from xgboost import collective

    from ctloop.components.train.distributed import shard_row_groups, stage_shard

    train = folder / "train.parquet"
    groups = shard_row_groups(_row_groups(train), rank, WORKERS, str(train))
    shard = stage_shard(str(train), groups, folder / f"shard-{rank}.parquet")
    with collective.CommunicatorContext(
        dmlc_tracker_uri="127.0.0.1", dmlc_tracker_port=port, dmlc_task_id=str(rank)
    ):
        return _timed_training(folder, shard, rounds, depth, external_memory=False)


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups


def child_naive(folder: Path, rounds: int, depth: int) -> dict:
    import pandas as pd
    import xgboost as xgb

    from ctloop.components.evaluate.metrics import roc_auc

    convert = [0.0, 0.0]

    def matrix(name: str) -> xgb.DMatrix:
        converting = _now()
        frame = pd.read_parquet(folder / name)
        for column in CATEGORICAL:
            frame[column] = frame[column].astype(pd.CategoricalDtype(LEVELS[column]))
        spent = _since(converting)
        convert[0] += spent[0]
        convert[1] += spent[1]
        return xgb.DMatrix(
            frame[NUMERIC + CATEGORICAL], label=frame[TARGET], enable_categorical=True
        )

    params = _params(rounds, depth)
    loop = {k: params.pop(k) for k in ("num_boost_round", "early_stopping_rounds")}
    started = _now()
    dtrain = matrix("train.parquet")
    dvalidation = matrix("validation.parquet")
    build = _since(started)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=loop["num_boost_round"],
        evals=[(dvalidation, "validation")],
        early_stopping_rounds=loop["early_stopping_rounds"],
        verbose_eval=False,
    )
    wall, cpu = _since(started)
    dtest = matrix("test.parquet")
    scores = booster.predict(dtest, iteration_range=(0, booster.best_iteration + 1))
    auc = roc_auc(dtest.get_label(), scores)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "build_s": build[0],
        "build_cpu_s": build[1],
        "convert_s": convert[0],
        "convert_cpu_s": convert[1],
        "auc": auc,
        "best_iteration": booster.best_iteration,
    }


def child_baseline(folder: Path, rounds: int, depth: int) -> dict:
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import xgboost  # noqa: F401

    times = dict.fromkeys(("wall_s", "cpu_s", "build_s", "build_cpu_s", "convert_s"), 0.0)
    return {**times, "convert_cpu_s": 0.0, "auc": None, "best_iteration": None}


def _vm_hwm_mb() -> float | None:
    """The kernel's peak RSS of this process image, a cross-check of ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


CHILDREN = {
    "ctloop-disk": functools.partial(child_ctloop, external_memory=True),
    "ctloop-mem": functools.partial(child_ctloop, external_memory=False),
    "ctloop-ckpt": functools.partial(child_ctloop, external_memory=False, checkpoints=True),
    "ctloop-2workers": child_workers,
    "naive": child_naive,
    "baseline": child_baseline,
}


def run_child(path: str, folder: Path, rounds: int, depth: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        path,
        "--dir",
        str(folder),
        "--rounds",
        str(rounds),
        "--depth",
        str(depth),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"child {path} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument(
        "--nthread", type=int, default=0, help="XGBoost threads (0: every core; 1 on a busy host)"
    )
    parser.add_argument(
        "--child", choices=[*sorted(CHILDREN), "ctloop-worker"], help=argparse.SUPPRESS
    )
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tracker-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.write:
        held_out = max(args.rows // 10, 1000)
        groups = min(CHUNK_ROWS, -(-args.rows // WORKERS))  # a row group for every worker
        write_split(args.write / "train.parquet", args.rows, seed=1, group_rows=groups)
        write_split(args.write / "validation.parquet", held_out, seed=2)
        write_split(args.write / "test.parquet", held_out, seed=3)
        return
    os.environ["BENCH_NTHREAD"] = str(args.nthread)  # the children inherit it
    if args.child == "ctloop-worker":
        figures = child_worker(args.dir, args.rounds, args.depth, args.rank, args.tracker_port)
    elif args.child:
        figures = CHILDREN[args.child](args.dir, args.rounds, args.depth)
    if args.child:
        figures["path"] = args.child
        figures.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        figures.setdefault("vm_hwm_mb", _vm_hwm_mb())
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="ctloop-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        held_out = max(args.rows // 10, 1000)
        # Written by a child: Linux carries a parent's peak RSS into ru_maxrss of the children
        # it starts, so this process must stay small for the children's figures to be theirs.
        writer = [sys.executable, __file__, "--write", str(folder), "--rows", str(args.rows)]
        subprocess.run(writer, check=True)
        size_mb = (folder / "train.parquet").stat().st_size / 2**20
        print(
            f"data: {args.rows} train rows ({size_mb:.0f} MB Parquet), {held_out} validation "
            f"and test rows, {len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical features; "
            f"written in {time.perf_counter() - started:.1f} s; rounds={args.rounds} "
            f"depth={args.depth}"
        )
        results = {
            path: run_child(path, folder, args.rounds, args.depth)
            for path in (
                "baseline",
                "ctloop-disk",
                "ctloop-mem",
                "ctloop-ckpt",
                "ctloop-2workers",
                "naive",
            )
        }

    print(
        f"{'path':<16}{'wall s':>8}{'CPU s':>8}{'build':>7}{'CPU':>7}{'convert':>9}{'CPU':>7}"
        f"{'boost':>7}{'CPU':>7}{'peak RSS MB':>13}{'VmHWM MB':>10}{'test AUC':>10}{'best':>6}"
    )
    for path, row in results.items():
        auc = "—" if row["auc"] is None else f"{row['auc']:.4f}"
        best = "—" if row["best_iteration"] is None else str(row["best_iteration"])
        hwm = "—" if row["vm_hwm_mb"] is None else f"{row['vm_hwm_mb']:.0f}"
        print(
            f"{path:<16}{row['wall_s']:>8.1f}{row['cpu_s']:>8.1f}{row['build_s']:>7.1f}"
            f"{row['build_cpu_s']:>7.1f}{row['convert_s']:>9.1f}{row['convert_cpu_s']:>7.1f}"
            f"{row['wall_s'] - row['build_s']:>7.1f}{row['cpu_s'] - row['build_cpu_s']:>7.1f}"
            f"{row['peak_rss_mb']:>13.0f}{hwm:>10}{auc:>10}{best:>6}"
        )
    for path, row in results.items():
        if row["cpu_s"]:
            print(
                f"{path}: of the CPU time, matrix build {row['build_cpu_s'] / row['cpu_s']:.0%}, "
                f"conversion {row['convert_cpu_s'] / row['cpu_s']:.0%} (of the build: "
                f"{row['convert_cpu_s'] / row['build_cpu_s']:.0%}); wall: build "
                f"{row['build_s'] / row['wall_s']:.0%}, "
                f"conversion {row['convert_s'] / row['wall_s']:.0%}"
            )
    naive, floor = results["naive"], results["baseline"]
    for path in ("ctloop-disk", "ctloop-mem", "ctloop-ckpt", "ctloop-2workers"):
        ours = results[path]
        ratio = ours["peak_rss_mb"] / naive["peak_rss_mb"]
        above_floor = (ours["peak_rss_mb"] - floor["peak_rss_mb"]) / (
            naive["peak_rss_mb"] - floor["peak_rss_mb"]
        )
        print(
            f"{path}: peak RSS / naive {ratio:.2f} (above the import baseline: "
            f"{above_floor:.2f}), wall / naive {ours['wall_s'] / naive['wall_s']:.2f}, "
            f"test AUC - naive {ours['auc'] - naive['auc']:+.4f}"
        )
    print("goal: ctloop-disk peak RSS / naive <= 0.33 with |AUC difference| <= 0.002")


if __name__ == "__main__":
    main()
