"""Roll a registered model out as a KServe InferenceService: on a cluster, or rendered.

The same desired-state computation serves both targets. On a cluster the current
InferenceService comes from the Kubernetes API and the result is applied and awaited;
with no cluster (local runs) the "cluster" is a folder of rendered manifests, so a second
local deploy sees the first and renders a canary exactly as the cluster would get it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ctloop.components.deploy import cluster
from ctloop.components.deploy.api_client import kube_api
from ctloop.components.deploy.crd_schema import default_crd_dir, validate_inference_service
from ctloop.components.deploy.inference_service import (
    desired_inference_service,
    render_yaml,
    storage_uri_for,
)
from ctloop.components.deploy.serving_capacity import ServingCapacity

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TARGETS = ("cluster", "render")


@dataclass(frozen=True)
class RolloutRequest:
    name: str
    namespace: str
    model_artifact_uri: str
    model_version: str
    deployment_mode: str = "Serverless"
    canary_percent: int = 10
    runtime: str = ""
    service_account: str = ""
    minio_scheme: str = "s3"
    capacity: ServingCapacity = field(default_factory=ServingCapacity)


def resolve_namespace(namespace: str) -> str:
    """An explicit namespace, else the one this pod runs in, else `default` (local runs)."""
    if namespace:
        return namespace
    if IN_CLUSTER_NAMESPACE_FILE.exists():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return "default"


def _desired(request: RolloutRequest, current: dict | None) -> dict:
    return desired_inference_service(
        name=request.name,
        namespace=request.namespace,
        storage_uri=storage_uri_for(request.model_artifact_uri, request.minio_scheme),
        model_version=request.model_version,
        deployment_mode=request.deployment_mode,
        canary_percent=request.canary_percent,
        current=current,
        runtime=request.runtime or None,
        service_account=request.service_account or None,
        min_replicas=request.capacity.min_replicas,
        max_replicas=request.capacity.max_replicas,
        resources=request.capacity.resources,
    )


def run_deployment(
    request: RolloutRequest, *, target: str, render_dir: str, timeout_s: float
) -> dict:
    """The deploy step: `render` the InferenceService into a folder, or `apply` it to the
    cluster (`target` "render" or "cluster")."""
    if target == "render":
        return render(request, render_dir)
    return apply(request, timeout_s)


def render(request: RolloutRequest, render_dir: str) -> dict:
    """Compute, validate and write the InferenceService into `render_dir` (no cluster).

    Validation against the real KServe CRD happens before anything is written, so an
    invalid manifest never replaces the last good one.
    """
    path = Path(render_dir) / request.namespace / f"{request.name}.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    desired = _desired(request, current)
    crd_dir = default_crd_dir()
    if crd_dir is not None:
        validate_inference_service(desired, crd_dir)
    action = "created" if current is None else ("unchanged" if current == desired else "patched")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_yaml(desired))
    return {
        **_summary(request, desired, action),
        "validated_against_crd": crd_dir is not None,
        "inference_service_manifest": str(path),
    }


def apply(request: RolloutRequest, timeout_s: float) -> dict:
    """Create or canary-patch the InferenceService on the cluster and wait until Ready."""
    api = kube_api()
    current = cluster.get_inference_service(api, request.name, request.namespace)
    desired = _desired(request, current)
    outcome = cluster.deploy_inference_service(api, desired, timeout_s=timeout_s)
    return {**_summary(request, desired, outcome["action"]), "url": outcome.get("url")}


def _summary(request: RolloutRequest, desired: dict, action: str) -> dict:
    predictor = desired["spec"]["predictor"]
    canary = predictor.get("canaryTrafficPercent")
    if desired["spec"].get("canary"):
        canary = desired["spec"]["canary"][0]["trafficPercent"]
    return {
        **asdict(request),
        "action": action,
        "canary_traffic_percent": canary,
        "manifest": desired,
    }
