"""Where a scored batch goes besides the caller's answer: the shadow and the prediction log.

Both take the batch off the request path (a bounded queue each, a background thread each) and
neither may slow or fail the request, so `SideOutputs.send` guards each one: an exception is
logged once per message and the answer goes out as scored.

The prediction log takes the rows as a pandas frame in the model contract's input form
(`ctloop.components.contract.model_input.to_frame`: numeric features float, categorical ones
`pandas.Categorical` over the model's category list), so a row's inputs hash the same whichever
variant served it, even when the variants' category lists differ. Building that frame costs
more than scoring a small batch (docs/performance.md), so it is built only when a prediction
log is configured.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pandas as pd

from ctloop.components.contract.model_input import FeatureSchema
from ctloop.serving.shadow import ShadowScorer

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

    def send(
        self, request_id: str, model_version: str | None, matrix: np.ndarray, scores: np.ndarray
    ) -> None:
        """Offer the batch to each side output; never raises."""
        if self.shadow is not None:
            self.shadow.submit(matrix, scores)  # never raises
        if self.prediction_log is not None:
            try:
                self.prediction_log.record(
                    request_id=request_id,
                    variant=self.variant,
                    model_version=model_version,
                    frame=matrix_frame(matrix, self.schema),
                    scores=scores,
                )
            except Exception as error:  # noqa: BLE001 - the answer goes out regardless
                self._log_once("prediction log failed to take a batch", error)

    def close(self) -> None:
        """Stop the shadow; the prediction log belongs to whoever made it."""
        if self.shadow is not None:
            self.shadow.close()

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
