"""Several processes opening one new SQLite MLflow store at once (two `ctloop` commands, two
kfp.local steps) all succeed, and the store is whole afterwards.

MLflow creates a SQLite store's tables and runs its schema migrations on first use; two
processes doing that at once broke each other (`table ... already exists`, `duplicate column
name`). The children are forked after the imports (MLflow's SQL stores and alembic's migration
runner included, so they spend their time on the store) and released together by a barrier, so
their first MLflow calls meet on the empty file.
"""

import multiprocessing
import traceback

import alembic.command  # noqa: F401
import mlflow
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store
import pytest

from ctloop.components.registry import mlflow_registry

PROCESSES = 4


def _train_in_child(tracking_uri, artifacts, index, barrier, failures):
    try:
        barrier.wait(timeout=30)
        with mlflow_registry.training_run(
            tracking_uri,
            f"concurrent-{index}",
            run_name=f"run-{index}",
            tags={"ctloop.test": "concurrent"},
            params={"index": index},
            artifact_location=artifacts,
        ):
            mlflow_registry.log_metrics({"rows": float(index)})
    except BaseException:
        failures.put(f"process {index}:\n{traceback.format_exc()}")
        raise SystemExit(1) from None


@pytest.fixture
def fresh_store(tmp_path):
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "mlartifacts").as_uri()
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def test_processes_creating_a_new_sqlite_store_at_once_all_succeed(fresh_store):
    tracking_uri, artifacts = fresh_store
    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(PROCESSES), context.Queue()
    children = [
        context.Process(
            target=_train_in_child, args=(tracking_uri, artifacts, index, barrier, failures)
        )
        for index in range(PROCESSES)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        if child.is_alive():  # stuck: its exit code stays None, and the test fails
            child.kill()
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert [child.exitcode for child in children] == [0] * PROCESSES, "\n".join(errors)

    mlflow_client = mlflow_registry.client(tracking_uri)
    for index in range(PROCESSES):
        experiment = mlflow_client.get_experiment_by_name(f"concurrent-{index}")
        (run,) = mlflow_client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.params == {"index": str(index)}
        assert run.data.metrics == {"rows": float(index)}
    assert mlflow_client.search_registered_models() == []  # the registry's tables exist too
