"""Rows become model input here, and only here: training, evaluation, scoring and serving.

Categorical codes always follow the reference profile's category list (a category unseen at
training time becomes missing, never a new code), and numeric features are float32, exactly as
training saw them; `predict_scores` honours early stopping for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb


class ModelInputError(ValueError):
    """Rows, or a profile, that cannot be turned into the model's input."""


@dataclass(frozen=True)
class FeatureSchema:
    """The model's input columns, in training order, and each categorical's category list."""

    features: list[str]
    categories: dict[str, list[str]]

    def dtype(self, feature: str) -> pd.CategoricalDtype | None:
        """The pandas dtype of a categorical feature; None for a numeric one."""
        if feature not in self.categories:
            return None
        return pd.CategoricalDtype(categories=self.categories[feature])


def to_frame(batch: pa.RecordBatch | pa.Table, schema: FeatureSchema) -> pd.DataFrame:
    """Turn Arrow rows into the model's input frame.

    Numeric features become float32 (nulls -> NaN); categorical features become
    `pd.Categorical` over the profile's categories (nulls and unseen values -> NaN).
    Columns not in the schema are dropped; the frame's column order is the training order.
    """
    names = set(batch.schema.names)
    missing = [f for f in schema.features if f not in names]
    if missing:
        raise ModelInputError(
            f"input is missing feature column(s) {missing}; it has {sorted(names)}"
        )
    columns: dict[str, Any] = {}
    for name in schema.features:
        column = batch.column(name)
        dtype = schema.dtype(name)
        if dtype is None:
            columns[name] = _numeric(name, column)
        else:
            columns[name] = _categorical(name, column, dtype)
    return pd.DataFrame(columns, copy=False)


def predict_scores(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Score a `to_frame` frame: probabilities for binary:logistic, values for regression.

    When training stopped early the trees after the best iteration are ignored, also for a
    booster loaded from a saved model (XGBoost keeps `best_iteration` as a model attribute).
    """
    scores = booster.inplace_predict(frame, iteration_range=iteration_range(booster))
    return np.asarray(scores, dtype=np.float64)


def iteration_range(booster: xgb.Booster) -> tuple[int, int]:
    """Trees to use: up to `best_iteration` when training stopped early, else all (0, 0)."""
    best = booster.attr("best_iteration")
    return (0, int(best) + 1) if best is not None else (0, 0)


def _numeric(name: str, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    try:
        as_float = pc.cast(column, pa.float32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ModelInputError(
            f"numeric feature {name!r} has type {column.type} that cannot become float32: {error}"
        ) from error
    return as_float.to_numpy(zero_copy_only=False)


def _categorical(
    name: str, column: pa.Array | pa.ChunkedArray, dtype: pd.CategoricalDtype
) -> pd.Categorical:
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ModelInputError(
                f"categorical feature {name!r} has type {column.type} that cannot become strings"
            ) from error
    value_set = pa.array(list(dtype.categories), type=column.type)
    codes = pc.fill_null(pc.index_in(column, value_set=value_set), -1)
    return pd.Categorical.from_codes(codes.to_numpy(zero_copy_only=False), dtype=dtype)
