"""The arguments a rollout gives ctloop's predictor, and editing them in a manifest's args.

KServe appends `spec.predictor.model.args` to the ServingRuntime's container args (its
controller merges the model container into the runtime's, args after the runtime's), so these
reach `python -m ctloop.serving.server` as flags. Only ctloop's runtimes (`PREDICTOR_RUNTIMES`)
know them: a stock runtime would refuse to start, which is why the deploy stages refuse
shadow and A/B stages on any other runtime, and a Feast lookup on any but the Feast runtime.
"""

from __future__ import annotations

from ctloop.components.image import SERVING_FEAST_RUNTIME, SERVING_RUNTIME

PREDICTOR_RUNTIMES = (SERVING_RUNTIME, SERVING_FEAST_RUNTIME)
"""The ServingRuntimes that run ctloop's predictor, without and with Feast."""

VERSION_ARG = "--version="
"""The registered version the predictor serves, reported in every answer and metric."""
SHADOW_MODEL_URI_ARG = "--shadow-model-uri="
SHADOW_VERSION_ARG = "--shadow-version="
SHADOW_ARGS = (SHADOW_MODEL_URI_ARG, SHADOW_VERSION_ARG)
"""A shadow model scored beside the served one, off the request path."""
VARIANT_ARG = "--variant="
PREDICTION_LOG_URI_ARG = "--prediction-log-uri="
EXPERIMENT_ARGS = (VARIANT_ARG, PREDICTION_LOG_URI_ARG)
"""An A/B variant: its name (the version it serves) and where it logs its predictions."""
FEAST_REPO_ARG = "--feast-repo="
FEATURE_SERVICE_ARG = "--feature-service="
FEAST_ARGS = (FEAST_REPO_ARG, FEATURE_SERVICE_ARG)
"""Entity-key requests: the Feast repository (a URI a pod reads) and the feature service whose
features the predictor looks up (only the Feast runtime's image has Feast)."""


def shadow_args(storage_uri: str, version: str) -> list[str]:
    """The arguments that make the predictor score `storage_uri` (version `version`) as a
    shadow."""
    return [SHADOW_MODEL_URI_ARG + storage_uri, SHADOW_VERSION_ARG + version]


def experiment_args(version: str, prediction_log_uri: str) -> list[str]:
    """The arguments of the A/B variant serving `version`, logging under `prediction_log_uri`."""
    return [VARIANT_ARG + version, PREDICTION_LOG_URI_ARG + prediction_log_uri]


def feast_args(feature_repo: str, feature_service: str) -> list[str]:
    """The arguments that make the predictor look up `feature_service`'s features in the Feast
    repository `feature_repo` for instances holding only entity keys."""
    return [FEAST_REPO_ARG + feature_repo, FEATURE_SERVICE_ARG + feature_service]


def without_args(args: list[str] | None, prefixes: tuple[str, ...]) -> list[str]:
    """`args` without those starting with any of `prefixes`."""
    return [arg for arg in args or [] if not arg.startswith(prefixes)]


def has_args(args: list[str] | None, prefixes: tuple[str, ...]) -> bool:
    """Whether any of `args` starts with one of `prefixes`."""
    return any(arg.startswith(prefixes) for arg in args or [])
