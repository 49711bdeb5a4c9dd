"""Where a scored batch goes besides the caller's answer: the shadow and the prediction log.

Both take the batch off the request path, through a `GatheringQueue` each (bounded, drained in
rounds by a background thread), so neither can slow or fail the request.

The prediction log takes the rows as a pandas frame in the model contract's input form
(`ctloop.components.contract.model_input.to_frame`: numeric features float32, categorical
ones `pandas.Categorical` over the model's category list), so a row's inputs hash the same
whichever variant served it, even when the variants' category lists differ. Building that
frame costs more than answering a small request (about 0.9 ms with 15 categorical features,
whatever the rows: docs/performance.md), so it is built off the request path, once per round
for all the round's requests, each of which is then recorded with its slice of it; `record`
is called up to 50 ms after the answer, and stamps that time.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pandas as pd

from ctloop.components.contract.model_input import FeatureSchema
from ctloop.serving import metrics
from ctloop.serving.gathering_queue import GatheringQueue
from ctloop.serving.shadow import ShadowScorer

LOG_QUEUE_ROWS = 20_000
"""Rows that may wait to be handed to the prediction log; a batch that does not fit is
skipped and counted (`ctloop_prediction_log_rows_skipped_total`)."""

logger = logging.getLogger(__name__)


class PredictionRecorder(Protocol):
    """What the predictor needs of a prediction log (`ctloop.serving.prediction_log`)."""

    def record(
        self,
        *,
        request_id: str,
        variant: str,
        model_version: str | None,
        frame: pd.DataFrame,
        scores: np.ndarray,
    ) -> None: ...

    def close(self) -> None: ...


class SideOutputs:
    """Hands each scored batch to the shadow and the prediction log, whichever are set."""

    def __init__(
        self,
        schema: FeatureSchema,
        *,
        shadow: ShadowScorer | None = None,
        prediction_log: PredictionRecorder | None = None,
        variant: str | None = None,
    ) -> None:
        self.schema = schema
        self.shadow = shadow
        self.prediction_log = prediction_log
        self.variant = variant or ""
        self._logged: set[str] = set()
        self.log_queue = None
        if prediction_log is not None:
            self.log_queue = GatheringQueue(
                "ctloop-prediction-log",
                LOG_QUEUE_ROWS,
                self._record_round,
                metrics.PREDICTION_LOG_ROWS_SKIPPED.inc,
            )

    def send(
        self, request_id: str, model_version: str | None, matrix: np.ndarray, scores: np.ndarray
    ) -> None:
        """Offer the batch to each side output; never waits, never raises."""
        if self.shadow is not None:
            self.shadow.submit(matrix, scores)
        if self.log_queue is not None:
            self.log_queue.put(len(scores), (request_id, model_version, matrix, scores))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the side outputs have taken every batch sent so far (for tests)."""
        queues = [queue for queue in (self.log_queue, self.shadow and self.shadow.queue) if queue]
        return all(queue.wait_idle(timeout_s) for queue in queues)

    def close(self) -> None:
        """Stop the threads; the prediction log itself belongs to whoever made it."""
        if self.shadow is not None:
            self.shadow.close()
        if self.log_queue is not None:
            self.log_queue.close()

    def _record_round(self, entries: list[tuple[str, str | None, np.ndarray, np.ndarray]]) -> None:
        """Build one frame for the round's rows and record each request with its slice."""
        assert self.prediction_log is not None  # the queue exists only with a log
        frame = matrix_frame(np.concatenate([matrix for _, _, matrix, _ in entries]), self.schema)
        start = 0
        for request_id, model_version, _, scores in entries:
            stop = start + len(scores)
            try:
                self.prediction_log.record(
                    request_id=request_id,
                    variant=self.variant,
                    model_version=model_version,
                    frame=frame if len(entries) == 1 else frame.iloc[start:stop],
                    scores=scores,
                )
            except Exception as error:  # noqa: BLE001 - one line per message, not per request
                self._log_once("prediction log failed to take a batch", error)
            start = stop

    def _log_once(self, what: str, error: Exception) -> None:
        message = f"{type(error).__name__}: {error}"
        if message not in self._logged:
            self._logged.add(message)
            logger.warning("%s (the request was answered): %s", what, message)


def matrix_frame(matrix: np.ndarray, schema: FeatureSchema) -> pd.DataFrame:
    """The rows of a decoded request matrix as the model contract's input frame."""
    if not schema.categories:  # one float32 block: several times cheaper than column by column
        return pd.DataFrame(matrix, columns=schema.features, copy=False)
    columns = {}
    for index, name in enumerate(schema.features):
        column = matrix[:, index]
        dtype = schema.dtype(name)
        if dtype is None:
            columns[name] = column
        else:
            codes = np.where(np.isnan(column), -1, column).astype(np.int32)
            columns[name] = pd.Categorical.from_codes(codes, dtype=dtype)
    return pd.DataFrame(columns, copy=False)
