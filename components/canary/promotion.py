"""Promote a canary to all traffic, or roll it back: the InferenceService and MLflow together.

Kubernetes first, MLflow second: the aliases follow what is served, so a failed patch or a
service that never becomes Ready leaves the registry as it was. Every patch goes through
`ctloop.components.deploy.cluster`; the object it would produce is checked against the
KServe CRD first (when the CRD folder is present, as for deploy). Both operations are
idempotent: run again, they send nothing and change no alias, and say so.

KServe 0.21, by deployment mode (see `ctloop.components.deploy.inference_service`):

- Serverless: `spec.predictor` already is the candidate, with `canaryTrafficPercent`.
  Promote removes the field. Roll back in three awaited patches, so the candidate never
  takes more traffic on the way: (1) `canaryTrafficPercent: 0` pins all traffic to the
  previous revision; (2) the champion's storageUri and version label go back into
  `spec.predictor`, still at 0 %, which makes a new revision of the champion's model while
  the old one keeps serving; (3) the field is removed and that revision takes all traffic.
  Removing the field in (2) would send traffic to the latest *ready* revision, the
  candidate's, until the champion's new one is ready. The champion's storageUri is the one
  `promote_to_champion` recorded on its version (`ctloop.storage_uri`), or given explicitly;
  its runtime and own predictor args (a Feast lookup, or none) the ones recorded beside it
  (`ctloop.predictor_runtime`, `ctloop.predictor_args`), not the candidate's.
- Standard: `spec.predictor` is the champion and a `spec.canary[]` entry the candidate (one
  of several during an A/B experiment). Promote makes that entry's predictor the predictor
  and removes `spec.canary` (every other variant with it); roll back removes that entry.

The service's `ctloop.model-version` label ends up naming the version that serves. Each
outcome says which version was champion and which the canary, before and after, for the
promotion's or rollback's decision record (`ctloop.components.canary.promotion_record`, whose
`replay_promotion` and `replay_rollback` are exposed here).

Promotion and rollback share one module, over the size this project aims for: they are two ends
of one state machine over the same service and aliases (with the analysis that picks one, and
finds either already done on a retry), and share every step helper (the patches, the waits,
the service lookups); split, each half would need the other's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from kubernetes import client

from ctloop.components.canary.champion_restore import champion_to_restore, restored_model
from ctloop.components.canary.decision import CanaryDecision, observe_canary
from ctloop.components.canary.measurement import CanaryTarget
from ctloop.components.canary.policy import PROMOTE, CanaryPolicy
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.canary.promotion_record import PROMOTION, ROLLBACK, replay_action
from ctloop.components.deploy import cluster
from ctloop.components.deploy.crd_schema import default_crd_dir, validate_inference_service
from ctloop.components.deploy.inference_service import (
    DEPLOYMENT_MODES,
    MODEL_VERSION_LABEL,
    SERVERLESS,
    DeploymentError,
    deployment_mode_of,
    rolling_out_storage_uri,
)
from ctloop.components.registry import mlflow_registry


def promote(
    api: client.CustomObjectsApi,
    tracking_uri: str,
    *,
    name: str,
    namespace: str,
    registered_model: str,
    version: str,
    deployment_mode: str = "",
    timeout_s: float = 600,
    poll_s: float = 2.0,
) -> dict:
    """Give the canary `version` all traffic and make it the champion.

    Raises:
        DeploymentError: no such service, another mode than `deployment_mode`, or the service
            does not serve `version` (as canary or already at 100 %).
        DeploymentTimeout: the promoted service did not become Ready in `timeout_s`.
        RegistryError: the version is not registered (checked before anything changes).
    """
    mlflow_registry.version_tags(tracking_uri, registered_model, version)  # registered?
    champion = mlflow_registry.version_with_alias(tracking_uri, registered_model)
    isvc = _inference_service(api, name, namespace, deployment_mode)
    spec = isvc["spec"]
    patch = None
    if deployment_mode_of(isvc) == SERVERLESS:
        predictor = spec["predictor"]
        if _version_of(predictor) != version:
            raise DeploymentError(_not_deployed(isvc, version))
        if "canaryTrafficPercent" in predictor:
            patch = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    else:
        canary = spec.get("canary") or []
        entry = _canary_entry(spec, version)
        if entry is not None:
            patch = {
                "metadata": {"labels": {MODEL_VERSION_LABEL: version}},
                "spec": {
                    "predictor": cluster.replacing(spec["predictor"], _as_stable(entry)),
                    "canary": None,
                },
            }
        elif canary or _version_of(spec["predictor"]) != version:
            raise DeploymentError(_not_deployed(isvc, version))
    steps = [] if patch is None else [("promote", patch, None)]
    served, after = _apply_steps(api, isvc, steps, timeout_s, poll_s)
    model = after["spec"]["predictor"].get("model") or {}
    registry = mlflow_registry.promote_to_champion(
        tracking_uri,
        registered_model,
        version,
        storage_uri=rolling_out_storage_uri(isvc) or "",
        predictor_args=model.get("args") or [],
        predictor_runtime=model.get("runtime") or "",
    )
    return _outcome("promote", isvc, served, registry, version, (champion, version), after)


def roll_back(
    api: client.CustomObjectsApi,
    tracking_uri: str,
    *,
    name: str,
    namespace: str,
    registered_model: str,
    version: str,
    reasons: list[str],
    previous_storage_uri: str = "",
    deployment_mode: str = "",
    timeout_s: float = 600,
    poll_s: float = 2.0,
) -> dict:
    """Take the canary `version` out of service and mark it rolled back in MLflow.

    Args:
        reasons: Why, recorded on the version (`ctloop.rolled_back`).
        previous_storage_uri: Serverless only: what to serve again; default the champion's
            recorded `ctloop.storage_uri`.

    Raises:
        DeploymentError: no such service, another mode, or `version` already serves all
            traffic (promoted: deploy another version instead).
        DeploymentTimeout: a rollback step did not become Ready in `timeout_s`.
        RegistryError: `version` is the champion, or a Serverless rollback has no champion
            storageUri to restore.
    """
    mlflow_registry.version_tags(tracking_uri, registered_model, version)  # registered?
    champion = mlflow_registry.version_with_alias(tracking_uri, registered_model)
    isvc = _inference_service(api, name, namespace, deployment_mode)
    where = f"InferenceService {namespace}/{name}"
    spec = isvc["spec"]
    promoted_message = (
        f"{where} serves version {version} to all traffic: it was promoted, so there is no "
        "canary to roll back; deploy the version that should serve instead"
    )
    steps = []
    if deployment_mode_of(isvc) == SERVERLESS:
        predictor = spec["predictor"]
        pinned = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
        unpinned = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
        if _version_of(predictor) == version:
            if "canaryTrafficPercent" not in predictor:
                raise DeploymentError(promoted_message)
            restored_version, storage_uri, served_as = champion_to_restore(
                tracking_uri, registered_model, version, champion, previous_storage_uri
            )
            restored = {
                "metadata": {"labels": {MODEL_VERSION_LABEL: restored_version}},
                "spec": {
                    "predictor": {
                        "canaryTrafficPercent": 0,
                        "labels": {MODEL_VERSION_LABEL: restored_version},
                        "model": restored_model(
                            predictor, storage_uri, restored_version, served_as
                        ),
                    }
                },
            }
            steps = [("pin", pinned, 0), ("restore", restored, 0), ("unpin", unpinned, None)]
        elif predictor.get("canaryTrafficPercent") == 0 and _version_of(predictor) == champion:
            steps = [("unpin", unpinned, None)]  # a rollback that stopped after "restore"
    else:
        canary = spec.get("canary") or []
        entry = _canary_entry(spec, version)
        if entry is not None:
            rest = [other for other in canary if other is not entry]
            newest = _version_of(rest[-1]["predictor"]) if rest else _version_of(spec["predictor"])
            patch = {"spec": {"canary": rest or None}}
            if newest:
                patch["metadata"] = {"labels": {MODEL_VERSION_LABEL: newest}}
            steps = [("remove canary", patch, rest[0]["trafficPercent"] if rest else None)]
        elif not canary and _version_of(spec["predictor"]) == version:
            raise DeploymentError(promoted_message)
    served, after = _apply_steps(api, isvc, steps, timeout_s, poll_s)
    registry = mlflow_registry.record_rollback(tracking_uri, registered_model, version, reasons)
    return _outcome("rollback", isvc, served, registry, version, (champion, champion), after)


def replay_promotion(inputs: dict, policy: str) -> tuple[dict, list[str]]:
    """A promotion record's action re-derived from its trigger (`promotion_record`); a
    promotion has no policy, so `policy` is not read."""
    return replay_action(PROMOTION, inputs)


def replay_rollback(inputs: dict, policy: str) -> tuple[dict, list[str]]:
    """A rollback record's action re-derived from its trigger (`promotion_record`); a
    rollback has no policy, so `policy` is not read."""
    return replay_action(ROLLBACK, inputs)


def run_canary_analysis(
    api: client.CustomObjectsApi,
    prometheus: PrometheusClient,
    policy: CanaryPolicy,
    tracking_uri: str,
    *,
    name: str,
    namespace: str,
    registered_model: str,
    version: str,
    deployment_mode: str = "",
    metrics_model_name: str = "",
    timeout_s: float = 600,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[CanaryDecision | None, dict]:
    """Observe the canary `version` against the champion, then promote or roll it back.

    A version that already serves all traffic as the champion (the first deployment, or a
    rerun after promotion) has nothing to be compared with: it is promoted (which changes
    nothing but records its storageUri) and the decision is None. Likewise a version found
    rolled back, the champion serving all traffic (a retry of a step that rolled it back, then
    failed to log its records): the rollback is applied again, which finishes one that stopped
    part-way and otherwise changes nothing, and the decision is None. Any other service that
    does not serve `version` as its canary is an error.

    Args:
        metrics_model_name: `model_name` label of the predictor's metrics; default `name`
            (KServe names the model after the InferenceService).
    """
    champion = mlflow_registry.version_with_alias(tracking_uri, registered_model)
    isvc = _inference_service(api, name, namespace, deployment_mode)
    options = {
        "name": name,
        "namespace": namespace,
        "registered_model": registered_model,
        "version": version,
        "deployment_mode": deployment_mode,
        "timeout_s": timeout_s,
        "poll_s": poll_s,
    }
    if _canary_version_of(isvc) != version:
        if champion == version:
            return None, promote(api, tracking_uri, **options)
        if _rolled_back(isvc, version, champion, tracking_uri, registered_model):
            began = f"finishing the rollback an earlier canary analysis of version {version} began"
            return None, roll_back(api, tracking_uri, reasons=[began], **options)
        raise DeploymentError(_not_deployed(isvc, version))
    if champion is None:
        raise mlflow_registry.RegistryError(
            f"registered model {registered_model!r} has no {mlflow_registry.CHAMPION}: "
            f"nothing to compare canary version {version} with"
        )
    target = CanaryTarget(metrics_model_name or name, version, champion, namespace)
    decision = observe_canary(prometheus, policy, target, clock=clock, sleep=sleep)
    if decision.action == PROMOTE:
        return decision, promote(api, tracking_uri, **options)
    return decision, roll_back(api, tracking_uri, reasons=decision.reasons, **options)


def _rolled_back(
    isvc: dict, version: str, champion: str | None, tracking_uri: str, registered_model: str
) -> bool:
    """Whether the canary `version` is out of service after a rollback: the champion serves all
    traffic, and the registry tags `version` rolled back, or (Serverless) the champion is
    restored but still pinned at 0 %, the state only a rollback that stopped before its last
    patch leaves. `version` was this run's canary when its analysis began (its deploy step put
    it there), so a rollback found now is that analysis' own."""
    if champion is None or champion == version:
        return False
    spec = isvc["spec"]
    predictor = spec["predictor"]
    if _version_of(predictor) != champion:
        return False
    if deployment_mode_of(isvc) == SERVERLESS and "canaryTrafficPercent" in predictor:
        return predictor["canaryTrafficPercent"] == 0
    if spec.get("canary"):
        return False
    tags = mlflow_registry.version_tags(tracking_uri, registered_model, version)
    return mlflow_registry.ROLLED_BACK_TAG in tags


def _inference_service(
    api: client.CustomObjectsApi, name: str, namespace: str, deployment_mode: str
) -> dict:
    isvc = cluster.get_inference_service(api, name, namespace)
    if isvc is None:
        raise DeploymentError(f"InferenceService {namespace}/{name} does not exist")
    mode = deployment_mode_of(isvc)
    if deployment_mode and DEPLOYMENT_MODES.get(deployment_mode, deployment_mode) != mode:
        raise DeploymentError(
            f"InferenceService {namespace}/{name} runs in deployment mode {mode!r}, "
            f"not {deployment_mode!r}"
        )
    return isvc


def _apply_steps(
    api: client.CustomObjectsApi,
    isvc: dict,
    steps: list[tuple[str, dict, int | None]],
    timeout_s: float,
    poll_s: float,
) -> tuple[list[str], dict]:
    """Validate, send and await each (name, merge patch, expected canary percent) in turn;
    returns the names of the steps that changed the service, and the service after them."""
    crd_dir = default_crd_dir()
    changed = []
    current = isvc
    for step, patch, expected_percent in steps:
        if crd_dir is not None:
            result = cluster.patched_object(current, patch)
            manifest = {key: result[key] for key in ("apiVersion", "kind", "metadata", "spec")}
            validate_inference_service(manifest, crd_dir)
        current, action = cluster.patch_inference_service(
            api,
            current,
            patch,
            expected_canary_percent=expected_percent,
            new_revision=step == "restore",
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
        if action == "patched":
            changed.append(step)
    return changed, current


def _outcome(
    action: str,
    isvc: dict,
    served: list[str],
    registry: list[str],
    version: str,
    champions: tuple[str | None, str | None],
    after: dict,
) -> dict:
    """What was done; `champions` is the champion's version before and after, `isvc` and
    `after` the service before and after."""
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    where = f"InferenceService {namespace}/{name}"
    changes = [f"{where}: {step}" for step in served] + registry
    return {
        "action": action,
        "version": version,
        "inference_service": f"{namespace}/{name}",
        "deployment_mode": deployment_mode_of(isvc),
        "inference_service_steps": served,
        "registry_changes": registry,
        "changes": changes,
        "changed": bool(changes),
        "validated_against_crd": default_crd_dir() is not None,
        "before": {"champion": champions[0], "canary": _canary_version_of(isvc)},
        "after": {"champion": champions[1], "canary": _canary_version_of(after)},
    }


def _as_stable(entry: dict) -> dict:
    """A canary entry's predictor as `spec.predictor`: without the model's container name,
    which the CRD requires on a canary and KServe's webhook refuses on the stable predictor.
    The predictor keeps its own name, so KServe keeps the canary's Deployment (no restart)."""
    predictor = copy.deepcopy(entry["predictor"])
    (predictor.get("model") or {}).pop("name", None)
    return predictor


def _canary_entry(spec: dict, version: str) -> dict | None:
    """Standard mode: the `spec.canary[]` entry serving `version` (a canary, or one of the A/B
    variants), None when none does."""
    entries = spec.get("canary") or []
    return next((e for e in entries if _version_of(e["predictor"]) == version), None)


def _version_of(predictor: dict) -> str | None:
    return (predictor.get("labels") or {}).get(MODEL_VERSION_LABEL)


def _canary_version_of(isvc: dict) -> str | None:
    """The version taking a canary share, None when one version takes all traffic."""
    spec = isvc["spec"]
    if deployment_mode_of(isvc) == SERVERLESS:
        predictor = spec["predictor"]
        return _version_of(predictor) if "canaryTrafficPercent" in predictor else None
    canary = spec.get("canary") or []
    return _version_of(canary[0]["predictor"]) if canary else None


def _not_deployed(isvc: dict, version: str) -> str:
    """Why `version` cannot be promoted or analysed: what the service serves instead."""
    metadata = isvc["metadata"]
    canary = _canary_version_of(isvc)
    if canary is None:
        served = f"version {_version_of(isvc['spec']['predictor'])} to all traffic"
    else:
        served = f"version {canary} as its canary"
    return (
        f"InferenceService {metadata['namespace']}/{metadata['name']} serves {served}, "
        f"not version {version} as a canary: deploy version {version} first"
    )
