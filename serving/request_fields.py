"""What the predictor reads of a request before it decodes rows: the v1 body's fields, the rows
a request claims to hold (which decides where it is scored), and its request id."""

from __future__ import annotations

import math
import uuid
from typing import Any

from kserve.protocol.infer_type import InferRequest

from ctloop.serving.request_decoding import InvalidRequest

REQUEST_ID_HEADER = "x-request-id"
"""The caller's request id header; KServe passes header names in lower case."""
V1_KEYS = ("instances", "return_labels")


def v1_fields(body: Any) -> tuple[Any, bool]:
    """(instances, return_labels) of a v1 predict body.

    Raises:
        InvalidRequest: not an object with `instances`, an unknown key, or a `return_labels`
            that is not a boolean.
    """
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidRequest(
            "v1 request body must be a JSON object with 'instances' (a list of rows) "
            f"and optionally 'return_labels'; got {_shape_of(body)}"
        )
    unknown = sorted(key for key in body if key not in V1_KEYS)
    if unknown:
        raise InvalidRequest(f"v1 request has unknown key(s) {unknown}; allowed: {V1_KEYS}")
    return_labels = body.get("return_labels", False)
    if not isinstance(return_labels, bool):
        raise InvalidRequest(f"'return_labels' must be true or false; got {return_labels!r}")
    return body["instances"], return_labels


def request_id_of(payload: Any, headers: dict[str, str] | None) -> str:
    """The caller's `X-Request-Id`, else a v2 request's `id`, else a new uuid4."""
    given = headers.get(REQUEST_ID_HEADER) if headers else None
    if not given and isinstance(payload, InferRequest):
        given = payload.id
    return given or str(uuid.uuid4())


def rows_claimed(payload: Any) -> float:
    """The rows a request says it holds, read before decoding; infinity when it does not say."""
    if isinstance(payload, InferRequest):
        shape = payload.inputs[0].shape if payload.inputs else None
        return shape[0] if shape and isinstance(shape[0], int) else math.inf
    instances = payload.get("instances") if isinstance(payload, dict) else None
    return len(instances) if isinstance(instances, list) else math.inf


def _shape_of(body: Any) -> str:
    if isinstance(body, dict):
        return f"an object with keys {sorted(str(key) for key in body)}"
    return type(body).__name__
