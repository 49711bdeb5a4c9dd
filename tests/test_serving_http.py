"""The ctloop predictor behind KServe's real model server, over HTTP on loopback.

One server (started with `python -m ctloop.serving.server`) answers v1, v2 JSON, a
third-party Open Inference Protocol client (tritonclient), metadata, health and metrics, turns
every malformed request into a 400, and a body over its limit into a 413 before reading it. A
second server holds its scoring thread on a gate to show that health probes are answered while
a 10,000-row batch is being scored.
"""

import http.client
import json
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families

from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.table_io import read_table
from ctloop.serving.local_server import LOOPBACK, free_port, running_server
from ctloop.serving.server_options import DEFAULT_MAX_BODY_BYTES
from tests.served_model import train_model_folder

GATED_SERVER = """
import sys, time
from pathlib import Path
from ctloop.serving.predictor import CtloopPredictor
from ctloop.serving.server import LoopbackModelServer

model_dir, port, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

class GatedPredictor(CtloopPredictor):
    # Holds each batch in the scoring thread until the test creates gate/release.
    def _score(self, matrix):
        (gate / f"scoring-{len(matrix)}").touch()
        deadline = time.monotonic() + 60
        while not (gate / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super()._score(matrix)

model = GatedPredictor("churn", model_dir, version="gated")
model.load()
LoopbackModelServer(http_port=port, enable_grpc=False).start([model])
"""


@pytest.fixture(scope="module")
def churn(tmp_path_factory, telco_churn_parquet):
    """(model folder with version.txt, profile, feature table, predict_scores of every row)."""
    folder = tmp_path_factory.mktemp("served")
    profile, features = train_model_folder(folder, read_table(str(telco_churn_parquet)))
    (folder / "version.txt").write_text("3\n")
    booster = xgb.Booster(model_file=str(folder / "model.json"))
    return (
        folder,
        profile,
        features,
        predict_scores(booster, to_frame(features, feature_schema(profile))),
    )


@pytest.fixture(scope="module")
def server(churn, tmp_path_factory):
    port = free_port()
    command = [sys.executable, "-m", "ctloop.serving.server", "--model-dir", f"file://{churn[0]}"]
    command += ["--name", "churn", "--port", str(port)]
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with running_server(command, port, output_path=log) as running:
        yield running


def _rows(churn, count: int) -> tuple[list[dict], list[list]]:
    objects = churn[2].slice(0, count).to_pylist()
    return objects, [[row[name] for name in churn[1]["feature_order"]] for row in objects]


def _v2_inputs(churn, count: int) -> list[dict]:
    features, kinds = churn[2].slice(0, count), churn[1]["features"]
    return [
        {
            "name": name,
            "shape": [count],
            "datatype": "BYTES" if kinds[name]["kind"] == "categorical" else "FP32",
            "data": features.column(name).to_pylist(),
        }
        for name in churn[1]["feature_order"]
    ]


def _v1(server, body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/churn:predict", json=body, timeout=60)


def _v2(server, body) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/churn/infer", json=body, timeout=60)


def _metric(server, name: str, **labels) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_server_listens_on_loopback_by_default_and_logs_the_model(server):
    assert "model 'churn' loaded" in server.output()
    assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.output()
    assert "0.0.0.0" not in server.output()


def test_requests_are_logged_only_with_request_logs(server, churn, tmp_path):
    _, lists = _rows(churn, 3)
    port = free_port()
    command = [sys.executable, "-m", "ctloop.serving.server", "--model-dir", str(churn[0])]
    command += ["--name", "churn", "--port", str(port), "--request-logs"]
    with running_server(command, port, output_path=tmp_path / "verbose.log") as verbose:
        for running in (server, verbose):
            assert _v1(running, {"instances": lists}).status_code == 200

    access_line = '"POST /v1/models/churn%3Apredict HTTP/1.1" 200'
    assert access_line in verbose.output() and "predict_ms" in verbose.output()
    assert access_line not in server.output() and "predict_ms" not in server.output()
    assert "model 'churn' loaded" in server.output()  # other log lines are still written


def test_v1_lists_and_objects_over_http_match_in_process_scores(server, churn):
    objects, lists = _rows(churn, 2000)
    by_objects = _v1(server, {"instances": objects})
    by_lists = _v1(server, {"instances": lists, "return_labels": True})

    assert by_objects.status_code == 200, by_objects.text
    assert by_objects.json()["model_version"] == "3"  # from version.txt
    assert np.allclose(by_objects.json()["predictions"], churn[3][:2000], atol=1e-6)
    assert np.allclose(by_lists.json()["predictions"], churn[3][:2000], atol=1e-6)
    assert by_lists.json()["labels"] == [int(p >= 0.5) for p in by_lists.json()["predictions"]]


def test_v2_json_over_http_matches_in_process_scores(server, churn):
    answer = _v2(server, {"id": "q1", "inputs": _v2_inputs(churn, 300)})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("q1", "churn", "3")
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [300]
    assert np.allclose(outputs["probabilities"]["data"], churn[3][:300], atol=1e-6)
    assert outputs["labels"]["data"] == [int(p >= 0.5) for p in outputs["probabilities"]["data"]]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_scores_over_the_open_inference_protocol(server, churn, binary):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("churn")
    metadata = client.get_model_metadata("churn")
    features = churn[2].slice(0, 400)
    inputs = []
    for tensor in metadata["inputs"]:
        values = features.column(tensor["name"]).to_numpy(zero_copy_only=False)
        if tensor["datatype"] == "BYTES":
            array = values.astype(np.object_)
        elif binary:
            array = values.astype(np.float32)  # nulls -> NaN, which JSON cannot carry
        else:
            array = np.nan_to_num(values.astype(np.float32), nan=0.0)
        inputs.append(triton.InferInput(tensor["name"], [len(array)], tensor["datatype"]))
        inputs[-1].set_data_from_numpy(array, binary_data=binary)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]

    # KServe parses a v2 body as JSON only when told so; binary bodies go by their header.
    headers = None if binary else {"Content-Type": "application/json"}
    result = client.infer("churn", inputs, outputs=wanted, headers=headers)

    scores = result.as_numpy("probabilities")
    assert result.get_response()["model_version"] == "3"
    assert result.as_numpy("labels") is None  # only what was asked for
    if binary:
        assert np.allclose(scores, churn[3][:400], atol=1e-6)
    else:
        frame = to_frame(features, feature_schema(churn[1]))
        frame = frame.fillna({"total_charges": 0.0})
        booster = xgb.Booster(model_file=str(churn[0] / "model.json"))
        assert np.allclose(scores, predict_scores(booster, frame), atol=1e-6)


def test_metadata_and_health_endpoints(server, churn):
    metadata = httpx.get(f"{server.url}/v2/models/churn", timeout=10).json()
    assert metadata["name"] == "churn"
    assert [tensor["name"] for tensor in metadata["inputs"]] == churn[1]["feature_order"]
    assert {"name": "contract", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    assert [output["name"] for output in metadata["outputs"]] == ["probabilities", "labels"]
    assert httpx.get(f"{server.url}/v2/health/live", timeout=10).json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert httpx.get(f"{server.url}/v1/models/churn", timeout=10).json()["ready"] is True


def test_metrics_count_outcomes_rows_and_scores(server, churn):
    labels = {"model_name": "churn", "model_version": "3"}
    before = {
        "ok": _metric(server, "ctloop_predictions_total", outcome="ok", **labels),
        "invalid": _metric(server, "ctloop_predictions_total", outcome="invalid", **labels),
        "rows": _metric(server, "ctloop_rows_scored_total", **labels),
        "scores": _metric(server, "ctloop_prediction_score_count", **labels),
        "latency": _metric(server, "ctloop_prediction_latency_seconds_count", **labels),
        "kserve": _metric(server, "request_predict_seconds_count", model_name="churn"),
    }
    objects, _ = _rows(churn, 120)
    assert _v1(server, {"instances": objects}).status_code == 200
    assert _v2(server, {"inputs": _v2_inputs(churn, 30)}).status_code == 200
    assert _v1(server, {"instances": []}).status_code == 400

    assert _metric(server, "ctloop_predictions_total", outcome="ok", **labels) == before["ok"] + 2
    invalid = _metric(server, "ctloop_predictions_total", outcome="invalid", **labels)
    assert invalid == before["invalid"] + 1
    assert _metric(server, "ctloop_rows_scored_total", **labels) == before["rows"] + 150
    assert _metric(server, "ctloop_prediction_score_count", **labels) == before["scores"] + 150
    latency = _metric(server, "ctloop_prediction_latency_seconds_count", **labels)
    assert latency == before["latency"] + 2
    everything = _metric(server, "ctloop_prediction_score_bucket", le="+Inf", **labels)
    assert 0 < _metric(server, "ctloop_prediction_score_bucket", le="0.5", **labels) < everything
    # KServe's own predict histogram counts every call, whichever route answered it.
    kserve = _metric(server, "request_predict_seconds_count", model_name="churn")
    assert kserve == before["kserve"] + 3


def _object_row(churn, **changes) -> dict:
    row = churn[2].slice(0, 1).to_pylist()[0]
    row.update(changes)
    return {name: value for name, value in row.items() if value != "DROP"}


V1_MALFORMED = {
    "empty batch": (lambda c: {"instances": []}, "'instances' is an empty batch"),
    "too many rows": (
        lambda c: {"instances": [_rows(c, 1)[1][0]] * 10_001},
        "has 10001 rows, over max_batch_rows=10000",
    ),
    "wrong feature count": (
        lambda c: {"instances": [_rows(c, 1)[1][0][:-1]]},
        "instance 0 has 18 values; the model takes 19 features",
    ),
    "unknown feature": (
        lambda c: {"instances": [_object_row(c, colour="red")]},
        "instance 0: unknown feature(s) ['colour']",
    ),
    "missing feature": (
        lambda c: {"instances": [_object_row(c, tenure="DROP")]},
        "instance 0: missing feature(s) ['tenure']",
    ),
    "text in numeric feature": (
        lambda c: {"instances": [_object_row(c, tenure="ten")]},
        "numeric feature 'tenure' has non-numeric value 'ten'",
    ),
    "number in categorical feature": (
        lambda c: {"instances": [_object_row(c, contract=2)]},
        "categorical feature 'contract' has value 2 of type int",
    ),
    "no instances": (lambda c: {"rows": []}, "must be a JSON object with 'instances'"),
    "misspelt option": (
        lambda c: {"instances": [_object_row(c)], "return_label": True},
        "unknown key(s) ['return_label']",
    ),
    "rows neither lists nor objects": (
        lambda c: {"instances": [1, 2]},
        "instance 0 is int; every instance must be a list",
    ),
    "value beyond float32": (
        lambda c: {"instances": [_object_row(c), _object_row(c, tenure=1e39)]},
        "instance 1: numeric feature 'tenure' is infinite or beyond float32's range",
    ),
}


@pytest.mark.parametrize("case", list(V1_MALFORMED))
def test_malformed_v1_request_gets_400_naming_the_problem(server, churn, case):
    build, message = V1_MALFORMED[case]
    answer = _v1(server, build(churn))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b'{"instances": [[1, 2]', "Unrecognized request format"),
        ("text/csv", b"1,2,3", "must be a JSON object with 'instances'"),
    ],
    ids=["body not JSON", "not a JSON content type"],
)
def test_v1_body_that_is_not_json_gets_400(server, content_type, body, message):
    answer = httpx.post(
        f"{server.url}/v1/models/churn:predict",
        content=body,
        headers={"content-type": content_type},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_v1_json_with_a_charset_is_json(server, churn):
    _, lists = _rows(churn, 2)
    answer = httpx.post(
        f"{server.url}/v1/models/churn:predict",
        content=json.dumps({"instances": lists}).encode(),
        headers={"content-type": "Application/JSON;charset=UTF-8"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["predictions"], churn[3][:2], atol=1e-6)


def test_v1_requests_the_fast_route_passes_on_get_kserve_answers(server, churn):
    _, lists = _rows(churn, 2)
    cloud_event = {"ce-specversion": "1.0", "ce-source": "tests", "ce-type": "t", "ce-id": "1"}
    event = httpx.post(
        f"{server.url}/v1/models/churn:predict",
        json={"instances": lists},
        headers=cloud_event,
        timeout=10,
    )
    structured = httpx.post(  # a structured CloudEvent: the event's data holds the request
        f"{server.url}/v1/models/churn:predict",
        json={
            **{key.removeprefix("ce-"): value for key, value in cloud_event.items()},
            "time": "2026-11-25T00:00:00Z",
            "data": {"instances": lists},
        },
        timeout=10,
    )
    missing = httpx.post(
        f"{server.url}/v1/models/nosuch:predict", json={"instances": lists}, timeout=10
    )

    assert event.status_code == 200, event.text
    assert event.headers["ce-specversion"] == "1.0"  # KServe answers a CloudEvent with one
    assert np.allclose(event.json()["predictions"], churn[3][:2], atol=1e-6)
    assert structured.status_code == 200, structured.text
    assert np.allclose(structured.json()["predictions"], churn[3][:2], atol=1e-6)
    assert missing.status_code == 404
    assert "nosuch" in missing.json()["error"]


def _without(inputs: list[dict], name: str) -> list[dict]:
    return [tensor for tensor in inputs if tensor["name"] != name]


def _changed(inputs: list[dict], name: str, **changes) -> list[dict]:
    return [{**tensor, **changes} if tensor["name"] == name else tensor for tensor in inputs]


V2_MALFORMED = {
    "matrix for a model with categoricals": (
        lambda c: {
            "inputs": [
                {"name": "input-0", "shape": [1, 19], "datatype": "FP32", "data": [0.0] * 19}
            ]
        },
        "this model has categorical features",
    ),
    "missing feature tensor": (
        lambda c: {"inputs": _without(_v2_inputs(c, 2), "tenure")},
        "missing input(s) ['tenure']",
    ),
    "unknown tensor": (
        lambda c: {
            "inputs": [
                *_v2_inputs(c, 2),
                {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            ]
        },
        "unknown input(s) ['colour']",
    ),
    "wrong datatype": (
        lambda c: {
            "inputs": _changed(_v2_inputs(c, 2), "tenure", datatype="BYTES", data=["1", "2"])
        },
        "input 'tenure' has datatype BYTES; expected one of ['FP32', 'FP64', 'INT32', 'INT64']",
    ),
    "wrong shape": (
        lambda c: {"inputs": _changed(_v2_inputs(c, 2), "tenure", shape=[1, 2])},
        "input 'tenure' has shape [1, 2]; expected [N] or [N, 1]",
    ),
    "rows differ between tensors": (
        lambda c: {"inputs": _changed(_v2_inputs(c, 2), "tenure", shape=[1], data=[3.0])},
        "input 'tenure' has 1 rows but input 'female' has 2",
    ),
    "data do not fill the shape": (
        lambda c: {"inputs": _changed(_v2_inputs(c, 2), "tenure", data=[3.0, 4.0, 5.0])},
        "input 'tenure': data do not fit shape [2]",
    ),
    "text in an FP32 tensor": (
        lambda c: {"inputs": _changed(_v2_inputs(c, 2), "tenure", data=["a", "b"])},
        "input 'tenure': data do not fit shape [2] and datatype FP32",
    ),
    "empty batch": (
        lambda c: {"inputs": [{**t, "shape": [0], "data": []} for t in _v2_inputs(c, 1)]},
        "input 'female' is an empty batch",
    ),
    "unknown output": (
        lambda c: {"inputs": _v2_inputs(c, 2), "outputs": [{"name": "scores"}]},
        "requested output(s) ['scores'] do not exist",
    ),
    "value beyond float32": (
        lambda c: {
            "inputs": _changed(_v2_inputs(c, 2), "tenure", datatype="FP64", data=[1.0, 1e39])
        },
        "row 1: numeric feature 'tenure' is infinite or beyond float32's range",
    ),
    "integer beyond float64": (
        lambda c: {"inputs": _changed(_v2_inputs(c, 2), "tenure", data=[1, 10**400])},
        "input 'tenure': a value is beyond float32's range",
    ),
}


@pytest.mark.parametrize("case", list(V2_MALFORMED))
def test_malformed_v2_request_gets_400_naming_the_problem(server, churn, case):
    build, message = V2_MALFORMED[case]
    answer = _v2(server, build(churn))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": 3}', "inputs: Input should be a valid list"),
        (b'{"inputs": [{"name": "tenure"}]}', "inputs.0.shape: Field required"),
        (b"not json", "body is not JSON: Expecting value"),
    ],
    ids=["inputs not a list", "tensor without shape", "not JSON"],
)
def test_v2_body_that_is_not_an_oip_request_gets_400_with_one_message(server, body, message):
    answer = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("not an Open Inference Protocol request: ")
    assert message in answer.json()["error"]


def _post_unfinished(server, path: str, headers: dict[str, str], parts=()) -> tuple[int, dict]:
    """POST `parts` of a body that never ends (its headers promise more); the answer."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=20)
    try:
        connection.putrequest("POST", path)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        for part in parts:
            connection.send(part)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


PATHS = ["/v1/models/churn:predict", "/v2/models/churn/infer"]


@pytest.mark.parametrize("path", PATHS, ids=["v1", "v2"])
def test_a_body_declared_over_the_limit_gets_413_before_any_of_it_is_sent(server, churn, path):
    declared = DEFAULT_MAX_BODY_BYTES + 1

    status, answer = _post_unfinished(server, path, {"Content-Length": str(declared)})

    assert status == 413
    assert f"request body of {declared} bytes is over this server's limit of " in answer["error"]
    assert _v1(server, {"instances": _rows(churn, 1)[1]}).status_code == 200  # still serving


@pytest.mark.parametrize("path", PATHS, ids=["v1", "v2"])
def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit(server, path):
    chunk = b"x" * (1 << 20)
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (DEFAULT_MAX_BODY_BYTES // len(chunk) + 1)

    status, answer = _post_unfinished(server, path, {"Transfer-Encoding": "chunked"}, chunks)

    assert status == 413
    assert "chunked request body is over this server's limit" in answer["error"]


@pytest.fixture
def gated_server(churn, tmp_path):
    script = tmp_path / "gated_server.py"
    script.write_text(GATED_SERVER)
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    command = [sys.executable, str(script), str(churn[0]), str(port), str(gate)]
    with running_server(command, port, output_path=tmp_path / "gated.log") as running:
        yield running, gate
        (gate / "release").touch()


def test_health_is_answered_while_a_large_batch_is_scored(gated_server, churn):
    server, gate = gated_server
    objects = churn[2].to_pylist()
    batch = (objects * 2)[:10_000]
    answers: list[httpx.Response] = []
    predict = threading.Thread(target=lambda: answers.append(_v1(server, {"instances": batch})))
    predict.start()
    deadline = time.monotonic() + 30
    while not (gate / "scoring-10000").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gate / "scoring-10000").exists(), server.output()

    ready = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
    live = httpx.get(f"{server.url}/", timeout=10)

    assert predict.is_alive()  # the batch is still being scored
    assert (ready.status_code, live.status_code) == (200, 200)
    (gate / "release").touch()
    predict.join(timeout=60)
    assert answers and answers[0].status_code == 200, server.output()
    assert answers[0].json()["model_version"] == "gated"
    assert np.allclose(answers[0].json()["predictions"][:7043], churn[3], atol=1e-6)
