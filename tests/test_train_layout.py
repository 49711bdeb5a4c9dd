"""The layout planner picks in memory, external memory or workers from table and node facts."""

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import profile_table
from ctloop.components.train import layout as layout_module
from ctloop.components.train.checkpoints import (
    Checkpoint,
    CheckpointStore,
    training_fingerprint,
)
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.layout import (
    NodeFacts,
    TableFacts,
    node_facts,
    plan_layout,
    table_facts,
)
from ctloop.components.train.trainer import train_booster
from ctloop.components.train.training_run import run_training

GIB = 2**30


def test_a_table_that_fits_trains_in_memory():
    plan = plan_layout(TableFacts(100_000, 30, 20_000), NodeFacts(16 * GIB), "cpu")
    assert (plan.choice, plan.workers, plan.external_memory) == ("in_memory", 1, False)
    assert plan.estimate_bytes == 120_000 * (30 * 5.4 + 32) // 1
    assert "fits in memory" in plan.reasons[-1]


def test_a_small_memory_limit_pages_the_index_to_disk():
    plan = plan_layout(TableFacts(900_000, 30, 100_000), NodeFacts(600 * 2**20), "cpu")
    assert (plan.choice, plan.workers, plan.external_memory) == ("external_memory", 1, True)
    assert plan.estimate_bytes <= plan.budget_bytes
    assert "too large for memory" in plan.reasons[-1]


def test_a_million_rows_page_to_disk_even_where_they_fit():
    plan = plan_layout(TableFacts(1_000_000, 30, 100_000), NodeFacts(64 * GIB), "cpu")
    assert plan.choice == "external_memory"
    assert "1/3 of the memory" in plan.reasons[-1]


def test_a_huge_table_needs_workers():
    plan = plan_layout(TableFacts(1_000_000_000, 30, 10_000_000), NodeFacts(64 * GIB), "cpu")
    assert plan.choice == "workers"
    assert plan.workers == 4
    assert plan.estimate_bytes <= plan.budget_bytes
    assert plan.external_memory  # the leanest a single node can do meanwhile
    assert "4 workers" in plan.reasons[-1]


def test_gpu_memory_decides_on_cuda():
    h200 = NodeFacts(128 * GIB, "NVIDIA H200", 141 * GIB)
    fits = plan_layout(TableFacts(10_000_000, 30, 1_000_000), h200, "cuda")
    assert (fits.choice, fits.device, fits.external_memory) == ("in_memory", "cuda", False)
    assert "NVIDIA H200" in fits.reasons[-2]
    past = plan_layout(
        TableFacts(5_000_000_000, 30, 0), NodeFacts(128 * GIB, "L4", 24 * GIB), "cuda"
    )
    # 5e9 rows x (30 x 1.2 + 32) bytes = 340 GB over 80 % of 24 GiB = 19.2 GiB
    assert past.choice == "workers" and past.workers == 17
    assert "GPU workers" in past.reasons[-1]


def test_unknown_gpu_memory_is_said():
    plan = plan_layout(TableFacts(1000, 5, 100), NodeFacts(8 * GIB), "cuda")
    assert plan.choice == "in_memory"
    assert "GPU memory unknown" in plan.reasons[-1]


@pytest.mark.parametrize(("limit", "expected"), [("1073741824\n", GIB), ("max\n", None)])
def test_node_memory_is_the_cgroup_limit_when_there_is_one(tmp_path, monkeypatch, limit, expected):
    (tmp_path / "memory.max").write_text(limit)
    monkeypatch.setattr(layout_module, "CGROUP_LIMITS", (tmp_path / "memory.max",))
    facts = node_facts("cpu")
    assert facts.memory_bytes == (expected or layout_module.psutil.virtual_memory().total)
    assert (facts.gpu_name, facts.gpu_memory_bytes) == ("", 0)


def _churn_splits(folder, rows=1200):
    rng = np.random.default_rng(3)
    x = rng.normal(size=rows)
    plan = rng.choice(["basic", "pro"], size=rows)
    churn = (rng.random(rows) < 1 / (1 + np.exp(-2 * x))).astype("int64")
    table = pa.table({"x": x, "plan": plan, "churn": churn})
    pq.write_table(table.slice(0, rows - 300), folder / "train.parquet")
    pq.write_table(table.slice(rows - 300), folder / "validation.parquet")
    return table


def test_table_facts_come_from_the_parquet_footers(tmp_path):
    _churn_splits(tmp_path)
    facts = table_facts(tmp_path / "train.parquet", tmp_path / "validation.parquet", 2)
    assert facts == TableFacts(rows=900, features=2, validation_rows=300)


def test_run_training_records_the_layout_and_resumes_from_its_checkpoint(tmp_path):
    profile = profile_table(_churn_splits(tmp_path), "churn")
    train, validation = str(tmp_path / "train.parquet"), str(tmp_path / "validation.parquet")
    hyperparameters = '{"num_boost_round": 120, "early_stopping_rounds": null, "nthread": 1}'
    params = parse_hyperparameters(hyperparameters, "binary")
    # A step of run "run-7" that was killed after its checkpoint at round 100.
    key = training_fingerprint(train, validation, params, "cpu")
    store = CheckpointStore(str(tmp_path / "checkpoints" / "run-7" / key))
    crashed = train_booster(
        train,
        validation,
        target="churn",
        schema=feature_schema(profile),
        params={**params, "num_boost_round": 100},
    )
    store.save(Checkpoint(100, bytes(crashed.booster.save_raw("ubj")), crashed.evals_result))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_training(
        train_path=train,
        validation_path=validation,
        profile=profile,
        hyperparameters=hyperparameters,
        device="cpu",
        tracking_uri=tracking_uri,
        experiment="layout",
        model_dir=str(tmp_path / "model"),
        artifact_location=(tmp_path / "mlartifacts").as_uri(),
        run_tags={"kfp.run_id": "run-7"},
        checkpoint_uri=str(tmp_path / "checkpoints"),
    )
    assert outcome.layout.choice == "in_memory"
    assert outcome.figures["resumed_rounds"] == 100
    assert outcome.figures["train_seconds"] > 0
    assert not (tmp_path / "checkpoints" / "run-7" / key).exists()
    run = mlflow.MlflowClient(tracking_uri).get_run(outcome.run_id)
    assert run.data.params["layout"] == "in_memory"
    assert "900 training + 300 validation rows x 2 features" in run.data.params["layout_reasons"]
    for name in ("layout_estimate_bytes", "layout_budget_bytes", "train_seconds", "peak_rss_bytes"):
        assert run.data.metrics[name] == outcome.figures[name]
    assert run.data.metrics["resumed_rounds"] == 100
