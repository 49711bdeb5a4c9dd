"""Ending an A/B experiment that the control won: every challenger variant rolled back.

An experiment's challengers are what the service serves beside the champion: in Standard mode
each `spec.canary[]` entry, in Serverless the predictor while it carries
`canaryTrafficPercent`. Each is taken out with `promotion.roll_back`, the same awaited patches
and MLflow record as a canary's rollback, so a rerun sends nothing and changes no alias.
"""

from __future__ import annotations

from kubernetes import client

from ctloop.components.canary.promotion import roll_back
from ctloop.components.deploy import cluster
from ctloop.components.deploy.inference_service import (
    MODEL_VERSION_LABEL,
    SERVERLESS,
    DeploymentError,
    deployment_mode_of,
)


def challenger_versions(isvc: dict) -> list[str]:
    """The versions served beside the champion, in the service's order."""
    spec = isvc["spec"]
    if deployment_mode_of(isvc) == SERVERLESS:
        predictors = [spec["predictor"]] if "canaryTrafficPercent" in spec["predictor"] else []
    else:
        predictors = [entry["predictor"] for entry in spec.get("canary") or []]
    versions = [(p.get("labels") or {}).get(MODEL_VERSION_LABEL) for p in predictors]
    return [version for version in versions if version]


def roll_back_challengers(
    api: client.CustomObjectsApi,
    tracking_uri: str,
    *,
    name: str,
    namespace: str,
    registered_model: str,
    reasons: list[str],
    deployment_mode: str = "",
    timeout_s: float = 600,
    poll_s: float = 2.0,
) -> dict:
    """Roll back every challenger variant of the service; the champion serves alone after.
    `rollbacks` holds each version's `roll_back` outcome, for its own rollback record.

    Raises:
        DeploymentError: no such service; otherwise what `roll_back` raises.
    """
    isvc = cluster.get_inference_service(api, name, namespace)
    if isvc is None:
        raise DeploymentError(f"InferenceService {namespace}/{name} does not exist")
    outcomes = [
        roll_back(
            api,
            tracking_uri,
            name=name,
            namespace=namespace,
            registered_model=registered_model,
            version=version,
            reasons=reasons,
            deployment_mode=deployment_mode,
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
        for version in challenger_versions(isvc)
    ]
    changes = [change for outcome in outcomes for change in outcome["changes"]]
    return {
        "action": "rollback",
        "versions": [outcome["version"] for outcome in outcomes],
        "inference_service": f"{namespace}/{name}",
        "changes": changes,
        "changed": bool(changes),
        "rollbacks": outcomes,
    }
