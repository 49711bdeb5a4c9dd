"""Shared fixtures: the real Telco churn table, one local training loop per session, the
compiled pipelines, and a KFP API stand-in.

The loop runs the real `training` pipeline through kfp.local twice on the same work
directory (first model, then a challenger), exactly as `make demo` does, so the slower
end-to-end assertions share one pair of runs.

`make test` spreads the tests over pytest-xdist workers (`--dist loadgroup`); the hook below
keeps each module, and every test of an expensive session fixture, on one worker.
"""

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from ctloop.pipelines.demo_data import export_telco_churn

# The Feast tests need Feast, whose pins clash with the main environment's: test_feast_environment
# runs them inside .venv-feast. Collected here they would only be reported skipped.
collect_ignore = [] if importlib.util.find_spec("feast") else ["test_feast_store.py"]

CHALLENGER_HYPERPARAMETERS = '{"max_depth": 3, "eta": 0.05, "num_boost_round": 800}'

# Session fixtures that cost a minute or more to build (two training runs; a kube-apiserver
# with etcd): every worker that ran one of their tests would build its own.
ONE_WORKER_FIXTURES = ("training_loop", "kube_apiserver")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`, give each test an `xdist_group`: the first of
    ONE_WORKER_FIXTURES it uses, else its module (module fixtures, such as a server started
    once for a module, are then set up once). Workers take the groups in collection order
    (`--no-loadscope-reorder`), so the longest go first and short ones even out the end: the
    fixture groups, then groups holding `e2e` tests (a whole local pipeline run each), then
    the others by their number of tests."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            shared = [name for name in ONE_WORKER_FIXTURES if name in item.fixturenames]
            group = shared[0] if shared else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
    groups = [item.get_closest_marker("xdist_group").args[0] for item in items]
    sizes = Counter(groups)
    e2e = {
        group for item, group in zip(items, groups, strict=True) if item.get_closest_marker("e2e")
    }
    order = {
        id(item): (group not in ONE_WORKER_FIXTURES, group not in e2e, -sizes[group], group)
        for item, group in zip(items, groups, strict=True)
    }
    items.sort(key=lambda item: order[id(item)])


@pytest.fixture(scope="session")
def telco_churn_parquet(tmp_path_factory) -> Path:
    return export_telco_churn(tmp_path_factory.mktemp("data") / "telco_churn.parquet")


@pytest.fixture(scope="session")
def training_loop(tmp_path_factory, telco_churn_parquet):
    """(workdir, first summary, second summary) of two local training runs."""
    from ctloop.pipelines.local_run import run_training_pipeline

    workdir = tmp_path_factory.mktemp("ctloop")
    first = run_training_pipeline(str(telco_churn_parquet), "churn", workdir, {})
    second = run_training_pipeline(
        str(telco_churn_parquet),
        "churn",
        workdir,
        {"hyperparameters": CHALLENGER_HYPERPARAMETERS},
    )
    return workdir, first, second


@pytest.fixture
def isolated_kfp_context(tmp_path, monkeypatch):
    """Keep kfp.Client away from ~/.config/kfp/context.json (a user's namespace, cookies)."""
    import kfp.client.client

    monkeypatch.setattr(
        kfp.client.client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json")
    )


@pytest.fixture(scope="session")
def compiled_pipelines(tmp_path_factory) -> Path:
    """The build folder of one `compile_all` per session, as `ctloop compile` writes it:
    `pipelines/{training,monitoring}.yaml` and `components/<name>.yaml`. Read it, never
    write to it: every test of the session shares it."""
    from ctloop.pipelines.compiler import compile_all

    out = tmp_path_factory.mktemp("build")
    compile_all(out)
    return out


@pytest.fixture
def kfp_api(httpserver):
    """An empty, stateful KFP API v2beta1 stand-in (`tests.kfp_standin`) served by
    pytest-httpserver; `kfp_api.host` is its URL for `kfp.Client`."""
    from tests.kfp_standin import KfpStandIn

    standin = KfpStandIn()
    standin.attach(httpserver)
    standin.host = httpserver.url_for("").rstrip("/")
    return standin
