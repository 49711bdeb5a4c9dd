"""Distributed training with no cluster: worker processes joined by XGBoost's own tracker.

The workers are the real entry (`python -m ctloop.components.train.distributed`), started with
the environment Kubeflow Trainer's xgboost-distributed runtime gives each pod (DMLC_*). Their
model must score a test table as well as one process trained on all rows does.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from xgboost.tracker import RabitTracker

from ctloop.components.contract.model_folder import load_model
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.evaluate.metrics import roc_auc
from ctloop.components.train import distributed
from ctloop.components.train.distributed import (
    Placement,
    ShardError,
    WorkerEnvironmentError,
    placement_from_environment,
    read_published_model,
    shard_row_groups,
)
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

CATEGORIES = ["month", "one_year", "two_year"]
PROFILE = {
    "target": "churn",
    "task": "binary",
    "feature_order": ["tenure", "contract", "charges"],
    "features": {
        "tenure": {"kind": "numeric"},
        "contract": {"kind": "categorical", "categories": dict.fromkeys(CATEGORIES, 1 / 3)},
        "charges": {"kind": "numeric"},
    },
}
HYPERPARAMETERS = json.dumps(
    {
        "num_boost_round": 40,
        "early_stopping_rounds": None,
        "max_depth": 4,
        "eta": 0.2,
        "subsample": 1.0,
    }
)
ENTRY = [sys.executable, "-m", "ctloop.components.train.distributed"]


def write_table(path, rows, seed, row_groups):
    """Churn driven by tenure, charges and contract; ~5 % of each feature missing."""
    rng = np.random.default_rng(seed)
    tenure = rng.normal(size=rows)
    charges = rng.uniform(20, 120, size=rows)
    contract = rng.choice(CATEGORIES, size=rows).astype(object)
    logit = -1.5 * tenure + 0.02 * (charges - 70) + np.where(contract == "month", 1.0, -1.0)
    churn = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    tenure[rng.random(rows) < 0.05] = np.nan
    contract[rng.random(rows) < 0.05] = None
    table = pa.table({"tenure": tenure, "contract": pa.array(contract, pa.string()),
                      "charges": charges, "churn": churn})  # fmt: skip
    pq.write_table(table, path, row_group_size=-(-rows // row_groups))
    return str(path)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    profile = folder / "reference_profile.json"
    profile.write_text(json.dumps(PROFILE))
    return {
        "train": write_table(folder / "train.parquet", 6000, seed=1, row_groups=6),
        "validation": write_table(folder / "validation.parquet", 1500, seed=2, row_groups=1),
        "test": write_table(folder / "test.parquet", 3000, seed=3, row_groups=1),
        "profile": str(profile),
    }


def auc_on(model_dir, test_path):
    model = load_model(model_dir)
    table = pq.read_table(test_path)
    scores = predict_scores(model.booster, to_frame(table, model.schema))
    return roc_auc(table.column("churn").to_numpy(), scores)


@pytest.fixture(scope="module")
def one_process_auc(tables, tmp_path_factory):
    """The same hyperparameters and seed, one process, all rows."""
    from ctloop.components.contract.model_folder import write_model_folder
    from ctloop.components.contract.profile import feature_schema

    result = train_booster(
        tables["train"],
        tables["validation"],
        target="churn",
        schema=feature_schema(PROFILE),
        params=parse_hyperparameters(HYPERPARAMETERS, "binary"),
    )
    folder = tmp_path_factory.mktemp("one-process")
    write_model_folder(result.booster, PROFILE, str(folder))
    return auc_on(folder, tables["test"])


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_command(tables, output, *extra, train=None):
    return [
        *ENTRY,
        f"--train={train or tables['train']}",
        f"--validation={tables['validation']}",
        f"--profile={tables['profile']}",
        f"--output={output}",
        f"--hyperparameters={HYPERPARAMETERS}",
        "--device=cpu",
        *extra,
    ]


def runtime_environment(port, task_id, workers):
    """What the runtime sets in a trainer pod (the tracker is on loopback here)."""
    return {
        **os.environ,
        "DMLC_TRACKER_URI": "127.0.0.1",
        "DMLC_TRACKER_PORT": str(port),
        "DMLC_TASK_ID": str(task_id),
        "DMLC_NUM_WORKER": str(workers),
        "OMP_NUM_THREADS": "1",
    }


def test_two_workers_joined_by_a_tracker_match_one_process(tables, one_process_auc, tmp_path):
    port = free_port()
    tracker = RabitTracker(2, "127.0.0.1", port, sortby="task", timeout=120)
    tracker.start()
    output = tmp_path / "published"
    workers = [
        subprocess.Popen(
            worker_command(tables, output, "--no-tracker"),
            env=runtime_environment(port, rank, 2),
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errors = [worker.communicate(timeout=180)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], errors
    tracker.wait_for(timeout=60)

    model_dir = tmp_path / "model"
    published = read_published_model(str(output), str(model_dir))
    result = published.result
    assert (published.workers, published.device) == (2, "cpu")
    assert result.train_rows == 6000 and result.validation_rows == 1500
    assert result.booster.num_boosted_rounds() == 40
    assert sorted(os.listdir(model_dir)) == ["model.json", "reference_profile.json"]
    assert auc_on(model_dir, tables["test"]) == pytest.approx(one_process_auc, abs=0.002)


def test_a_node_with_two_gpus_runs_two_workers_and_rank_0_runs_the_tracker(
    tables, tmp_path, monkeypatch
):
    """One pod (task id 0) of a run with two workers per node: the entry starts both worker
    processes, and the first starts the tracker the runtime's DMLC_TRACKER_URI names."""
    for name, value in runtime_environment(free_port(), 0, 2).items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "published"
    with pytest.raises(SystemExit) as exit_:
        distributed.main(worker_command(tables, output, "--workers-per-node=2")[len(ENTRY) :])
    assert exit_.value.code == 0
    published = read_published_model(str(output), str(tmp_path / "model"))
    assert published.workers == 2 and published.result.train_rows == 6000


def test_fewer_row_groups_than_workers_fails_naming_both(tables, tmp_path, monkeypatch, capsys):
    for name, value in runtime_environment(free_port(), 1, 2).items():
        monkeypatch.setenv(name, value)
    command = worker_command(tables, tmp_path / "out", "--no-tracker", train=tables["validation"])
    with pytest.raises(SystemExit) as exit_:
        distributed.main(command[len(ENTRY) :])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "python -m ctloop.components.train.distributed: "
        f"{tables['validation']}: has 1 Parquet row group(s) for 2 workers; each worker needs at "
        "least one (write it with smaller row groups, e.g. "
        "pyarrow.parquet.write_table(..., row_group_size=rows // workers))\n"
    )
    assert not (tmp_path / "out").exists()


def test_rank_r_of_w_takes_every_wth_row_group_from_r():
    assert [shard_row_groups(7, rank, 3) for rank in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ShardError, match="has 2 Parquet row group"):
        shard_row_groups(2, 0, 3)


def test_placement_follows_the_runtime_environment():
    environ = {"DMLC_TRACKER_URI": "job-node-0-0.job", "DMLC_TRACKER_PORT": "29500",
               "DMLC_TASK_ID": "1", "DMLC_NUM_WORKER": "4"}  # fmt: skip
    assert placement_from_environment(environ, workers_per_node=2, local_rank=1) == Placement(
        rank=3, world_size=4, tracker_host="job-node-0-0.job", tracker_port=29500, local_rank=1
    )
    with pytest.raises(WorkerEnvironmentError, match="DMLC_TASK_ID=1 with 1 worker"):
        placement_from_environment({**environ, "DMLC_NUM_WORKER": "1"})
    with pytest.raises(WorkerEnvironmentError, match="^DMLC_TRACKER_URI not set"):
        placement_from_environment({**environ, "DMLC_TRACKER_URI": ""})


def test_no_published_model_is_named(tmp_path):
    with pytest.raises(distributed.TrainingDataError, match="holds no published model"):
        read_published_model(str(tmp_path), str(tmp_path / "model"))
