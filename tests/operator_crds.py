"""prometheus-operator's PodMonitor and PrometheusRule CRDs, built from manifests/schemas/.

No package that a registry here serves ships prometheus-operator's CRDs, but
manifests/schemas/ holds the JSON schemas of its v0.80.1 models (see the export script there):
the same fields, types, enums, patterns and required lists as the CRDs' openAPIV3Schema, in
Pydantic's dialect. This turns them back into structural schemas a real API server takes
(tests/envtest.py installs them): references inlined, `anyOf [T, null]` as T, integer-or-string
as `x-kubernetes-int-or-string`, and Pydantic's titles and null defaults dropped. Only `spec` is
described (an API server describes metadata itself); fields the operator knows and these
models did not would be pruned, never refused, by the server.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[1] / "manifests" / "schemas"
KINDS = {"PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}
GROUP = "monitoring.coreos.com"
_DROPPED = {"title", "default", "$comment", "$defs"}


def monitoring_crds() -> list[dict]:
    return [_crd(kind, plural) for kind, plural in KINDS.items()]


def _crd(kind: str, plural: str) -> dict:
    schema = json.loads((SCHEMAS / f"{GROUP}_v1_{kind.lower()}.json").read_text())
    spec = _structural(schema["properties"]["spec"], schema["$defs"])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def _structural(node: dict, definitions: dict) -> dict:
    """`node` (a Pydantic JSON schema) as an apiextensions v1 structural schema."""
    if "$ref" in node:
        return _structural(definitions[node["$ref"].rpartition("/")[2]], definitions)
    if "anyOf" in node:
        choices = [
            _structural(choice, definitions)
            for choice in node["anyOf"]
            if choice != {"type": "null"}
        ]
        if sorted(str(choice.get("type")) for choice in choices) == ["integer", "string"]:
            return {"x-kubernetes-int-or-string": True}
        [choice] = choices  # anything else is `T or null`
        return choice
    result = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            result["enum"] = [value]
        elif key == "properties":
            result[key] = {name: _structural(item, definitions) for name, item in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _structural(value, definitions)
        else:
            result[key] = value
    return result
