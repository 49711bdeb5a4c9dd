"""The `serving_capacity` pipeline parameter: replicas and resources of the predictor.

One JSON object, like the policies, so that each environment keeps its capacity in one line
of its `pipeline-params.env` and a typo fails before anything runs (`ctloop run` checks it
before submitting; the deploy step before touching the InferenceService):

    {"min_replicas": 1, "max_replicas": 4,
     "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}

Every key is optional; empty text (or `{}`) leaves all of them to KServe and the
ServingRuntime (whose container resources each overlay sets). `min_replicas: 0` lets a
Serverless predictor scale to zero. The CPU limit also sets how many threads the predictor
scores a large batch with (`ctloop.serving.cpu_limit.usable_cpus`). Quantities are Kubernetes
quantities ("500m", "2Gi", 1), checked against the grammar the API server applies (the pattern
Kubernetes' OpenAPI gives a Quantity, which KServe's CRD copies): the Kubernetes client's
`parse_quantity` alone also takes "1K", " 1", "1_000" and "inf", which the API server
refuses with a 422 only at the deploy step, after training. They
apply to the model being deployed: a canary gets them,
the running champion keeps its own (until a Serverless rollback, which restores the
champion's model into the predictor the canary's deploy wrote, capacity included).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from ctloop.components.deploy.inference_service import DeploymentError, check_replicas
from ctloop.components.json_parameter import parse_json_parameter, reject_unknown_keys

KEYS = ("min_replicas", "max_replicas", "requests", "limits")
_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(rf"[+-]?{_NUMBER}([KMGTPE]i|[numkMGTPE]|[eE][+-]?{_NUMBER})?")
WHAT = "serving_capacity"


@dataclass(frozen=True)
class ServingCapacity:
    """Replica bounds and container resources; None leaves each to KServe."""

    min_replicas: int | None = None
    max_replicas: int | None = None
    resources: dict[str, dict[str, str]] | None = None


def parse_serving_capacity(text: str) -> ServingCapacity:
    """`text` (the parameter's value) as a `ServingCapacity`.

    Raises:
        DeploymentError: not a JSON object, an unknown key, replica bounds KServe would
            refuse, or requests/limits that are not objects of quantities; the message starts
            with "serving_capacity" and names the key and the value.
    """
    document = parse_json_parameter(text, WHAT, DeploymentError, default={})
    reject_unknown_keys(document, KEYS, WHAT, DeploymentError)
    low, high = document.get("min_replicas"), document.get("max_replicas")
    try:
        check_replicas(low, high)
    except DeploymentError as error:
        raise DeploymentError(f"{WHAT}: {error}") from None
    resources = {
        key: _quantities(document[key], key) for key in ("requests", "limits") if key in document
    }
    return ServingCapacity(low, high, resources or None)


def _quantities(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise DeploymentError(
            f"{WHAT}: {key} must be an object of resource quantities such as "
            f'{{"cpu": "1", "memory": "2Gi"}}, got {json.dumps(value)}'
        )
    quantities = {}
    for resource, quantity in value.items():
        if not _is_quantity(quantity):
            raise DeploymentError(
                f"{WHAT}: {key}.{resource} = {json.dumps(quantity)} must be a quantity >= 0 "
                'such as "500m", "2Gi" or 1'
            )
        quantities[resource] = str(quantity)
    return quantities


def _is_quantity(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if not _QUANTITY.fullmatch(str(value)):
        return False
    try:
        return parse_quantity(str(value)) >= 0
    except ValueError:
        return False
