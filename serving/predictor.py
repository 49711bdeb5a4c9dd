"""`CtloopPredictor`: a KServe model that scores ctloop XGBoost models over v1 and v2.

Requests (all features required, in the profile's `feature_order`; null = missing value;
categorical values are strings, an unseen category counts as missing):

- v1 `POST /v1/models/<name>:predict`
  `{"instances": [[v1, v2, ...], ...]}` (values in feature order) or
  `{"instances": [{"tenure": 3, "contract": "One year", ...}, ...]}`, plus optional
  `"return_labels": true`. Answer: `{"predictions": [p, ...], "model_version": "7",
  "request_id": "..."}` and, when asked, `"labels": [0|1, ...]` (1 where p >= 0.5).
  With a feature lookup (`ctloop.serving.feature_lookup`), instances may be entity keys only,
  `[{"customer_id": 17}, ...]`: their features come from Feast's online store.
- v2 (Open Inference Protocol) `POST /v2/models/<name>/infer`
  all-numeric model: one input `input-0`, FP32 [N, F]; any model: one input per feature,
  named by the feature, shape [N] (or [N, 1]), FP32 for numeric features, BYTES for
  categorical ones (FP64/INT32/INT64 are accepted for numeric data too). Outputs
  `probabilities` FP32 [N] and, for binary:logistic models, `labels` INT32 [N]; as the
  protocol says, both unless the request's `outputs` names one. The response's
  `model_version` is the served version, its `id` the request id. `GET /v2/models/<name>`
  lists these tensors.

Every answer carries a request id: the caller's `X-Request-Id` header, else a v2 request's
`id`, else a new uuid4; with a `variant` (an A/B experiment's arm), v1 answers carry
`"variant"` and v2 answers `parameters.variant`. After a batch is scored, its rows go to the
shadow model and the prediction log when these are set (`ctloop.serving.side_outputs`), off
the request path: neither can slow, fail or change an answer.

A booster without feature names and without a profile takes rows by position only (v1 lists,
v2 `input-0`), as KServe's xgbserver does. The served version is the one given, recorded in
`version.txt` or by the registry; when none is, responses carry `"model_version": null`
rather than a made-up one, the start-up log says so, and the metrics' `model_version` label
is empty (`metrics.NO_VERSION`).

A batch has at most `max_batch_rows` rows (default 10,000); anything malformed is an HTTP 400
whose message names the problem. Batches run in a worker thread so the event loop keeps
answering health probes while a large batch is scored (XGBoost releases the GIL in
`inplace_predict`), except a small one (up to `inline_rows`) that arrives while no batch is in
a worker thread: it is scored on the event loop, which saves the hop to a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import xgboost as xgb
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from ctloop.components.contract.model_folder import (
    UNKNOWN_VERSION,
    VERSION_FILE,
    LoadedModel,
    describe,
    load_model,
)
from ctloop.serving import metrics
from ctloop.serving.cpu_limit import usable_cpus
from ctloop.serving.feature_lookup import FeatureLookup
from ctloop.serving.request_decoding import MATRIX_INPUT, InvalidRequest, RequestDecoder
from ctloop.serving.request_fields import request_id_of, rows_claimed, v1_fields
from ctloop.serving.server_options import DEFAULT_MAX_BATCH_ROWS, DEFAULT_SHADOW_QUEUE_ROWS
from ctloop.serving.shadow import load_shadow
from ctloop.serving.side_outputs import PredictionRecorder, SideOutputs

DEFAULT_PARALLEL_ROWS = 50
"""Batches up to this size are scored on one thread, larger ones on `usable_cpus()` threads:
below it a second OpenMP thread saves next to nothing and costs CPU, above it the saving grows
with the batch (measured by tests/benchmarks/bench_serving.py: docs/performance.md)."""

DEFAULT_INLINE_ROWS = 100
"""Batches up to this size are scored on the event loop while no batch is in a worker thread:
they block the loop for less than a probe notices, and skipping the hop to a thread is a
measurable share of a small request's time (docs/performance.md)."""

PROBABILITIES = "probabilities"
LABELS = "labels"
LABEL_THRESHOLD = 0.5

logger = logging.getLogger(__name__)


class CtloopPredictor(kserve.Model):
    """Serves one model folder (see `ctloop.components.contract.model_folder`) under `name`."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        version: str | None = None,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        parallel_rows: int = DEFAULT_PARALLEL_ROWS,
        inline_rows: int = DEFAULT_INLINE_ROWS,
        nthread: int | None = None,
        shadow_model_dir: str | Path | None = None,
        shadow_version: str | None = None,
        shadow_queue_rows: int = DEFAULT_SHADOW_QUEUE_ROWS,
        variant: str | None = None,
        prediction_log: PredictionRecorder | None = None,
        feature_lookup: FeatureLookup | None = None,
    ) -> None:
        """
        Args:
            name: The model name in the URLs (`/v1/models/<name>:predict`).
            model_dir: Local model folder (`model.json` + `reference_profile.json`, or MLflow).
            version: Version to report; default `version.txt` in the folder, else none.
            max_batch_rows: Most rows per request; larger batches get HTTP 400.
            parallel_rows: Batches larger than this use `nthread` threads, others one.
            inline_rows: Batches up to this size are scored on the event loop when no batch
                is in a worker thread; 0 sends every batch to a worker thread.
            nthread: XGBoost threads for large batches; default: `usable_cpus()`.
            shadow_model_dir: Local model folder of a shadow model to compare with, or None.
            shadow_version: The shadow's version in the metrics; default: its recorded one.
            shadow_queue_rows: Most rows waiting for the shadow; more are skipped.
            variant: The A/B variant this server is, tagged on every answer; None: untagged.
            prediction_log: Where every scored row is recorded (`record`/`close`), or None.
            feature_lookup: Where v1 instances holding only entity keys get their features
                (`ctloop.serving.feature_lookup`), or None: features must be sent.
        """
        super().__init__(name)
        if nthread is not None and nthread < 1:
            raise ValueError(f"scoring threads = {nthread} must be >= 1")
        self.model_dir = Path(model_dir)
        self.version: str | None = version
        self.max_batch_rows = max_batch_rows
        self.parallel_rows = parallel_rows
        self.inline_rows = inline_rows
        self.nthread = nthread or usable_cpus()
        self._requested_version = version
        self._model: LoadedModel | None = None
        self._decoder: RequestDecoder | None = None
        self._serial: xgb.Booster | None = None
        self._parallel: xgb.Booster | None = None
        self._in_threads = 0  # batches now in worker threads (changed on the event loop only)
        self._metric_version = version or metrics.NO_VERSION
        self.shadow_model_dir = shadow_model_dir
        self.shadow_version = shadow_version
        self.shadow_queue_rows = shadow_queue_rows
        self.variant = variant
        self.prediction_log = prediction_log
        self.feature_lookup = feature_lookup
        self.side_outputs: SideOutputs | None = None

    def load(self) -> bool:
        model = load_model(self.model_dir, self._requested_version)
        if self.feature_lookup is not None:
            self.feature_lookup.open()
        self._decoder = RequestDecoder(
            model.schema, self.max_batch_rows, named_features=model.named_features
        )
        # Two handles, each with a fixed thread count: inplace_predict is safe to call from
        # several threads at once, changing a booster's parameters between calls is not.
        self._serial = model.booster
        self._serial.set_param({"nthread": 1})
        self._parallel = model.booster.copy()
        self._parallel.set_param({"nthread": self.nthread})
        self._model = model
        self.version = None if model.version == UNKNOWN_VERSION else model.version
        self._metric_version = self.version or metrics.NO_VERSION
        logger.info("model %r loaded: %s", self.name, describe(model))
        if self.version is None:
            logger.warning(
                "model %r has no version: none given (--version), no %s in %s and no "
                "registered version; responses carry model_version null",
                self.name,
                VERSION_FILE,
                self.model_dir,
            )
        if not model.named_features:
            logger.warning(
                "model %r: the booster records no feature names; it takes rows by position "
                "only (v1 lists of %d values, v2 %r)",
                self.name,
                len(model.schema.features),
                MATRIX_INPUT,
            )
        shadow = None
        if self.shadow_model_dir is not None:
            shadow = load_shadow(
                self.shadow_model_dir,
                self.shadow_version,
                model,
                model_name=self.name,
                model_version=self._metric_version,
                queue_rows=self.shadow_queue_rows,
            )
        self.side_outputs = SideOutputs(
            model.schema, shadow=shadow, prediction_log=self.prediction_log, variant=self.variant
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """KServe's unload (SIGTERM): stop the shadow's thread."""
        if self.side_outputs is not None:
            self.side_outputs.close()
        super().stop()

    @property
    def labels_supported(self) -> bool:
        return self._loaded().objective == "binary:logistic"

    def get_input_types(self) -> list[dict[str, Any]]:
        decoder = self._ready_decoder()
        features = decoder.schema.features
        if decoder.numeric_only:
            return [{"name": MATRIX_INPUT, "datatype": "FP32", "shape": [-1, len(features)]}]
        return [
            {
                "name": name,
                "datatype": "BYTES" if name in decoder.schema.categories else "FP32",
                "shape": [-1],
            }
            for name in features
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1]}]
        if self.labels_supported:
            outputs.append({"name": LABELS, "datatype": "INT32", "shape": [-1]})
        return outputs

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        """Decode, score and answer; count the outcome either way.

        A batch of at most `inline_rows` rows is handled on the event loop when no other batch
        is in a worker thread; any other batch goes to a worker thread, so that probes are
        answered while a large batch is scored and concurrent requests overlap with the event
        loop's HTTP work."""
        handle = self._predict_v2 if isinstance(payload, InferRequest) else self._predict_v1
        request_id = request_id_of(payload, headers)
        try:
            if self._in_threads == 0 and rows_claimed(payload) <= self.inline_rows:
                return handle(payload, request_id)
            self._in_threads += 1
            try:
                return await asyncio.to_thread(handle, payload, request_id)
            finally:
                self._in_threads -= 1
        except InvalidInput:
            self._count("invalid")
            raise
        except Exception:
            self._count("error")
            raise

    def _predict_v1(self, body: Any, request_id: str) -> dict[str, Any]:
        started = time.perf_counter()
        instances, return_labels = v1_fields(body)
        if return_labels:
            self._check_labels_supported()
        if self.feature_lookup is not None and self.feature_lookup.asks_for_lookup(instances):
            instances = self.feature_lookup.features_for(instances)
        matrix = self._ready_decoder().from_instances(instances)
        scores = self._score(matrix)
        response: dict[str, Any] = {
            "predictions": scores.tolist(),
            "model_version": self.version,
            "request_id": request_id,
        }
        if self.variant is not None:
            response["variant"] = self.variant
        if return_labels:
            response[LABELS] = _labels(scores).tolist()
        self._record(request_id, matrix, scores, started)
        return response

    def _predict_v2(self, request: InferRequest, request_id: str) -> InferResponse:
        started = time.perf_counter()
        wanted = self._requested_output_names(request)
        matrix = self._ready_decoder().from_tensors(request.inputs)
        scores = self._score(matrix)
        outputs = []
        if PROBABILITIES in wanted:
            outputs.append(InferOutput(PROBABILITIES, [len(scores)], "FP32", data=scores))
        if LABELS in wanted:
            outputs.append(InferOutput(LABELS, [len(scores)], "INT32", data=_labels(scores)))
        self._record(request_id, matrix, scores, started)
        return InferResponse(
            response_id=request_id,
            model_name=self.name,
            infer_outputs=outputs,
            model_version=self.version,
            parameters=None if self.variant is None else {"variant": self.variant},
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def _requested_output_names(self, request: InferRequest) -> list[str]:
        available = [output["name"] for output in self.get_output_types()]
        if not request.request_outputs:
            return available
        names = [output.name for output in request.request_outputs]
        unknown = [name for name in names if name not in available]
        if unknown:
            raise InvalidRequest(
                f"requested output(s) {unknown} do not exist; this model has {available}"
            )
        return names

    def _check_labels_supported(self) -> None:
        if not self.labels_supported:
            raise InvalidRequest(
                f"labels need a binary:logistic model; this one is {self._loaded().objective}"
            )

    def _score(self, matrix: np.ndarray) -> np.ndarray:
        booster = self._serial if len(matrix) <= self.parallel_rows else self._parallel
        assert booster is not None  # set by load(), as was the decoder that built `matrix`
        scores = booster.inplace_predict(matrix, iteration_range=self._loaded().iteration_range)
        return np.asarray(scores, dtype=np.float32)

    def _record(
        self, request_id: str, matrix: np.ndarray, scores: np.ndarray, started: float
    ) -> None:
        """Count the scored batch, then hand it to the side outputs (off the request path)."""
        version = self._metric_version
        metrics.LATENCY.labels(self.name, version).observe(time.perf_counter() - started)
        metrics.ROWS_SCORED.labels(self.name, version).inc(len(scores))
        metrics.SCORES.observe_many(self.name, version, scores)
        self._count("ok")
        assert self.side_outputs is not None  # set by load(), as was the decoder
        self.side_outputs.send(request_id, self.version, matrix, scores)

    def _count(self, outcome: str) -> None:
        metrics.PREDICTIONS.labels(self.name, self._metric_version, outcome).inc()

    def _loaded(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError(f"model {self.name!r} is used before load()")
        return self._model

    def _ready_decoder(self) -> RequestDecoder:
        if self._decoder is None:
            raise RuntimeError(f"model {self.name!r} is used before load()")
        return self._decoder


def _labels(scores: np.ndarray) -> np.ndarray:
    return (scores >= LABEL_THRESHOLD).astype(np.int32)
