"""Turn request rows (v1 instances, v2 tensors) into the float32 matrix the booster scores.

The matrix holds numeric features as float32 and categorical features as their category
codes: the position in the profile's sorted category list, which is the pandas
`CategoricalDtype` training used, so `booster.inplace_predict(matrix)` gives the same scores
as `predict_scores(booster, to_frame(...))` without building a pandas frame, which dominates
a small request's cost (docs/performance.md). As in `to_frame`, a missing value (null) and a
category unseen at training time both become NaN, which the trees treat as missing. A number
that is infinite, or too large for float32 (1e39 would become inf), is refused, as training
refuses infinite values: the trees would score it as larger than any value they were shown.

A booster that records no feature names (and has no profile) is served positionally, as
KServe's xgbserver serves it: v1 rows as lists in the booster's order, v2 as one `input-0`
matrix; objects and per-feature tensors need names, and the error says so.

Every problem with a request is an `InvalidRequest` (HTTP 400) naming the row, the feature
or tensor, the offending value and the rule; so is a v2 body that is not an Open Inference
Protocol request at all (`oip_validation_error_handler`), which FastAPI would answer with a
422 and pydantic's list of errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from kserve.errors import InvalidInput, invalid_input_handler
from kserve.protocol.infer_type import InferInput
from starlette.requests import Request
from starlette.responses import Response

from ctloop.components.contract.model_input import FeatureSchema

MATRIX_INPUT = "input-0"
"""The single v2 input of an all-numeric model: FP32 [N, F], columns in feature order."""

NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
"""v2 datatypes accepted for numeric features (metadata declares FP32)."""

_NUMBER_KINDS = "biuf"  # numpy dtype kinds of booleans, integers and floats
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_VALIDATION_ERRORS_SHOWN = 5


class InvalidRequest(InvalidInput):
    """A request the model cannot score; KServe answers HTTP 400 with this message."""


class RequestDecoder:
    """Decodes requests for one model's feature schema, refusing batches over `max_batch_rows`;
    with `named_features` false (a booster without feature names), rows only by position."""

    def __init__(
        self, schema: FeatureSchema, max_batch_rows: int, *, named_features: bool = True
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows = {max_batch_rows} must be >= 1")
        self.schema = schema
        self.max_batch_rows = max_batch_rows
        self.named_features = named_features
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
        with np.errstate(over="ignore"):  # too large for float32: inf, refused below
            if isinstance(instances[0], dict):
                matrix = self._from_objects(instances)
            elif self.numeric_only:
                fast = _number_matrix(instances, len(self._features))
                matrix = self._from_lists(instances) if fast is None else fast
            else:
                matrix = self._from_lists(instances)
        return self._finite(matrix, rows_named="instance")

    def from_tensors(self, inputs: Sequence[InferInput]) -> np.ndarray:
        """v2 inputs: `input-0` [N, F] for an all-numeric model, or one [N] tensor per feature."""
        names = [tensor.name for tensor in inputs]
        with np.errstate(over="ignore"):  # too large for float32: inf, refused below
            if names == [MATRIX_INPUT] and MATRIX_INPUT not in self._feature_set:
                if not self.numeric_only:
                    raise InvalidRequest(
                        f"this model has categorical features {sorted(self.schema.categories)}; "
                        f"send one tensor per feature named {self._features} instead of "
                        f"{MATRIX_INPUT!r}"
                    )
                matrix = self._from_matrix_tensor(inputs[0])
            elif not self.named_features:
                raise InvalidRequest(
                    f"this model's booster records no feature names, so inputs cannot be "
                    f"matched by name (got {names}): send one {MATRIX_INPUT!r} FP32 tensor of "
                    f"shape [N, {len(self._features)}], columns in the booster's order"
                )
            else:
                matrix = self._from_feature_tensors(inputs)
        return self._finite(matrix, rows_named="row")

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

    def _finite(self, matrix: np.ndarray, rows_named: str) -> np.ndarray:
        """`matrix`, once no value in it is infinite (given so, or beyond float32's range)."""
        infinite = np.isinf(matrix)
        if infinite.any():
            row, column = np.argwhere(infinite)[0]
            raise InvalidRequest(
                f"{rows_named} {row}: numeric feature {self._features[column]!r} is infinite or "
                f"beyond float32's range (+-{_FLOAT32_MAX:.4g}); send a finite number, or null "
                "for a missing value"
            )
        return matrix

    def _from_objects(self, rows: list[Any]) -> np.ndarray:
        if not self.named_features:
            raise InvalidRequest(
                f"this model's booster records no feature names, so instances cannot be "
                f"objects: send each instance as a list of {len(self._features)} values in the "
                "booster's feature order"
            )
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
            try:
                column[index] = value
            except OverflowError:  # an integer beyond float64: beyond float32 too
                column[index] = np.inf
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
    except OverflowError as error:  # an integer beyond float64 in JSON data
        raise InvalidRequest(
            f"{what}: a value is beyond float32's range (+-{_FLOAT32_MAX:.4g}): {error}"
        ) from error
    except (ValueError, TypeError) as error:  # data count != shape, or text in a number tensor
        raise InvalidRequest(
            f"{what}: data do not fit shape {list(tensor.shape)} and datatype "
            f"{tensor.datatype}: {error}"
        ) from error


async def oip_validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    """Answer a v2 body that FastAPI could not read as an Open Inference Protocol request (not
    JSON, or JSON of another shape) with a 400 and one message, as any other bad request.

    KServe 0.21 declares the v2 infer body as `InferenceRequest | bytes`, so pydantic reports
    each of its fields against both; the `bytes` alternative says nothing to a JSON client."""
    problems = [_validation_problem(problem) for problem in error.errors()]
    shown = [problem for problem in problems if problem is not None] or ["unreadable body"]
    more = len(shown) - _VALIDATION_ERRORS_SHOWN
    message = "; ".join(shown[:_VALIDATION_ERRORS_SHOWN]) + (
        f"; and {more} more" if more > 0 else ""
    )
    invalid = InvalidRequest(f"not an Open Inference Protocol request: {message}")
    return await invalid_input_handler(request, invalid)


def _validation_problem(problem: dict[str, Any]) -> str | None:
    """`inputs.0.datatype: Field required` of one pydantic error; None for the `bytes`
    alternative of the body."""
    location = [str(part) for part in problem.get("loc", ())]
    if location[:2] == ["body", "bytes"]:
        return None
    if problem.get("type") == "json_invalid":
        return f"body is not JSON: {problem.get('ctx', {}).get('error', problem.get('msg'))}"
    where = ".".join(part for part in location if part not in ("body", "InferenceRequest"))
    return f"{where or 'body'}: {problem.get('msg')}"
