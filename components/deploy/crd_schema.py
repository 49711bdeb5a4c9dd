"""Strict validation of InferenceService manifests against KServe's real CRD schema.

The API server prunes unknown fields silently, so a typo (or a field only a newer KServe
knows, like `spec.tracing` from the 0.21 SDK against the 0.20 CRD) would deploy "fine"
and do nothing. Here every object node of the CRD's v1beta1 `openAPIV3Schema` that lists
`properties` is closed with `additionalProperties: false`, so such fields are rejected
before anything reaches a cluster.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import jsonschema
import yaml

CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
CRD_DIR_ENV = "CTLOOP_KSERVE_CRDS"
API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"


class ManifestValidationError(ValueError):
    """A manifest the KServe CRD would not accept as written."""


def default_crd_dir() -> Path | None:
    """The folder holding KServe's CRD YAML files, or None when there is none.

    `$CTLOOP_KSERVE_CRDS` when set (a set but missing folder is an error, not a silent
    skip); else `shared/kserve` beside the checkout (this file is
    `<work>/main/components/deploy/crd_schema.py`, the CRDs are in `<work>/shared/kserve`).
    An installed package has no such folder: None.
    """
    configured = os.environ.get(CRD_DIR_ENV)
    if configured:
        path = Path(configured)
        if not (path / CRD_FILE).is_file():
            raise FileNotFoundError(f"${CRD_DIR_ENV}={configured!r} holds no {CRD_FILE}")
        return path
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "kserve"
    return beside_checkout if (beside_checkout / CRD_FILE).is_file() else None


def validate_inference_service(obj: dict, crd_dir: str | Path | None = None) -> None:
    """Check `obj` against the InferenceService CRD, rejecting unknown fields.

    Args:
        obj: The manifest (as serialised for the API).
        crd_dir: Folder with the CRD YAML; default `default_crd_dir()`.

    Raises:
        ManifestValidationError: naming the JSON path of the first problem and the rule.
        FileNotFoundError: no CRD folder is configured or found.
    """
    if crd_dir is None:
        crd_dir = default_crd_dir()
        if crd_dir is None:
            raise FileNotFoundError(
                f"no KServe CRD folder: set ${CRD_DIR_ENV} to a folder holding {CRD_FILE}"
            )
    if obj.get("apiVersion") != API_VERSION:
        raise ManifestValidationError(
            f"$.apiVersion: {obj.get('apiVersion')!r} is not {API_VERSION!r}"
        )
    if obj.get("kind") != KIND:
        raise ManifestValidationError(f"$.kind: {obj.get('kind')!r} is not {KIND!r}")
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ManifestValidationError(f"$.metadata.name: {name!r} is not a non-empty string")
    validator = _strict_validator(str(Path(crd_dir).resolve() / CRD_FILE))
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        raise ManifestValidationError(f"{error.json_path}: {error.message}")


@functools.cache
def _strict_validator(crd_path: str) -> jsonschema.Draft7Validator:
    """A validator for the CRD's v1beta1 schema, closed against unknown fields (cached:
    the CRD is about 40k lines of YAML)."""
    with open(crd_path) as handle:
        crd = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    versions = {version["name"]: version for version in crd["spec"]["versions"]}
    if "v1beta1" not in versions:
        raise ManifestValidationError(f"{crd_path} defines no v1beta1 version")
    schema = _strict(copy.deepcopy(versions["v1beta1"]["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def _strict(node: object) -> object:
    """Translate Kubernetes structural-schema extensions into plain JSON Schema, in place."""
    if isinstance(node, list):
        for item in node:
            _strict(item)
        return node
    if not isinstance(node, dict):
        return node
    for value in node.values():
        _strict(value)
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node
