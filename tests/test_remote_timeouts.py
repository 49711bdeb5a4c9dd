"""Every remote call ctloop makes gives up in bounded time with one line naming the endpoint:
an endpoint that accepts and never answers, and one where nothing listens.

Limits are shortened through the settings a user has for them (`CTLOOP_KFP_TIMEOUT_S`,
MLflow's `MLFLOW_HTTP_REQUEST_*`, the Prometheus client's `timeout_s`), so each case takes
about a second.
"""

import subprocess
import sys

import pytest

from ctloop.pipelines.cli import main
from tests.unanswering_endpoint import closed_port_url, silent_endpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]


def _kfp_commands(host: str, build_dir) -> dict[str, list[str]]:
    return {
        "upload": ["upload", "--host", host, "--build-dir", str(build_dir), "--version", "v1"],
        "schedule": ["schedule", "--host", host, "--cron", "0 0 2 * * *"],
        "run": ["run", "training", "--host", host, "--data", "s3://b/t.parquet", "--target", "y"],
    }


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("command", ["upload", "schedule", "run"])
def test_kfp_command_gives_up_on_an_endpoint_that_never_answers(
    command, compiled_pipelines, monkeypatch, capsys
):
    monkeypatch.setenv("CTLOOP_KFP_TIMEOUT_S", "0.5")
    with silent_endpoint() as endpoint:
        code = main(_kfp_commands(endpoint.url, compiled_pipelines)[command])
    assert code == 1
    assert _one_line_error(capsys) == (
        f"ctloop {command}: KFP API at {endpoint.url}: no answer within 0.5 s "
        "(CTLOOP_KFP_TIMEOUT_S sets the limit)"
    )
    assert len(endpoint.connections) == 1  # a request left unanswered is not sent again


@pytest.mark.parametrize("command", ["upload", "schedule", "run"])
def test_kfp_command_on_a_closed_port_says_so_in_one_line(command, compiled_pipelines, capsys):
    host = closed_port_url()
    code = main(_kfp_commands(host, compiled_pipelines)[command])
    assert code == 1
    error = _one_line_error(capsys)
    assert error.startswith(f"ctloop {command}: KFP API at {host}: cannot connect: ")
    assert "Connection refused" in error


def test_console_script_on_a_closed_port_prints_one_line_and_exits_1():
    host = closed_port_url()
    done = subprocess.run(
        [sys.executable, "-m", "ctloop", "schedule", "--host", host, "--cron", "0 0 2 * * *"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"ctloop schedule: KFP API at {host}: cannot connect: HTTPConnection(host='127.0.0.1', "
        f"port={host.rsplit(':', 1)[1]}): Failed to establish a new connection: "
        "[Errno 111] Connection refused"
    ]


def test_kfp_timeout_setting_that_is_not_seconds_is_refused(
    compiled_pipelines, monkeypatch, capsys
):
    monkeypatch.setenv("CTLOOP_KFP_TIMEOUT_S", "soon")
    code = main(_kfp_commands(closed_port_url(), compiled_pipelines)["schedule"])
    assert code == 2
    assert _one_line_error(capsys) == (
        "ctloop schedule: CTLOOP_KFP_TIMEOUT_S='soon': expected a positive number of seconds"
    )


def test_retraining_trigger_gives_up_on_a_silent_kfp_api(monkeypatch):
    from ctloop.components.retrain.kfp_runs import KfpConnectionError, start_training_run

    monkeypatch.setenv("CTLOOP_KFP_TIMEOUT_S", "0.5")
    with silent_endpoint() as endpoint, pytest.raises(KfpConnectionError) as raised:
        start_training_run(
            endpoint.url,
            pipeline_name="ctloop-training",
            experiment="retraining",
            arguments={},
            cooldown_hours=0,
            run_name="retrain",
        )
    assert isinstance(raised.value, RuntimeError)
    assert str(raised.value) == (
        f"KFP API at {endpoint.url}: no answer within 0.5 s (CTLOOP_KFP_TIMEOUT_S sets the limit)"
    )


def test_prometheus_query_gives_up_on_a_silent_server():
    from ctloop.components.canary.prometheus import PrometheusClient, PrometheusError

    with silent_endpoint() as endpoint, pytest.raises(PrometheusError) as raised:
        PrometheusClient(endpoint.url, timeout_s=0.5).query("up")
    assert str(raised.value) == (f"Prometheus {endpoint.url} query 'up': no answer within 0.5 s")


def test_mlflow_server_that_never_answers_is_given_up_after_bounded_retries(
    tmp_path, monkeypatch, capsys
):
    """The CLI caps MLflow's retries (MLflow's own default: seven, with backoff, about four
    minutes of waiting at its 120 s timeout) unless the user set them."""
    table = tmp_path / "t.csv"
    table.write_text("x,y\n1,0\n2,1\n")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # unset, and unset again afterwards
    with silent_endpoint() as endpoint:
        code = main(
            ["drift", "--reference", str(table), "--current", str(table), "--target", "y"]
            + ["--model-uri", "models:/churn@champion", "--mlflow-tracking-uri", endpoint.url]
            + ["--json", str(tmp_path / "d.json"), "--html", str(tmp_path / "d.html")]
        )
    assert code == 1  # the server failed, not the URI
    error = _one_line_error(capsys)
    assert error.startswith("ctloop drift: model URI 'models:/churn@champion': API request to ")
    assert endpoint.url in error and "Read timed out" in error
    assert len(endpoint.connections) == 3  # the first try and two retries


def test_champion_defaults_from_a_silent_mlflow_fail_in_one_line(tmp_path, monkeypatch, capsys):
    window = tmp_path / "window.csv"
    window.write_text("x,churn\n1,0\n")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with silent_endpoint() as endpoint:
        code = main(
            ["run", "monitoring", "--current", str(window), "--workdir", str(tmp_path / "w")]
            + ["--param", f"mlflow_tracking_uri={endpoint.url}"]
        )
    assert code == 1
    error = _one_line_error(capsys)
    assert error.startswith(
        f"ctloop run: cannot read the champion ctloop-model@champion from {endpoint.url}: "
        f"API request to {endpoint.url}/"
    )
    assert "Read timed out" in error
