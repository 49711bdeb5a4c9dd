"""Strict validation of KServe manifests against KServe's real CRD schemas.

The API server prunes unknown fields silently, so a typo (or a field only a newer KServe
knows, like `spec.tracing` from the 0.21 SDK against the 0.20 CRD) would deploy "fine"
and do nothing. Here every object node of a CRD's `openAPIV3Schema` that lists `properties`
is closed with `additionalProperties: false`, so such fields are rejected before anything
reaches a cluster. `validate_custom_resource` checks any kind against its CRD file (e.g. the
ServingRuntime in `manifests/serving`); `validate_inference_service` is the InferenceService
case the deploy step uses.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
"""The InferenceService CRD; the file whose presence marks a folder of KServe CRDs."""
SERVING_RUNTIME_CRD_FILE = "serving.kserve.io_servingruntimes.yaml"
CRD_DIR_ENV = "CTLOOP_KSERVE_CRDS"


class ManifestValidationError(ValueError):
    """A manifest the KServe CRD would not accept as written."""


@dataclass(frozen=True)
class _Definition:
    """What a CRD file defines: the kind, and the schema of each served apiVersion."""

    kind: str
    schemas: dict[str, dict]


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
    validate_custom_resource(obj, CRD_FILE, crd_dir)


def validate_custom_resource(obj: dict, crd_file: str, crd_dir: str | Path | None = None) -> None:
    """Check `obj` against the CRD in `crd_dir/crd_file`, rejecting unknown fields.

    The apiVersion must be one the CRD serves (group/version) and the kind the CRD's kind;
    `metadata.name` must be set. The object is then validated against that version's schema.

    Args:
        obj: The manifest (as serialised for the API, or loaded from YAML).
        crd_file: File name of the CRD, e.g. `SERVING_RUNTIME_CRD_FILE`.
        crd_dir: Folder with the CRD YAML; default `default_crd_dir()`.

    Raises:
        ManifestValidationError: naming the JSON path of the first problem and the rule.
        FileNotFoundError: no CRD folder is configured or found, or it lacks `crd_file`.
    """
    if crd_dir is None:
        crd_dir = default_crd_dir()
        if crd_dir is None:
            raise FileNotFoundError(
                f"no KServe CRD folder: set ${CRD_DIR_ENV} to a folder holding {CRD_FILE}"
            )
    crd_path = Path(crd_dir).resolve() / crd_file
    if not crd_path.is_file():
        raise FileNotFoundError(f"{crd_dir} holds no {crd_file}")
    definition = _definition(str(crd_path))
    api_version = obj.get("apiVersion")
    if api_version not in definition.schemas:
        raise ManifestValidationError(
            f"$.apiVersion: {api_version!r} is not one of {sorted(definition.schemas)}"
        )
    if obj.get("kind") != definition.kind:
        raise ManifestValidationError(f"$.kind: {obj.get('kind')!r} is not {definition.kind!r}")
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ManifestValidationError(f"$.metadata.name: {name!r} is not a non-empty string")
    validator = _strict_validator(str(crd_path), api_version)
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        raise ManifestValidationError(f"{error.json_path}: {error.message}")


@functools.cache
def _definition(crd_path: str) -> _Definition:
    """The kind and served versions of a CRD (cached: the InferenceService CRD is about 40k
    lines of YAML)."""
    with open(crd_path) as handle:
        crd = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    group = crd["spec"]["group"]
    schemas = {
        f"{group}/{version['name']}": version["schema"]["openAPIV3Schema"]
        for version in crd["spec"]["versions"]
        if version.get("served", True)
    }
    if not schemas:
        raise ManifestValidationError(f"{crd_path} serves no version")
    return _Definition(kind=crd["spec"]["names"]["kind"], schemas=schemas)


@functools.cache
def _strict_validator(crd_path: str, api_version: str) -> jsonschema.Draft7Validator:
    """A validator for one served version of the CRD, closed against unknown fields."""
    schema = _strict(copy.deepcopy(_definition(crd_path).schemas[api_version]))
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
