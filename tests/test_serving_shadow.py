"""The shadow model, request ids, variants and the prediction log hand-off of the predictor.

In process: the served answers of a predictor with a shadow (slow, failing, with a full queue,
or unable to read the served rows) are those of a predictor without one, and its paired
metrics are what scoring the same rows with both models directly gives. One `ctloop serve`
child process checks the flags end to end over HTTP.
"""

import asyncio
import dataclasses
import logging
import sys
import threading
import time
import uuid

import httpx
import numpy as np
import pyarrow.dataset as ds
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import REGISTRY

from ctloop.components.contract.model_folder import ModelLoadingError, load_model
from ctloop.components.contract.model_input import FeatureSchema, predict_scores, to_frame
from ctloop.components.contract.prediction_log import row_hashes
from ctloop.components.table_io import read_table
from ctloop.pipelines.cli import build_parser
from ctloop.serving import server
from ctloop.serving.gathering_queue import GatheringQueue
from ctloop.serving.local_server import free_port, running_server
from ctloop.serving.predictor import CtloopPredictor
from ctloop.serving.request_decoding import RequestDecoder
from ctloop.serving.server_options import server_options
from ctloop.serving.shadow import ShadowScorer, local_shadow_dir
from tests.served_model import train_model_folder

ROWS = 400
WAIT_S = 60  # a bound on waiting for the shadow's thread, so a broken test fails, not hangs


@pytest.fixture(scope="module")
def models(tmp_path_factory, telco_churn_parquet):
    """(champion folder, challenger folder, Telco feature rows): the challenger is trained
    without `tenure`, so it scores differently and takes a subset of the champion's features."""
    table = read_table(str(telco_churn_parquet))
    root = tmp_path_factory.mktemp("shadow")
    _, features = train_model_folder(root / "champion", table)
    train_model_folder(root / "challenger", table, drop_columns=["tenure"])
    (root / "champion" / "version.txt").write_text("3\n")
    (root / "challenger" / "version.txt").write_text("4\n")
    return root / "champion", root / "challenger", features.slice(0, ROWS)


def _predictor(name: str, served, shadow=None, **options) -> CtloopPredictor:
    predictor = CtloopPredictor(name, served, shadow_model_dir=shadow, **options)
    predictor.load()
    return predictor


def _answer(predictor: CtloopPredictor, rows: list[dict], headers=None) -> dict:
    return asyncio.run(predictor.predict({"instances": rows}, headers))


def _answers(predictor: CtloopPredictor, rows: list[dict], batch: int) -> np.ndarray:
    scores = [
        _answer(predictor, rows[start : start + batch])["predictions"]
        for start in range(0, len(rows), batch)
    ]
    return np.concatenate(scores)


def _sample(name: str, metric: str, **labels) -> float:
    value = REGISTRY.get_sample_value(metric, {"model_name": name, **labels})
    return 0.0 if value is None else value


def _figures(name: str) -> dict[str, float]:
    labels = {"model_version": "3", "shadow_version": "4"}
    count = _sample(name, "ctloop_shadow_abs_score_difference_count", **labels)
    total = _sample(name, "ctloop_shadow_abs_score_difference_sum", **labels)
    return {
        "compared": _sample(name, "ctloop_shadow_rows_compared_total", **labels),
        "skipped": _sample(name, "ctloop_shadow_rows_skipped_total", **labels),
        "errors": _sample(name, "ctloop_shadow_errors_total", **labels),
        "disagreements": _sample(name, "ctloop_shadow_disagreements_total", **labels),
        # a histogram with negative bounds has no _sum or _count (OpenMetrics): +Inf counts
        "differences": _sample(name, "ctloop_shadow_score_difference_bucket", le="+Inf", **labels),
        "mean_abs_difference": total / count if count else float("nan"),
    }


@pytest.fixture(scope="module")
def unshadowed(models):
    """The champion's answers to the rows, in batches of 7, from a predictor without shadow."""
    champion, _, features = models
    return _answers(_predictor("plain", champion), features.to_pylist(), 7)


def test_paired_metrics_equal_an_offline_comparison_of_the_same_rows(models, unshadowed):
    champion, challenger, features = models
    predictor = _predictor("paired", champion, challenger)
    answers = _answers(predictor, features.to_pylist(), 7)
    assert predictor.side_outputs.shadow.wait_idle(WAIT_S)

    served_model, shadow_model = load_model(champion), load_model(challenger)
    served = predict_scores(served_model.booster, to_frame(features, served_model.schema))
    shadow = predict_scores(shadow_model.booster, to_frame(features, shadow_model.schema))
    figures = _figures("paired")
    assert np.array_equal(answers, unshadowed)
    assert figures["compared"] == figures["differences"] == ROWS
    assert figures["skipped"] == figures["errors"] == 0
    assert figures["disagreements"] == np.count_nonzero((served >= 0.5) != (shadow >= 0.5)) > 0
    assert figures["mean_abs_difference"] == pytest.approx(np.mean(np.abs(shadow - served)), 1e-5)
    assert figures["mean_abs_difference"] > 0.001  # the challenger really differs


def test_a_slow_shadow_and_a_full_queue_leave_answers_alone_and_count_skipped_rows(
    models, unshadowed
):
    champion, challenger, features = models
    predictor = _predictor("slow", champion, challenger, shadow_queue_rows=14)
    shadow = predictor.side_outputs.shadow
    entered, release = threading.Event(), threading.Event()
    score = shadow.scores

    def slow_scores(matrix):
        entered.set()
        assert release.wait(WAIT_S)
        return score(matrix)

    shadow.scores = slow_scores
    deadline = threading.Timer(WAIT_S, release.set)  # were answers to wait, they would come late
    deadline.start()
    rows = features.to_pylist()[:35]
    first = _answer(predictor, rows[:7])["predictions"]  # the thread takes it and waits
    assert entered.wait(WAIT_S)
    rest = [_answer(predictor, rows[start : start + 7])["predictions"] for start in (7, 14, 21, 28)]
    # answered while the shadow is stuck: 7 + 7 rows queued (the queue's 14), 14 skipped
    skipped = _figures("slow")["skipped"]
    release.set()
    deadline.cancel()
    assert shadow.wait_idle(WAIT_S)

    assert np.array_equal(np.concatenate([first, *rest]), unshadowed[:35])
    assert skipped == 14
    assert _figures("slow")["compared"] == 21


def test_a_failing_shadow_leaves_answers_alone_counts_its_rows_and_logs_once(
    models, unshadowed, caplog
):
    champion, challenger, features = models
    predictor = _predictor("failing", champion, challenger)
    shadow = predictor.side_outputs.shadow

    def failing_scores(matrix):
        raise RuntimeError("out of memory")

    shadow.scores = failing_scores
    with caplog.at_level(logging.WARNING, logger="ctloop.serving.shadow"):
        answers = []
        for start in range(0, 70, 7):
            answers.append(_answer(predictor, features.to_pylist()[start : start + 7]))
            assert shadow.wait_idle(WAIT_S)  # one failure per batch, each logged at most once

    assert np.array_equal(np.concatenate([a["predictions"] for a in answers]), unshadowed[:70])
    assert _figures("failing")["errors"] == 70
    assert _figures("failing")["compared"] == 0
    failures = [record for record in caplog.records if "out of memory" in record.getMessage()]
    assert len(failures) == 1


def test_a_shadow_needing_a_feature_the_requests_lack_counts_errors_and_says_so_once(
    models, caplog
):
    champion, challenger, features = models
    with caplog.at_level(logging.WARNING, logger="ctloop.serving.shadow"):
        predictor = _predictor("lacking", challenger, champion, version="3", shadow_version="4")
        rows = features.drop_columns(["tenure"]).to_pylist()
        for start in range(0, 21, 7):
            assert len(_answer(predictor, rows[start : start + 7])["predictions"]) == 7
        assert predictor.side_outputs.shadow.wait_idle(WAIT_S)

    assert _figures("lacking")["errors"] == 21
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "needs feature(s) ['tenure']" in messages[0]


def test_the_shadow_gets_the_rows_in_its_own_feature_order_and_category_codes(models):
    champion, _, features = models
    served = load_model(champion)
    categorical = sorted(served.schema.categories)
    recoded = categorical[0]  # a category list of another order, one category short
    shadow_schema = FeatureSchema(
        list(reversed(served.schema.features)),
        {**served.schema.categories, recoded: served.schema.categories[recoded][:0:-1]},
    )
    shadow = ShadowScorer(
        dataclasses.replace(served, schema=shadow_schema),
        served,
        model_name="recoded",
        model_version="3",
        shadow_version="4",
        queue_rows=1000,
    )
    received = []
    shadow.scores = lambda matrix: received.append(matrix) or np.zeros(len(matrix))
    rows = features.slice(0, 50)
    matrix = RequestDecoder(served.schema, 1000).from_instances(rows.to_pylist())
    shadow.submit(matrix, np.zeros(50, dtype=np.float32))
    assert shadow.wait_idle(WAIT_S)

    frame = to_frame(rows, shadow_schema)
    expected = np.column_stack(
        [
            frame[name].cat.codes.replace(-1, np.nan) if name in categorical else frame[name]
            for name in shadow_schema.features
        ]
    ).astype(np.float32)
    assert np.isnan(expected[:, shadow_schema.features.index(recoded)]).any()
    np.testing.assert_array_equal(received[0], expected)


def test_closing_a_gathering_queue_hands_over_what_is_pending_and_refuses_more():
    handled, skipped = [], []
    queue = GatheringQueue("test-queue", 10, handled.extend, skipped.append)
    for item in ("a", "b", "c"):
        queue.put(3, item)
    queue.put(3, "over the 10 rows")
    queue.close(WAIT_S)
    queue.put(1, "after close")
    assert handled == ["a", "b", "c"]
    assert skipped == [3, 1]


def test_a_shadow_that_cannot_be_loaded_stops_the_start_up(models, tmp_path):
    champion, _, _ = models
    with pytest.raises(ModelLoadingError, match="^shadow model: .*empty"):
        _predictor("unloadable", champion, tmp_path / "empty")


def test_a_shadow_on_a_pyarrow_filesystem_is_copied_to_a_local_folder(models, tmp_path):
    _, challenger, _ = models
    local = local_shadow_dir(f"local://{challenger}", tmp_path)
    assert local.parent == tmp_path
    assert load_model(local).version == "4"
    with pytest.raises(ModelLoadingError, match="nothing there"):
        local_shadow_dir(f"local://{tmp_path}/absent", tmp_path)


def test_answers_carry_the_callers_request_id_or_a_new_one_and_the_variant(models):
    champion, _, features = models
    predictor = _predictor("tagged", champion, variant="3")
    rows = features.to_pylist()[:2]

    given = _answer(predictor, rows, {"x-request-id": "order-17"})
    generated = _answer(predictor, rows)

    assert given["request_id"] == "order-17"
    assert uuid.UUID(generated["request_id"]).version == 4
    assert given["variant"] == generated["variant"] == "3"
    assert "variant" not in _answer(_predictor("untagged", champion), rows)


def _v2_inputs(rows) -> list[dict]:
    """One v2 JSON input per feature of the Telco rows (categorical ones as BYTES)."""
    inputs = []
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        values = column.to_pylist()
        numeric = all(isinstance(value, int | float) for value in values)
        datatype = "FP32" if numeric else "BYTES"
        inputs.append({"name": name, "shape": [len(values)], "datatype": datatype, "data": values})
    return inputs


def _v2_request(rows, request_id=None) -> InferRequest:
    inputs = [InferInput(**tensor) for tensor in _v2_inputs(rows)]
    return InferRequest("tagged", inputs, request_id=request_id)


def test_v2_answers_carry_the_request_id_and_the_variant_parameter(models):
    champion, _, features = models
    predictor = _predictor("tagged-v2", champion, variant="3")

    def answer(request_id, headers=None):
        request = _v2_request(features.slice(0, 3), request_id)
        body, _ = asyncio.run(predictor.predict(request, headers)).to_rest()
        return body

    assert answer("from-body")["id"] == "from-body"
    assert answer("from-body", {"x-request-id": "from-header"})["id"] == "from-header"
    assert uuid.UUID(answer(None)["id"]).version == 4
    assert answer(None)["parameters"] == {"variant": "3"}


class RecordingLog:
    """Stands in for `ctloop.serving.prediction_log.PredictionLog`: keeps what it is given."""

    def __init__(self):
        self.records = []

    def record(self, **entry):
        self.records.append(entry)

    def close(self):
        pass


def test_every_scored_batch_goes_to_the_prediction_log_with_its_model_input(models):
    champion, _, features = models
    log = RecordingLog()
    predictor = _predictor("logged", champion, variant="3", prediction_log=log)
    sizes = (5, 1, 3)  # requests in one round share a frame, each is recorded with its rows
    starts = np.cumsum((0, *sizes[:-1]))
    batches = [features.slice(start, size) for start, size in zip(starts, sizes, strict=True)]

    answers = [
        _answer(predictor, rows.to_pylist(), {"x-request-id": f"r{index}"})
        for index, rows in enumerate(batches)
    ]
    assert predictor.side_outputs.wait_idle(WAIT_S)

    schema = load_model(champion).schema
    assert [entry["request_id"] for entry in log.records] == ["r0", "r1", "r2"]
    for entry, rows, answer in zip(log.records, batches, answers, strict=True):
        assert (entry["variant"], entry["model_version"]) == ("3", "3")
        assert row_hashes(entry["frame"]) == row_hashes(to_frame(rows, schema))
        assert np.array_equal(entry["scores"], answer["predictions"])


def test_a_prediction_log_that_fails_does_not_fail_the_request(models, unshadowed):
    champion, _, features = models

    class Broken(RecordingLog):
        def record(self, **entry):
            raise OSError("disk full")

    predictor = _predictor("broken-log", champion, prediction_log=Broken())
    answer = _answer(predictor, features.to_pylist()[:7])
    assert predictor.side_outputs.wait_idle(WAIT_S)
    assert np.array_equal(answer["predictions"], unshadowed[:7])
    assert _answer(predictor, features.to_pylist()[:7])["predictions"] == answer["predictions"]


def _serve_options(*flags: str) -> dict:
    return server_options(build_parser().parse_args(["serve", "--model-uri", "m", *flags]))


def test_shadow_flags_are_checked_before_any_model_is_loaded():
    with pytest.raises(ValueError, match="--shadow-queue-rows 0 must be >= 1"):
        _serve_options("--shadow-model-uri", "s", "--shadow-queue-rows", "0")
    with pytest.raises(ValueError, match="--shadow-version .* give both"):
        _serve_options("--shadow-version", "4")
    options = _serve_options("--shadow-model-uri", "s3://b/m", "--variant", "3")
    assert options["shadow_model_uri"] == "s3://b/m"
    assert options["variant"] == "3"
    assert options["prediction_log_uri"] is None
    entrypoint = server.build_parser().parse_args(
        ["--model-dir", "m", "--name", "n", "--shadow-model-uri", "gs://b/m", "--variant", "4"]
    )
    changed = {"name": "n", "shadow_model_uri": "gs://b/m", "variant": "4"}
    assert server_options(entrypoint) == {**options, **changed}


def test_ctloop_serve_with_a_shadow_a_variant_and_a_prediction_log(models, tmp_path):
    champion, challenger, features = models
    port = free_port()
    log_dir = tmp_path / "log"
    command = [sys.executable, "-m", "ctloop", "serve", "--model-uri", str(champion)]
    command += ["--name", "churn", "--port", str(port), "--shadow-model-uri", str(challenger)]
    command += ["--variant", "3", "--prediction-log-uri", str(log_dir)]
    rows = features.slice(0, 9).to_pylist()
    with running_server(command, port) as server:
        v1 = httpx.post(
            f"{server.url}/v1/models/churn:predict",
            json={"instances": rows},
            headers={"X-Request-Id": "call-1"},
            timeout=30,
        ).json()
        v2 = httpx.post(
            f"{server.url}/v2/models/churn/infer",
            json={"id": "body-id", "inputs": _v2_inputs(features.slice(9, 1))},
            headers={"X-Request-Id": "call-2"},
            timeout=30,
        ).json()
        compared = 'ctloop_shadow_rows_compared_total{model_name="churn",model_version="3",'
        compared += 'shadow_version="4"} 10.0'
        for _ in range(WAIT_S * 10):  # the shadow scores off the request path, in rounds
            metrics_text = httpx.get(f"{server.url}/metrics", timeout=10).text
            if compared in metrics_text:
                break
            time.sleep(0.1)
    assert (v1["request_id"], v1["variant"], v1["model_version"]) == ("call-1", "3", "3")
    assert (v2["id"], v2["parameters"], v2["model_version"]) == ("call-2", {"variant": "3"}, "3")
    assert compared in metrics_text
    logged = ds.dataset(log_dir, format="parquet", partitioning="hive").to_table()
    logged = logged.sort_by([("request_id", "ascending"), ("row", "ascending")])
    assert logged.column("request_id").to_pylist() == ["call-1"] * 9 + ["call-2"]
    assert np.allclose(logged.column("score").to_pylist()[:9], v1["predictions"])
