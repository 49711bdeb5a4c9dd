"""Roll a registered model out as a KServe InferenceService: on a cluster, or rendered.

The same desired-state computation (`stages.desired_stage`) serves both targets. On a
cluster the current InferenceService comes from the Kubernetes API and each manifest of the
stage is applied and awaited in turn; with no cluster (local runs) the "cluster" is a folder
of rendered manifests, so a second local deploy sees the first and renders a canary exactly
as the cluster would get it (the stage's last manifest: a folder has no revisions to wait for).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ctloop.components.deploy import cluster
from ctloop.components.deploy.api_client import kube_api
from ctloop.components.deploy.crd_schema import default_crd_dir, validate_inference_service
from ctloop.components.deploy.inference_service import (
    MODEL_VERSION_LABEL,
    render_yaml,
    storage_uri_for,
)
from ctloop.components.deploy.predictor_args import SHADOW_VERSION_ARG
from ctloop.components.deploy.serving_capacity import ServingCapacity
from ctloop.components.deploy.stages import CANARY, desired_stage

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
    stage: str = CANARY
    prediction_log_uri: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    """Labels of the InferenceService (team, project, cost-center, ...) besides the version."""
    feature_repo: str = ""
    feature_service: str = ""
    """The Feast repository (a URI the predictor pod reads) and feature service the predictor
    looks entity keys' features up in; empty: callers send features."""


def resolve_namespace(namespace: str) -> str:
    """An explicit namespace, else the one this pod runs in, else `default` (local runs)."""
    if namespace:
        return namespace
    if IN_CLUSTER_NAMESPACE_FILE.exists():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return "default"


def _desired(request: RolloutRequest, current: dict | None) -> list[dict]:
    return desired_stage(
        request.stage,
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
        prediction_log_uri=request.prediction_log_uri,
        labels=request.labels,
        feature_repo=request.feature_repo,
        feature_service=request.feature_service,
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
    steps = _desired(request, current)
    crd_dir = default_crd_dir()
    if crd_dir is not None:
        for step in steps:
            validate_inference_service(step, crd_dir)
    desired = steps[-1]
    action = "created" if current is None else ("unchanged" if current == desired else "patched")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_yaml(desired))
    return {
        **_summary(request, desired, action),
        "validated_against_crd": crd_dir is not None,
        "inference_service_manifest": str(path),
    }


def apply(request: RolloutRequest, timeout_s: float) -> dict:
    """Create or patch the InferenceService on the cluster into the request's stage, one
    manifest at a time, each awaited until Ready with its traffic."""
    api = kube_api()
    current = cluster.get_inference_service(api, request.name, request.namespace)
    steps = _desired(request, current)
    actions = [cluster.deploy_inference_service(api, step, timeout_s=timeout_s) for step in steps]
    changed = [outcome["action"] for outcome in actions if outcome["action"] != "unchanged"]
    action = changed[0] if changed else "unchanged"
    return {**_summary(request, steps[-1], action), "url": actions[-1].get("url")}


def _summary(request: RolloutRequest, desired: dict, action: str) -> dict:
    canary = desired["spec"]["predictor"].get("canaryTrafficPercent")
    for entry in desired["spec"].get("canary") or []:
        if _version_of(entry["predictor"]) == request.model_version:
            canary = entry["trafficPercent"]
    return {
        **asdict(request),
        "action": action,
        "canary_traffic_percent": canary,
        "serves_as": serves_as(desired, request.model_version),
        "manifest": desired,
    }


def serves_as(isvc: dict, version: str) -> str:
    """What `version` is in the service: "all-traffic", "canary" (a canary or an A/B
    variant beside the champion), "shadow" (scored beside the champion, answering nobody) or
    "nothing"."""
    spec = isvc["spec"]
    predictor = spec["predictor"]
    canaries = [entry["predictor"] for entry in spec.get("canary") or []]
    if any(_version_of(entry) == version for entry in canaries):
        return "canary"
    if _version_of(predictor) == version:
        return "canary" if "canaryTrafficPercent" in predictor else "all-traffic"
    if SHADOW_VERSION_ARG + version in ((predictor.get("model") or {}).get("args") or []):
        return "shadow"
    return "nothing"


def _version_of(predictor: dict) -> str | None:
    return (predictor.get("labels") or {}).get(MODEL_VERSION_LABEL)
