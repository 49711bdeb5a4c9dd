"""Turn request rows (v1 instances, v2 tensors) into the float32 matrix the booster scores.

The matrix holds numeric features as float32 and categorical features as their category
codes: the position in the profile's sorted category list, which is the pandas
`CategoricalDtype` training used, so `booster.inplace_predict(matrix)` gives the same scores
as `predict_scores(booster, to_frame(...))` without building a pandas frame, which dominates
a small request's cost (docs/performance.md). As in `to_frame`, a missing value (null) and a
category unseen at training time both become NaN, which the trees treat as missing.

Every problem with a request is an `InvalidRequest` (HTTP 400) naming the row, the feature
or tensor, the offending value and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput

from ctloop.components.contract.model_input import FeatureSchema

MATRIX_INPUT = "input-0"
"""The single v2 input of an all-numeric model: FP32 [N, F], columns in feature order."""

NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
"""v2 datatypes accepted for numeric features (metadata declares FP32)."""

_NUMBER_KINDS = "biuf"  # numpy dtype kinds of booleans, integers and floats


class InvalidRequest(InvalidInput):
    """A request the model cannot score; KServe answers HTTP 400 with this message."""


class RequestDecoder:
    """Decodes requests for one model's feature schema, refusing batches over `max_batch_rows`."""

    def __init__(self, schema: FeatureSchema, max_batch_rows: int) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows = {max_batch_rows} must be >= 1")
        self.schema = schema
        self.max_batch_rows = max_batch_rows
        self.numeric_only = not schema.categories
        self._features = schema.features
        self._feature_set = set(schema.features)
        self._codes = {
            name: {category: float(code) for code, category in enumerate(categories)}
            for name, categories in schema.categories.items()
        }

    def from_instances(self, instances: Any) -> np.ndarray:
        """v1 `instances`: all lists (values in feature order) or all objects (feature -> value)."""
        if not isinstance(instances, list):
            raise InvalidRequest(
                f"'instances' must be a list of rows; got {type(instances).__name__}"
            )
        self._check_rows(len(instances), "'instances'")
        if isinstance(instances[0], dict):
            return self._from_objects(instances)
        if self.numeric_only:
            fast = _number_matrix(instances, len(self._features))
            if fast is not None:
                return fast
        return self._from_lists(instances)

    def from_tensors(self, inputs: Sequence[InferInput]) -> np.ndarray:
        """v2 inputs: `input-0` [N, F] for an all-numeric model, or one [N] tensor per feature."""
        names = [tensor.name for tensor in inputs]
        if names == [MATRIX_INPUT] and MATRIX_INPUT not in self._feature_set:
            if not self.numeric_only:
                raise InvalidRequest(
                    f"this model has categorical features {sorted(self.schema.categories)}; "
                    f"send one tensor per feature named {self._features} instead of "
                    f"{MATRIX_INPUT!r}"
                )
            return self._from_matrix_tensor(inputs[0])
        return self._from_feature_tensors(inputs)

    def _check_rows(self, rows: int, what: str) -> None:
        if rows == 0:
            raise InvalidRequest(f"{what} is an empty batch; send at least one row")
        if rows > self.max_batch_rows:
            raise InvalidRequest(
                f"{what} has {rows} rows, over max_batch_rows={self.max_batch_rows}; "
                "split the batch"
            )

    def _from_lists(self, rows: list[Any]) -> np.ndarray:
        width = len(self._features)
        for index, row in enumerate(rows):
            if not isinstance(row, list):
                raise InvalidRequest(
                    f"instance {index} is {type(row).__name__}; every instance must be a list "
                    f"of {width} values (order {self._features}) or every one an object"
                )
            if len(row) != width:
                raise InvalidRequest(
                    f"instance {index} has {len(row)} values; the model takes {width} features "
                    f"in this order: {self._features}"
                )
        return self._matrix(list(zip(*rows, strict=True)), rows_named="instance")

    def _from_objects(self, rows: list[Any]) -> np.ndarray:
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidRequest(
                    f"instance {index} is {type(row).__name__}; every instance must be an "
                    "object (feature -> value) or every one a list"
                )
            if row.keys() != self._feature_set:
                missing = [name for name in self._features if name not in row]
                unknown = sorted(str(key) for key in row if key not in self._feature_set)
                problems = [f"missing feature(s) {missing}"] if missing else []
                problems += [f"unknown feature(s) {unknown}"] if unknown else []
                raise InvalidRequest(
                    f"instance {index}: {' and '.join(problems)}; the model takes exactly "
                    f"{self._features} (null for a missing value)"
                )
        columns = [[row[name] for row in rows] for name in self._features]
        return self._matrix(columns, rows_named="instance")

    def _matrix(self, columns: Sequence[Sequence[Any]], rows_named: str) -> np.ndarray:
        matrix = np.empty((len(columns[0]), len(self._features)), dtype=np.float32)
        for position, (name, values) in enumerate(zip(self._features, columns, strict=True)):
            if name in self._codes:
                matrix[:, position] = self._categorical(name, values, rows_named)
            else:
                matrix[:, position] = _numeric(name, values, rows_named)
        return matrix

    def _categorical(self, name: str, values: Sequence[Any], rows_named: str) -> np.ndarray:
        codes = self._codes[name]
        column = np.empty(len(values), dtype=np.float32)
        for index, value in enumerate(values):
            if isinstance(value, bytes):
                value = _utf8(value, name, index, rows_named)
            if isinstance(value, str):
                column[index] = codes.get(value, np.nan)  # unseen at training -> missing
            elif value is None:
                column[index] = np.nan
            else:
                raise InvalidRequest(
                    f"{rows_named} {index}: categorical feature {name!r} has value {value!r} of "
                    f"type {type(value).__name__}; send a string (one of "
                    f"{self.schema.categories[name]}) or null"
                )
        return column

    def _from_matrix_tensor(self, tensor: InferInput) -> np.ndarray:
        width = len(self._features)
        what = f"input {MATRIX_INPUT!r}"
        _check_datatype(tensor, NUMERIC_DATATYPES, what)
        shape = _concrete_shape(tensor, what)
        if len(shape) != 2 or shape[1] != width:
            raise InvalidRequest(
                f"{what} has shape {shape}; expected [N, {width}] (features {self._features})"
            )
        self._check_rows(shape[0], what)
        return _as_numpy(tensor, what).astype(np.float32, copy=False)

    def _from_feature_tensors(self, inputs: Sequence[InferInput]) -> np.ndarray:
        if not inputs:
            raise InvalidRequest(
                f"request has no inputs; send one tensor per feature {self._features}"
            )
        by_name: dict[str, InferInput] = {}
        for tensor in inputs:
            if tensor.name in by_name:
                raise InvalidRequest(f"input {tensor.name!r} is given more than once")
            by_name[tensor.name] = tensor
        missing = [name for name in self._features if name not in by_name]
        unknown = sorted(name for name in by_name if name not in self._feature_set)
        if missing or unknown:
            problems = [f"missing input(s) {missing}"] if missing else []
            problems += [f"unknown input(s) {unknown}"] if unknown else []
            single = f" (or one {MATRIX_INPUT!r} [N, F] FP32 tensor)" if self.numeric_only else ""
            raise InvalidRequest(
                f"{' and '.join(problems)}; the model takes one [N] tensor per feature "
                f"{self._features}{single}"
            )
        rows = None
        columns = []
        for name in self._features:
            tensor = by_name[name]
            what = f"input {name!r}"
            expected = ("BYTES",) if name in self._codes else NUMERIC_DATATYPES
            _check_datatype(tensor, expected, what)
            shape = _concrete_shape(tensor, what)
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise InvalidRequest(f"{what} has shape {shape}; expected [N] or [N, 1]")
            if rows is None:
                self._check_rows(shape[0], what)
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidRequest(
                    f"{what} has {shape[0]} rows but input {self._features[0]!r} has {rows}; "
                    "every input needs the same number of rows"
                )
            columns.append(_as_numpy(tensor, what).reshape(-1))
        return self._matrix(columns, rows_named="row")


def _number_matrix(rows: list[Any], width: int) -> np.ndarray | None:
    """The all-numeric fast path: one numpy conversion, or None to take the checked path."""
    try:
        array = np.asarray(rows)
    except (ValueError, TypeError):  # ragged rows or odd objects: the checked path explains
        return None
    if array.dtype.kind not in _NUMBER_KINDS or array.ndim != 2 or array.shape[1] != width:
        return None
    return array.astype(np.float32)


def _numeric(name: str, values: Sequence[Any], rows_named: str) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        array = np.empty(0, dtype=object)
    if array.dtype.kind in _NUMBER_KINDS and array.ndim == 1:
        return array.astype(np.float32)
    column = np.empty(len(values), dtype=np.float32)
    for index, value in enumerate(values):
        if value is None:
            column[index] = np.nan
        elif isinstance(value, (int, float, np.number)):
            column[index] = value
        else:
            raise InvalidRequest(
                f"{rows_named} {index}: numeric feature {name!r} has non-numeric value "
                f"{value!r}; send a number or null"
            )
    return column


def _utf8(value: bytes, name: str, index: int, rows_named: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            f"{rows_named} {index}: categorical feature {name!r} is not UTF-8 text: {error}"
        ) from error


def _check_datatype(tensor: InferInput, allowed: Sequence[str], what: str) -> None:
    if tensor.datatype not in allowed:
        raise InvalidRequest(
            f"{what} has datatype {tensor.datatype}; expected one of {list(allowed)}"
        )


def _concrete_shape(tensor: InferInput, what: str) -> list[int]:
    shape = list(tensor.shape)
    if not shape or any(not isinstance(size, int) or size < 0 for size in shape):
        raise InvalidRequest(f"{what} has shape {shape}; every dimension must be a size >= 0")
    return shape


def _as_numpy(tensor: InferInput, what: str) -> np.ndarray:
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError) as error:  # data count != shape, or text in a number tensor
        raise InvalidRequest(
            f"{what}: data do not fit shape {list(tensor.shape)} and datatype "
            f"{tensor.datatype}: {error}"
        ) from error
