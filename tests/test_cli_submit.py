"""`ctloop run training --host URL` against a KFP API v2beta1 stand-in on 127.0.0.1.

The real `kfp.Client` talks HTTP to pytest-httpserver, which answers the calls
`create_run_from_pipeline_func` makes (healthz, experiment lookup or creation, run
creation) with the JSON shapes the KFP API server returns. The tests read back what the
cluster would have received: the compiled pipeline and typed runtime parameters.
"""

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from ctloop.pipelines.cli import main

EXPERIMENTS = "/apis/v2beta1/experiments"
RUNS = "/apis/v2beta1/runs"
CREATED_AT = "2024-05-01T02:00:00Z"

pytestmark = [
    pytest.mark.filterwarnings("ignore:This client only works:FutureWarning"),
    pytest.mark.usefixtures("isolated_kfp_context"),
]


def _experiment(experiment_id: str, name: str) -> dict:
    return {
        "experiment_id": experiment_id,
        "display_name": name,
        "created_at": CREATED_AT,
        "namespace": "",
        "storage_state": "AVAILABLE",
    }


def _serve_kfp(httpserver, *, existing_experiment: dict | None, run_id: str) -> None:
    """Answer healthz, experiment lookup (and creation when absent) and run creation."""
    httpserver.expect_request("/apis/v2beta1/healthz", method="GET").respond_with_json(
        {"commit_sha": "abc1234", "tag_name": "2.4.0", "multi_user": False}
    )
    listing = {"experiments": [existing_experiment], "total_size": 1} if existing_experiment else {}
    httpserver.expect_request(EXPERIMENTS, method="GET").respond_with_json(listing)
    httpserver.expect_request(EXPERIMENTS, method="POST").respond_with_json(
        _experiment("exp-created", "churn-nightly")
    )
    httpserver.expect_request(RUNS, method="POST").respond_with_json(
        {
            "run_id": run_id,
            "experiment_id": (existing_experiment or {}).get("experiment_id", "exp-created"),
            "display_name": "ctloop-training",
            "storage_state": "AVAILABLE",
            "state": "PENDING",
            "created_at": CREATED_AT,
        }
    )


def _requests(httpserver, method: str, path: str) -> list:
    return [req for req, _ in httpserver.log if req.method == method and req.path == path]


def _submit(httpserver, *extra: str) -> int:
    return main(
        [
            "run",
            "training",
            "--data",
            "s3://bucket/churn/2024-05.parquet",
            "--target",
            "Churn",
            "--host",
            httpserver.url_for("/").rstrip("/"),
            "--experiment",
            "churn-nightly",
            *extra,
        ]
    )


def test_submit_sends_the_compiled_pipeline_with_typed_parameters_to_the_experiment(
    httpserver, capsys
):
    _serve_kfp(
        httpserver,
        existing_experiment=_experiment("exp-42", "churn-nightly"),
        run_id="run-7f3a",
    )
    code = _submit(
        httpserver,
        "--param",
        "min_rows=500",
        "--param",
        "validation_fraction=0.2",
        "--param",
        'drop_columns=["customerID"]',
        "--json",
    )
    out = capsys.readouterr().out

    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["run_id"] == "run-7f3a"
    httpserver.check_assertions()  # every request found a handler
    (lookup,) = _requests(httpserver, "GET", EXPERIMENTS)
    (predicate,) = json.loads(parse_qs(urlsplit(lookup.full_path).query)["filter"][0])["predicates"]
    assert (predicate["key"], predicate["stringValue"]) == ("display_name", "churn-nightly")
    assert _requests(httpserver, "POST", EXPERIMENTS) == []

    (run_request,) = _requests(httpserver, "POST", RUNS)
    body = json.loads(run_request.data)
    assert body["experiment_id"] == "exp-42"
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "s3://bucket/churn/2024-05.parquet",
        "target": "Churn",
        "min_rows": 500,
        "validation_fraction": 0.2,
        "drop_columns": ["customerID"],
    }
    assert type(body["runtime_config"]["parameters"]["min_rows"]) is int
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "ctloop-training"
    assert {"data_uri", "target", "min_rows"} <= set(spec["root"]["inputDefinitions"]["parameters"])
    train = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"
    ]["exec-train-model"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}


def test_submit_creates_the_experiment_when_absent_and_prints_the_run_id(httpserver, capsys):
    _serve_kfp(httpserver, existing_experiment=None, run_id="run-9c1d")
    code = _submit(httpserver)
    out = capsys.readouterr().out

    assert code == 0
    assert "run-9c1d" in out
    httpserver.check_assertions()
    (create,) = _requests(httpserver, "POST", EXPERIMENTS)
    assert json.loads(create.data)["display_name"] == "churn-nightly"
    (run_request,) = _requests(httpserver, "POST", RUNS)
    body = json.loads(run_request.data)
    assert body["experiment_id"] == "exp-created"
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "s3://bucket/churn/2024-05.parquet",
        "target": "Churn",
    }


def test_submit_rejects_a_param_the_pipeline_does_not_have_before_any_request(httpserver, capsys):
    _serve_kfp(httpserver, existing_experiment=None, run_id="never")
    code = _submit(httpserver, "--param", "min_rowz=500")
    err = capsys.readouterr().err

    assert code != 0
    assert "min_rowz" in err
    assert "no such parameter" in err
    assert httpserver.log == []


def test_submit_rejects_a_non_integer_value_for_an_integer_param_before_any_request(
    httpserver, capsys
):
    _serve_kfp(httpserver, existing_experiment=None, run_id="never")
    code = _submit(httpserver, "--param", "min_rows=lots")
    err = capsys.readouterr().err

    assert code != 0
    assert "min_rows" in err
    assert "'lots'" in err
    assert "Integer" in err
    assert httpserver.log == []


def test_submit_sends_the_service_account_token_when_one_is_mounted(
    httpserver, capsys, tmp_path, monkeypatch
):
    token = tmp_path / "token"
    token.write_text("sa-token-123")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    _serve_kfp(httpserver, existing_experiment=None, run_id="run-tok")
    assert _submit(httpserver) == 0
    (run_request,) = _requests(httpserver, "POST", RUNS)
    assert run_request.headers["Authorization"] == "Bearer sa-token-123"
