"""mlflow_registry against a real `mlflow server` on loopback: the cluster path of MLflow.

On a cluster the steps talk HTTP to a tracking server that proxies artifacts
(`mlflow-artifacts:/`); nothing is written by the client to a local path. This file starts
that server once (SQLite backend, artifacts under a temporary folder) and drives it only
through ctloop's MLflow module, the way the training and register steps do.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from mlflow import MlflowClient

from ctloop import __version__
from ctloop.components import lineage
from ctloop.components.registry import mlflow_registry
from ctloop.components.registry.mlflow_registry import ChampionChangedError, RegistryError
from tests.unanswering_endpoint import closed_port_url

EXPERIMENT = "ctloop-server-test"
DATASET_HASH = "sha256:" + "ab" * 32
STARTUP_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's whole process group (uvicorn worker, job runners too)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """(tracking URI, artifacts destination) of an `mlflow server` serving artifacts by proxy."""
    root = tmp_path_factory.mktemp("mlflow_server")
    artifacts = root / "artifacts"
    port = _free_port()
    stderr_path = root / "server.stderr"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runners: nothing here needs them
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    previous_tracking_uri = mlflow.get_tracking_uri()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {process.returncode}"
                    if process.poll() is not None
                    else f"no /health answer within {STARTUP_TIMEOUT_S:.0f} s"
                )
                pytest.fail(
                    f"mlflow server on {uri} {state}; stderr:\n"
                    + stderr_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.25)
        yield uri, artifacts
    finally:
        _stop(process)
        mlflow.set_tracking_uri(previous_tracking_uri)
        mlflow.set_registry_uri(previous_tracking_uri)


def _synthetic_frame(seed: int, rows: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], size=rows)
    tenure = rng.integers(0, 72, size=rows).astype(float)
    charges = rng.normal(70.0, 20.0, size=rows)
    logit = 1.5 * (contract == "Month-to-month") - 0.04 * tenure + 0.01 * (charges - 70)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "contract": pd.Series(contract).astype(
                pd.CategoricalDtype(categories=["Month-to-month", "One year", "Two year"])
            ),
            "monthly_charges": charges,
        }
    )
    return frame, label


def _profile(frame: pd.DataFrame, seed: int) -> dict:
    shares = frame["contract"].value_counts(normalize=True).sort_index()
    return {
        "format": "ctloop.reference_profile/v1",
        "target": "churn",
        "task": "binary",
        "row_count": len(frame),
        "label_mapping": None,
        "feature_order": list(frame.columns),
        "features": {
            "contract": {
                "kind": "categorical",
                "count": len(frame),
                "missing_rate": 0.0,
                "categories": {str(k): float(v) for k, v in shares.items()},
            }
        },
        "seed": seed,
    }


def _train_and_log(tracking_uri: str, seed: int, max_depth: int) -> dict:
    frame, label = _synthetic_frame(seed)
    train = xgb.DMatrix(frame.iloc[:240], label=label[:240], enable_categorical=True)
    valid = xgb.DMatrix(frame.iloc[240:], label=label[240:], enable_categorical=True)
    history: dict = {}
    booster = xgb.train(
        {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": max_depth},
        train,
        num_boost_round=8,
        evals=[(valid, "validation")],
        evals_result=history,
        verbose_eval=False,
    )
    profile = _profile(frame, seed)
    example = frame.iloc[:5].reset_index(drop=True)
    with mlflow_registry.training_run(
        tracking_uri,
        EXPERIMENT,
        run_name=f"train-{seed}",
        tags={"ctloop.dataset.content_hash": DATASET_HASH, "kfp.run_id": f"kfp-{seed}"},
        params={"max_depth": max_depth},
    ) as run:
        mlflow_registry.log_iteration_metrics(run.info.run_id, history["validation"])
        model_uri = mlflow_registry.log_model_with_profile(booster, profile, example)
    return {
        "run_id": run.info.run_id,
        "model_uri": model_uri,
        "booster": booster,
        "profile": profile,
        "example": example,
        "history": history,
    }


@pytest.fixture(scope="module")
def trained(mlflow_server):
    """Two training runs (different seeds and depths) logged through the server."""
    uri, _ = mlflow_server
    return [_train_and_log(uri, seed=1, max_depth=2), _train_and_log(uri, seed=2, max_depth=4)]


def test_training_run_logs_iteration_metrics_with_steps_through_the_server(mlflow_server, trained):
    uri, _ = mlflow_server
    first = trained[0]
    history = MlflowClient(uri).get_metric_history(first["run_id"], "validation_logloss")
    assert [m.step for m in history] == list(range(8))
    assert np.allclose([m.value for m in history], first["history"]["validation"]["logloss"])
    run = MlflowClient(uri).get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["ctloop.dataset.content_hash"] == DATASET_HASH
    assert run.data.params["max_depth"] == "2"  # logged by training_run as the run starts


def test_artifacts_are_proxied_by_the_server_into_its_destination(mlflow_server, trained):
    uri, artifacts = mlflow_server
    first = trained[0]
    run = MlflowClient(uri).get_run(first["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    on_disk = {p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file()}
    profiles = [
        p for p in on_disk if p.endswith(f"{first['run_id']}/artifacts/reference_profile.json")
    ]
    assert len(profiles) == 1, sorted(on_disk)
    assert json.loads((artifacts / profiles[0]).read_text()) == first["profile"]
    model_id = first["model_uri"].removeprefix("models:/")
    mlmodels = [p for p in on_disk if p.endswith(f"{model_id}/artifacts/MLmodel")]
    assert len(mlmodels) == 1, sorted(on_disk)
    model_dir = (artifacts / mlmodels[0]).parent
    booster_file = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["xgboost"]["data"]
    assert (model_dir / booster_file).stat().st_size > 0


def test_first_version_is_champion_later_is_challenger_and_reregistering_is_idempotent(
    mlflow_server, trained
):
    uri, _ = mlflow_server
    name = "churn-aliases"
    first, second = trained

    def register(run, compared):
        return mlflow_registry.register_version(
            uri, name, run["run_id"], run["model_uri"], {}, compared_champion=compared
        )

    assert register(first, None) == ("1", "champion")
    assert register(second, "1") == ("2", "challenger")
    assert register(second, "1") == ("2", "challenger")
    assert register(first, None) == ("1", "champion")  # a retried step that already won
    versions = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    assert mlflow_registry.aliases_of(uri, name, "1") == ["champion"]
    assert mlflow_registry.aliases_of(uri, name, "2") == ["challenger"]


def test_model_by_alias_returns_the_version_its_profile_and_a_booster_that_scores_alike(
    mlflow_server, trained
):
    uri, _ = mlflow_server
    name = "churn-by-alias"
    first, second = trained
    mlflow_registry.register_version(
        uri, name, first["run_id"], first["model_uri"], {}, compared_champion=None
    )
    mlflow_registry.register_version(
        uri, name, second["run_id"], second["model_uri"], {}, compared_champion="1"
    )

    champion = mlflow_registry.model_by_alias(uri, name, "champion")
    assert (champion.name, champion.version, champion.run_id) == (name, "1", first["run_id"])
    assert champion.model_uri == f"models:/{name}/1"
    assert champion.profile == first["profile"]
    challenger = mlflow_registry.model_by_alias(uri, name, "challenger")
    assert (challenger.version, challenger.run_id) == ("2", second["run_id"])
    assert challenger.profile == second["profile"]

    example = first["example"]
    loaded = mlflow_registry.load_booster(champion.model_uri)
    expected = first["booster"].inplace_predict(example)
    assert np.allclose(loaded.inplace_predict(example), expected)
    other = second["booster"].inplace_predict(example)
    assert not np.allclose(loaded.inplace_predict(example), other)


def test_model_by_alias_is_none_without_a_champion(mlflow_server):
    uri, _ = mlflow_server
    MlflowClient(uri).create_registered_model("churn-no-versions")
    assert mlflow_registry.model_by_alias(uri, "churn-no-versions", "champion") is None
    assert mlflow_registry.model_by_alias(uri, "churn-never-registered", "champion") is None


def test_register_blessed_candidate_tags_the_version_with_gate_metrics_dataset_and_kfp_run(
    mlflow_server, trained
):
    uri, _ = mlflow_server
    name = "churn-blessed"
    first = trained[0]
    # DVC data: the train step tagged the commit and DVC's hash it read the data at.
    MlflowClient(uri).set_tag(first["run_id"], "ctloop.dataset.dvc_commit", "3e4cdc69")
    evaluation = {"candidate": {"roc_auc": 0.81, "log_loss": 0.45}, "champion_version": None}
    version, alias = mlflow_registry.run_registration(
        uri,
        name,
        run_id=first["run_id"],
        model_uri=first["model_uri"],
        evaluation=evaluation,
        kfp_run={"id": "run-123", "name": "training-2024-05-01"},
    )
    assert (version, alias) == ("1", "champion")
    tags = MlflowClient(uri).get_model_version(name, version).tags
    assert tags["ctloop.gate"] == "passed"
    assert json.loads(tags["ctloop.test_metrics"]) == {"roc_auc": 0.81, "log_loss": 0.45}
    assert tags["ctloop.champion_compared"] == "none"
    assert tags["ctloop.dataset.content_hash"] == DATASET_HASH
    assert tags["ctloop.dataset.dvc_commit"] == "3e4cdc69"
    assert tags["kfp.run_id"] == "run-123"
    assert tags["kfp.run_name"] == "training-2024-05-01"
    assert MlflowClient(uri).get_run(first["run_id"]).data.tags["ctloop.gate"] == "passed"


def test_register_version_of_a_missing_run_raises_naming_the_run(mlflow_server):
    uri, _ = mlflow_server
    missing = "0123456789abcdef0123456789abcdef"
    with pytest.raises(RegistryError, match=missing):
        mlflow_registry.register_version(
            uri, "churn-missing-run", missing, f"runs:/{missing}/model", {}, compared_champion=None
        )
    assert MlflowClient(uri).search_model_versions("name = 'churn-missing-run'") == []


def _register(uri: str, name: str, run: dict, champion_version: str | None) -> tuple[str, str]:
    return mlflow_registry.run_registration(
        uri,
        name,
        run_id=run["run_id"],
        model_uri=run["model_uri"],
        evaluation={"candidate": {"roc_auc": 0.8}, "champion_version": champion_version},
        kfp_run={"id": "", "name": ""},
    )


def test_a_run_that_evaluated_before_another_registered_is_refused_and_registers_nothing(
    mlflow_server, trained
):
    uri, _ = mlflow_server
    name = "churn-interleaved"
    run_a, run_b = trained
    # Both runs evaluate while there is no champion: each gate records "no champion yet".
    assert mlflow_registry.model_by_alias(uri, name) is None  # run A's evaluation
    assert mlflow_registry.model_by_alias(uri, name) is None  # run B's evaluation
    assert _register(uri, name, run_a, None) == ("1", "champion")
    message = (
        "champion of 'churn-interleaved' is now version 1, but the quality gate compared this "
        "candidate with no champion"
    )
    with pytest.raises(ChampionChangedError, match=message):
        _register(uri, name, run_b, None)
    versions = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_a["run_id"])]
    assert mlflow_registry.version_with_alias(uri, name, "challenger") is None
    # Judged again against version 1, the same candidate registers as the challenger.
    assert _register(uri, name, run_b, "1") == ("2", "challenger")


def test_a_champion_that_moves_while_the_version_is_created_refuses_and_deletes_that_version(
    mlflow_server, trained, monkeypatch
):
    uri, _ = mlflow_server
    name = "churn-moved-during-registration"
    run_a, run_b = trained
    _register(uri, name, run_a, None)
    create_version = mlflow.register_model

    def promoted_meanwhile(*args, **kwargs):
        created = create_version(*args, **kwargs)
        # Another run promotes its model between the first champion read and the alias write.
        other = create_version(run_a["model_uri"], name)
        MlflowClient(uri).set_registered_model_alias(name, "champion", other.version)
        return created

    monkeypatch.setattr(mlflow, "register_model", promoted_meanwhile)
    with pytest.raises(ChampionChangedError, match="is now version 3, .* with version 1"):
        _register(uri, name, run_b, "1")
    versions = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "3"]  # version 2 (run B) was deleted
    assert run_b["run_id"] not in {v.run_id for v in versions}
    assert mlflow_registry.version_with_alias(uri, name, "challenger") is None


def test_registration_refuses_an_evaluation_that_does_not_name_the_champion_compared(
    mlflow_server, trained
):
    uri, _ = mlflow_server
    with pytest.raises(RegistryError, match="evaluation has no 'champion_version'"):
        mlflow_registry.run_registration(
            uri,
            "churn-unnamed-champion",
            run_id=trained[0]["run_id"],
            model_uri=trained[0]["model_uri"],
            evaluation={"candidate": {"roc_auc": 0.8}},
            kfp_run={},
        )
    assert MlflowClient(uri).search_model_versions("name = 'churn-unnamed-champion'") == []


def test_registration_tags_the_version_with_its_lineage_even_when_the_kfp_api_is_unreachable(
    mlflow_server, trained, monkeypatch
):
    uri, _ = mlflow_server
    name = "churn-lineage"
    options = {"target": "kfp", "image": "registry.example/ctloop:1.2.3", "labels": {"team": "a"}}
    monkeypatch.setenv(lineage.IMAGE_ENV, "registry.example/ctloop:1.2.3")
    monkeypatch.setenv(lineage.COMPILE_OPTIONS_ENV, json.dumps(options))
    closed = closed_port_url()
    version, _ = mlflow_registry.run_registration(
        uri,
        name,
        run_id=trained[1]["run_id"],
        model_uri=trained[1]["model_uri"],
        evaluation={"candidate": {"roc_auc": 0.8}, "champion_version": None},
        kfp_run={"id": "run-9", "name": "nightly"},
        kfp_host=closed,
    )
    tags = MlflowClient(uri).get_model_version(name, version).tags
    code = lineage.code_version()
    assert tags["ctloop.lineage.ctloop_version"] == __version__
    assert tags["ctloop.lineage.git_commit"] == (code["git_commit"] or "null")
    assert tags["ctloop.lineage.git_dirty"] == json.dumps(code["dirty"])
    assert tags["ctloop.lineage.image"] == "registry.example/ctloop:1.2.3"
    assert json.loads(tags["ctloop.lineage.compile_options"]) == options
    unknown = json.loads(tags["ctloop.lineage.kfp_pipeline_version"])["unknown"]
    assert unknown.startswith(f"KFP API at {closed}: cannot connect")
    assert (tags["kfp.run_id"], tags["ctloop.dataset.content_hash"]) == ("run-9", DATASET_HASH)
