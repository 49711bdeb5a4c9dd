"""`ctloop serve` and the loopback server runner behind it and `make demo`.

The model is the champion of the session's local training loop (the real pipeline through
kfp.local, registered in MLflow as ctloop-model@champion): it is served from its model
folder, from `models:/ctloop-model@champion`, and by the demo's serving step. A bare XGBoost
file, as KServe's xgbserver serves it (no profile, no feature names), is served by position.
"""

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from ctloop.components.contract.model_folder import ModelLoadingError, load_model
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.model_uri import local_model_dir
from ctloop.components.registry.mlflow_registry import MODEL_ARTIFACT
from ctloop.components.table_io import read_table
from ctloop.pipelines.cli import build_parser
from ctloop.pipelines.demo import _describe_serving, ask_served_model, latest_champion
from ctloop.serving import server
from ctloop.serving.local_server import (
    ServerStartError,
    free_port,
    running_server,
    server_command,
    stop,
)
from ctloop.serving.server_options import BODY_BYTES_PER_ROW, server_options
from tests.served_model import save_positional_booster

uses_training_loop = pytest.mark.e2e


@pytest.fixture(scope="module")
def champion(training_loop, telco_churn_parquet):
    """The loop's champion: summary, model folder, and Telco rows with in-process scores."""
    _, first, second = training_loop
    summary = latest_champion(first, second)
    folder = local_model_dir(summary["deployment"]["model_artifact_uri"])
    model = load_model(folder)
    rows = pq.read_table(telco_churn_parquet).select(model.schema.features).slice(0, 20)
    return {
        "summary": summary,
        "folder": folder,
        "rows": rows.to_pylist(),
        "scores": predict_scores(model.booster, to_frame(rows, model.schema)),
    }


def _ctloop_serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "ctloop", "serve", *args]


def _predict_v1(url: str, name: str, rows: list[dict]) -> dict:
    answer = httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


@uses_training_loop
def test_ctloop_serve_answers_health_and_v1_on_loopback_and_stops(champion):
    port = free_port()
    command = _ctloop_serve("--model-uri", str(champion["folder"]), "--port", str(port))

    with running_server(command + ["--version", "7"], port) as served:
        ready = httpx.get(f"{served.url}/v2/health/ready", timeout=10)
        body = _predict_v1(served.url, "ctloop-model", champion["rows"][:5])  # the default name
        output = served.output()

    assert ready.json() == {"ready": True}
    assert body["model_version"] == "7"
    assert np.allclose(body["predictions"], champion["scores"][:5], atol=1e-6)
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    assert served.process.returncode is not None  # stopped on leaving the block


@uses_training_loop
def test_ctloop_serve_resolves_a_registry_alias_through_mlflow(champion):
    port = free_port()
    command = _ctloop_serve(
        "--model-uri",
        "models:/ctloop-model@champion",
        "--mlflow-tracking-uri",
        champion["summary"]["mlflow_tracking_uri"],
        "--name",
        "churn",
        "--port",
        str(port),
    )

    with running_server(command, port) as served:
        body = _predict_v1(served.url, "churn", champion["rows"][:5])

    assert body["model_version"] == champion["summary"]["model_version"]  # from the registry
    assert np.allclose(body["predictions"], champion["scores"][:5], atol=1e-6)


@pytest.mark.parametrize(
    ("model_uri", "message"),
    [
        ("{tmp}/missing", "missing is not a folder or a model file"),
        ("s3://bucket/churn/model", "scheme 's3' is not supported"),
    ],
    ids=["missing folder", "remote scheme"],
)
def test_ctloop_serve_rejects_a_bad_model_uri_with_one_message(tmp_path, model_uri, message):
    result = subprocess.run(
        _ctloop_serve("--model-uri", model_uri.format(tmp=tmp_path), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()  # one message, no traceback
    assert line.startswith("ctloop serve: ") and message in line


@uses_training_loop
def test_mlflow_uris_download_the_model_with_its_profile_and_version(champion, tmp_path):
    tracking_uri = champion["summary"]["mlflow_tracking_uri"]
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = registry.get_model_version_by_alias("ctloop-model", "champion").run_id

    by_alias = local_model_dir("models:/ctloop-model@champion", tmp_path / "a", tracking_uri)
    by_run = local_model_dir(f"runs:/{run_id}/{MODEL_ARTIFACT}", tmp_path / "r", tracking_uri)

    from_alias, from_run = load_model(by_alias), load_model(by_run)
    assert from_alias.version == champion["summary"]["model_version"]
    assert from_run.version == "unknown"  # a run's model has no registered version
    assert from_alias.profile_path == by_alias / "reference_profile.json"
    assert from_alias.schema == from_run.schema == load_model(champion["folder"]).schema


@uses_training_loop
def test_an_mlflow_uri_the_registry_does_not_know_is_a_model_loading_error(champion, tmp_path):
    tracking_uri = champion["summary"]["mlflow_tracking_uri"]

    with pytest.raises(ModelLoadingError, match="models:/no-such-model@champion"):
        local_model_dir("models:/no-such-model@champion", tmp_path, tracking_uri)


def test_serve_defaults_are_the_servers(tmp_path):
    args = build_parser().parse_args(["serve", "--model-uri", str(tmp_path)])

    assert (args.host, args.port) == (server.DEFAULT_HOST, server.DEFAULT_PORT)
    assert args.max_batch_rows == server.DEFAULT_MAX_BATCH_ROWS
    assert server_options(args)["max_body_bytes"] == server.DEFAULT_MAX_BODY_BYTES
    assert args.name == "ctloop-model"
    assert args.request_logs is False
    logged = build_parser().parse_args(["serve", "--model-uri", str(tmp_path), "--request-logs"])
    assert logged.request_logs is True


@uses_training_loop
def test_demo_serves_the_champion_over_v1_and_v2_alike(champion, telco_churn_parquet):
    summary = champion["summary"]
    answers = ask_served_model(
        summary["deployment"]["model_artifact_uri"], summary["model_version"], telco_churn_parquet
    )

    v1, v2 = answers["v1"], answers["v2"]
    outputs = {output["name"]: output["data"] for output in v2["outputs"]}
    assert len(answers["rows"]) == 3
    assert v1["model_version"] == v2["model_version"] == summary["model_version"]
    assert np.allclose(v1["predictions"], outputs["probabilities"], atol=1e-6)
    assert v1["labels"] == outputs["labels"] == [int(p >= 0.5) for p in v1["predictions"]]
    text = _describe_serving("serving the champion", answers)
    assert "row 2: P(churn)" in text and "(actual: " in text


def test_a_server_that_cannot_start_is_reported_with_its_output(tmp_path):
    port = free_port()

    with pytest.raises(ServerStartError, match="exited with code 2") as raised:
        with running_server(server_command(tmp_path / "missing", "churn", port), port):
            pytest.fail("the server started without a model")

    assert "missing is not a folder or a model file" in str(raised.value)


def test_a_server_that_never_gets_ready_is_stopped_after_the_start_timeout():
    sleeper = [
        sys.executable,
        "-c",
        "import time; print('warming up', flush=True); time.sleep(120)",
    ]
    started = time.monotonic()

    with pytest.raises(ServerStartError, match=r"not ready .* after 1 s") as raised:
        with running_server(sleeper, free_port(), start_timeout_s=1):
            pytest.fail("a process that never listens was reported ready")

    assert "warming up" in str(raised.value)
    assert time.monotonic() - started < 30


def test_stop_kills_a_process_that_ignores_sigterm():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout.readline() == b"ignoring\n"  # the handler is in place

    assert stop(stubborn, timeout_s=0.5) == -9


def _serve_options(*flags: str) -> dict:
    return server_options(build_parser().parse_args(["serve", "--model-uri", ".", *flags]))


def test_the_body_limit_follows_the_batch_row_limit_unless_given():
    assert _serve_options("--max-batch-rows", "500")["max_body_bytes"] == 500 * BODY_BYTES_PER_ROW
    given = _serve_options("--max-batch-rows", "500", "--max-body-bytes", "1234")
    assert given["max_body_bytes"] == 1234
    with pytest.raises(ValueError, match="--max-body-bytes 0 must be >= 1"):
        _serve_options("--max-body-bytes", "0")


@pytest.fixture(scope="module")
def bare_booster(tmp_path_factory, telco_churn_parquet):
    """A booster file alone (model.ubj), trained on a matrix without feature names, with
    its training matrix."""
    path = tmp_path_factory.mktemp("bare") / "model.ubj"
    booster, matrix = save_positional_booster(path, read_table(str(telco_churn_parquet)))
    return path, booster, np.nan_to_num(matrix[:20])  # JSON carries no NaN


def test_ctloop_serve_refuses_a_port_out_of_range_before_loading(bare_booster):
    for port in ("99999", "0", "-1", "65536"):
        with pytest.raises(ValueError, match=f"--port {port} is not a TCP port"):
            _serve_options("--port", port)
    assert _serve_options("--port", "65535")["port"] == 65535

    result = subprocess.run(
        _ctloop_serve("--model-uri", str(bare_booster[0]), "--port", "99999"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == "ctloop serve: --port 99999 is not a TCP port: give one from 1 to 65535"


def test_ctloop_serve_serves_a_bare_booster_file_by_position(bare_booster):
    path, booster, matrix = bare_booster
    port = free_port()
    command = _ctloop_serve("--model-uri", str(path), "--name", "bare", "--port", str(port))

    with running_server(command, port) as served:
        v1 = httpx.post(
            f"{served.url}/v1/models/bare:predict", json={"instances": matrix.tolist()}, timeout=30
        )
        objects = httpx.post(
            f"{served.url}/v1/models/bare:predict",
            json={"instances": [{f"f{i}": value for i, value in enumerate(matrix[0].tolist())}]},
            timeout=30,
        )
        tensor = {"name": "input-0", "shape": [20, 5], "datatype": "FP32", "data": matrix.tolist()}
        v2 = httpx.post(f"{served.url}/v2/models/bare/infer", json={"inputs": [tensor]}, timeout=30)
        metadata = httpx.get(f"{served.url}/v2/models/bare", timeout=10).json()
        output = served.output()

    expected = booster.inplace_predict(matrix)
    assert v1.status_code == 200, v1.text
    assert np.allclose(v1.json()["predictions"], expected, atol=1e-6)
    assert v1.json()["model_version"] is None  # no version given or recorded: none invented
    assert v2.status_code == 200, v2.text
    assert np.allclose(v2.json()["outputs"][0]["data"], expected, atol=1e-6)
    assert v2.json()["model_version"] is None
    assert objects.status_code == 400
    assert "records no feature names, so instances cannot be objects" in objects.json()["error"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}]
    assert "model 'bare' has no version" in output


def test_ctloop_serve_of_an_mlflow_uri_without_a_tracking_server_writes_nothing(tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}

    result = subprocess.run(
        _ctloop_serve("--model-uri", "models:/churn@champion", "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
        env=environment,
    )

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "give its tracking URI or set $MLFLOW_TRACKING_URI" in line
    assert list(workdir.iterdir()) == []  # no mlflow.db, no mlruns
