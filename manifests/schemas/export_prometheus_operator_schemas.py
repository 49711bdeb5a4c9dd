"""Write the JSON schemas of prometheus-operator's PodMonitor and PrometheusRule beside this file.

No release of prometheus-operator's CRDs can be installed offline from a package registry, but
cloudcoil-models-prometheus-operator (PyPI, Apache-2.0) ships Pydantic models generated from
its v0.80.1 CRDs (the CRDs' openAPIV3Schema: field names, types, required fields, patterns).
This exports those models' JSON schemas, which tests/test_manifests.py validates the built
monitoring objects against (strictly: unknown fields rejected). The package itself stays out
of requirements.lock, since it registers a pytest plugin that every test run would load. Run
it in a throwaway environment:

    .venv/bin/uv run --no-project --python 3.11 \\
        --with cloudcoil-models-prometheus-operator==0.80.1.0 \\
        python manifests/schemas/export_prometheus_operator_schemas.py
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from cloudcoil.models.prometheus_operator import v1

KINDS = ("PodMonitor", "PrometheusRule")
SCHEMA_DIR = Path(__file__).resolve().parent


def schema_file(kind: str) -> Path:
    return SCHEMA_DIR / f"monitoring.coreos.com_v1_{kind.lower()}.json"


def main() -> None:
    source = (
        f"cloudcoil-models-prometheus-operator {version('cloudcoil-models-prometheus-operator')}"
    )
    for kind in KINDS:
        schema = getattr(v1, kind).model_json_schema(by_alias=True, mode="validation")
        schema["$comment"] = f"monitoring.coreos.com/v1 {kind}, exported from {source}"
        schema_file(kind).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {schema_file(kind)}")


if __name__ == "__main__":
    main()
