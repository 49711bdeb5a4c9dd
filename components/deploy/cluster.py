"""Apply an InferenceService to the cluster and await it: the one user of the Kubernetes API.

Every request goes through `ctloop.components.deploy.api_client` (a timeout on each, and a
failure as one line naming the endpoint); `kube_api` there makes the client.

Only three API verbs are used, all on `serving.kserve.io/inferenceservices`: get, create and
patch (see manifests/rbac/role.yaml, which grants exactly these); promoting and rolling back
a canary are patches too. Readiness is polled with single-object GETs rather than a watch,
so no list/watch permission is needed.

Updates are JSON merge patches (`application/merge-patch+json`), not replaces: a patch
touches only the fields we set, leaves webhook defaults and other controllers' fields
alone and needs no resourceVersion retry loop; fields we own that the desired state drops
(`spec.predictor.canaryTrafficPercent`, `spec.canary`) are removed with explicit nulls.
"""

from __future__ import annotations

import copy
import json
import time

from kubernetes import client

from ctloop.components.deploy.api_client import (
    KubernetesApiError,
    custom_object_path,
    get_custom_object,
    send,
)
from ctloop.components.deploy.inference_service import (
    SERVERLESS,
    DeploymentError,
    deployment_mode_of,
    rolling_out_storage_uri,
)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
FIELD_MANAGER = "ctloop"


class DeploymentTimeout(RuntimeError):
    """The InferenceService did not become Ready with the expected traffic in time."""


def _send(api: client.CustomObjectsApi, method: str, namespace: str, name: str, call, *args, **kw):
    """One request on the InferenceService `namespace`/`name` (all of them when `name` is
    empty), through `api_client.send`: a timeout, and a failure named in one line."""
    path = custom_object_path(GROUP, VERSION, namespace, PLURAL, name)
    return send(api, method, path, call, GROUP, VERSION, namespace, PLURAL, *args, **kw)


def get_inference_service(api: client.CustomObjectsApi, name: str, namespace: str) -> dict | None:
    """The InferenceService as it exists now, or None when there is none."""
    return get_custom_object(api, GROUP, VERSION, namespace, PLURAL, name)


def _patch(api: client.CustomObjectsApi, name: str, namespace: str, patch: dict) -> dict:
    call = api.patch_namespaced_custom_object
    return _send(api, "PATCH", namespace, name, call, name, patch, field_manager=FIELD_MANAGER)


def apply_inference_service(api: client.CustomObjectsApi, desired: dict) -> tuple[dict, str]:
    """Make the cluster hold `desired`; returns (object, "created" | "patched" | "unchanged").

    "unchanged" means applying the patch would change nothing (every field of `desired` is
    already set, and no owned canary field needs removing): no write is sent, so a rerun
    neither bumps the generation nor rolls pods.

    Raises:
        DeploymentError: the existing service runs in another deployment mode.
    """
    name, namespace = desired["metadata"]["name"], desired["metadata"]["namespace"]
    current = get_inference_service(api, name, namespace)
    if current is None:
        try:
            created = _send(
                api,
                "POST",
                namespace,
                "",
                api.create_namespaced_custom_object,
                desired,
                field_manager=FIELD_MANAGER,
            )
            return created, "created"
        except KubernetesApiError as error:
            if error.status != 409:  # 409: created concurrently; update it below
                raise
        current = get_inference_service(api, name, namespace)
    if deployment_mode_of(current) != deployment_mode_of(desired):
        raise DeploymentError(
            f"InferenceService {namespace}/{name} runs in deployment mode "
            f"{deployment_mode_of(current)!r}, the desired manifest is "
            f"{deployment_mode_of(desired)!r}; a service cannot switch modes in place"
        )
    patch = merge_patch(current, desired)
    if patch is None:
        return current, "unchanged"
    return _patch(api, name, namespace, patch), "patched"


def merge_patch(current: dict, desired: dict) -> dict | None:
    """The JSON merge patch (RFC 7386) taking `current` to `desired`, None if a no-op.

    The patch is `desired`'s metadata labels/annotations and spec, plus nulls for the
    canary fields `current` has and `desired` lacks (promotion, or full replacement).
    """
    spec = json.loads(json.dumps(desired["spec"]))
    current_spec = current.get("spec") or {}
    if "canary" in current_spec and "canary" not in spec:
        spec["canary"] = None
    if "canaryTrafficPercent" in (current_spec.get("predictor") or {}) and (
        "canaryTrafficPercent" not in spec["predictor"]
    ):
        spec["predictor"]["canaryTrafficPercent"] = None
    metadata = {
        key: desired["metadata"][key]
        for key in ("labels", "annotations")
        if desired["metadata"].get(key)
    }
    patch = {"metadata": metadata, "spec": spec}
    return None if _already_applied(current, patch) else patch


def _already_applied(current: object, patch: object) -> bool:
    """Whether merging `patch` into `current` would leave it as it is.

    Lists are compared element by element with the same rule, so server-side defaults
    inside list items (e.g. a defaulted canary predictor) do not count as a difference.
    """
    if isinstance(patch, dict):
        if not isinstance(current, dict):
            return False
        return all(
            key not in current if value is None else _already_applied(current.get(key), value)
            for key, value in patch.items()
        )
    if isinstance(patch, list):
        return (
            isinstance(current, list)
            and len(current) == len(patch)
            and all(map(_already_applied, current, patch))
        )
    return current == patch


def patch_inference_service(
    api: client.CustomObjectsApi,
    current: dict,
    patch: dict,
    *,
    expected_canary_percent: int | None,
    new_revision: bool = False,
    timeout_s: float = 600,
    poll_s: float = 2.0,
) -> tuple[dict, str]:
    """Merge-patch the service `current` was read from and wait until it serves as patched.

    Returns (object, "patched" | "unchanged"); "unchanged" when `patch` is already in effect:
    nothing is sent and nothing awaited. `new_revision` says the patch changes the model, so
    (Serverless) a revision newer than the current one must become ready, as for deploy.
    """
    if _already_applied(current, patch):
        return current, "unchanged"
    name, namespace = current["metadata"]["name"], current["metadata"]["namespace"]
    superseded = _predictor_status(current).get("latestCreatedRevision") if new_revision else None
    _patch(api, name, namespace, patch)
    ready = wait_until_ready(
        api,
        name,
        namespace,
        expected_canary_percent=expected_canary_percent,
        timeout_s=timeout_s,
        poll_s=poll_s,
        superseded_revision=superseded,
    )
    return ready, "patched"


def patched_object(current: object, patch: object) -> object:
    """What a JSON merge patch (RFC 7386) makes of `current`, as the API server computes it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(current) if isinstance(current, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = patched_object(result.get(key), value)
    return result


def replacing(current: object, new: object) -> object:
    """The merge-patch value that turns `current` into `new` exactly: `new` plus nulls for
    the keys `current` has and `new` lacks, at every depth of nested objects."""
    if not isinstance(new, dict) or not isinstance(current, dict):
        return copy.deepcopy(new)
    value = {key: None for key in current if key not in new}
    value.update({key: replacing(current.get(key), item) for key, item in new.items()})
    return value


def wait_until_ready(
    api: client.CustomObjectsApi,
    name: str,
    namespace: str,
    *,
    expected_canary_percent: int | None,
    timeout_s: float,
    poll_s: float = 2.0,
    superseded_revision: str | None = None,
) -> dict:
    """Poll until the service serves as desired; returns the object.

    Serverless (Knative): condition Ready is True, the predictor's latestReadyRevision equals
    latestCreatedRevision (and differs from `superseded_revision`, the revision created
    before a model change, so a stale Ready status is not mistaken for the rollout), and
    the traffic entry with `latestRevision: true` has `expected_canary_percent` (None means
    100).

    Standard: condition Ready is True, and `status.canaryStatuses` (defined by the 0.20 CRD
    that introduced `spec.canary`) has a ready entry with the expected percent and one ready
    entry per `spec.canary[]` entry with its percent (A/B variants), or no entry when no
    canary is expected; otherwise a stale status from before the patch would pass.
    Nothing else of the raw-deployment status is required (its shape is not settled across
    releases), so a Standard full replacement is awaited by the Ready condition alone.

    `status.observedGeneration` is never compared with the generation: KServe copies it
    from a child object (kserve#6081).

    Raises:
        DeploymentTimeout: not ready after `timeout_s`; the message holds the last status.
        DeploymentError: the service disappeared while waiting.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        isvc = get_inference_service(api, name, namespace)
        if isvc is None:
            raise DeploymentError(f"InferenceService {namespace}/{name} was deleted while waiting")
        waiting_for = _not_ready_reason(isvc, expected_canary_percent, superseded_revision)
        if waiting_for is None:
            return isvc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeploymentTimeout(
                f"InferenceService {namespace}/{name} not ready after {timeout_s} s "
                f"({waiting_for}); last status: {json.dumps(isvc.get('status'), sort_keys=True)}"
            )
        time.sleep(min(poll_s, remaining))


def deploy_inference_service(
    api: client.CustomObjectsApi, desired: dict, *, timeout_s: float = 600, poll_s: float = 2.0
) -> dict:
    """Apply `desired` and wait until it serves; returns action, name, namespace, url, status."""
    name, namespace = desired["metadata"]["name"], desired["metadata"]["namespace"]
    before = get_inference_service(api, name, namespace)
    isvc, action = apply_inference_service(api, desired)
    superseded = None
    if before is not None and _makes_new_revision(before, desired):
        superseded = _predictor_status(before).get("latestCreatedRevision")
    ready = wait_until_ready(
        api,
        name,
        namespace,
        expected_canary_percent=canary_percent_of(desired),
        timeout_s=timeout_s,
        poll_s=poll_s,
        superseded_revision=superseded,
    )
    status = ready.get("status") or {}
    return {
        "action": action,
        "name": name,
        "namespace": namespace,
        "url": status.get("url"),
        "status": status,
    }


def _makes_new_revision(before: dict, desired: dict) -> bool:
    """Whether applying `desired` makes Knative create a revision: a new model, or any other
    change of the predictor than its `canaryTrafficPercent` (new arguments, say). Until that
    revision is ready, the Ready status of the one before would pass a wait."""
    if rolling_out_storage_uri(before) != rolling_out_storage_uri(desired):
        return True
    predictor = desired["spec"]["predictor"]
    wanted = {key: value for key, value in predictor.items() if key != "canaryTrafficPercent"}
    return not _already_applied((before.get("spec") or {}).get("predictor"), wanted)


def canary_percent_of(isvc: dict) -> int | None:
    """The traffic percent the manifest gives its new model, None when it has no canary."""
    spec = isvc.get("spec") or {}
    if deployment_mode_of(isvc) == SERVERLESS:
        return (spec.get("predictor") or {}).get("canaryTrafficPercent")
    canary = spec.get("canary") or []
    return canary[0].get("trafficPercent") if canary else None


def _predictor_status(isvc: dict) -> dict:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def _not_ready_reason(
    isvc: dict, expected_canary_percent: int | None, superseded_revision: str | None
) -> str | None:
    """What the service is still waiting for, or None when it is ready as desired."""
    status = isvc.get("status") or {}
    conditions = {item.get("type"): item for item in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") != "True":
        return "condition Ready is not True"
    if deployment_mode_of(isvc) == SERVERLESS:
        predictor = _predictor_status(isvc)
        created = predictor.get("latestCreatedRevision")
        if not created or predictor.get("latestReadyRevision") != created:
            return "latestReadyRevision differs from latestCreatedRevision"
        if created == superseded_revision:
            return f"no new revision yet (latest is still {created})"
        expected = 100 if expected_canary_percent is None else expected_canary_percent
        latest = [entry for entry in predictor.get("traffic") or [] if entry.get("latestRevision")]
        if not latest or latest[0].get("percent") != expected:
            return f"latest revision does not have {expected} % of traffic"
        return None
    canary_statuses = status.get("canaryStatuses") or []
    if expected_canary_percent is None:
        return "status.canaryStatuses still lists a canary" if canary_statuses else None
    if not any(
        entry.get("ready") and entry.get("trafficPercent") == expected_canary_percent
        for entry in canary_statuses
    ):
        return f"status.canaryStatuses has no ready canary with {expected_canary_percent} %"
    ready = sorted(entry.get("trafficPercent") for entry in canary_statuses if entry.get("ready"))
    wanted = sorted(entry.get("trafficPercent") for entry in isvc["spec"].get("canary") or [])
    if ready != wanted:  # A/B variants: every entry of spec.canary, each ready with its share
        return f"status.canaryStatuses has ready canaries with {ready} %, not {wanted} %"
    return None
