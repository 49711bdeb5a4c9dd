"""The champion a Serverless rollback serves again: its storageUri, runtime and predictor args.

In Serverless mode the canary lives in the champion's own `spec.predictor`, so a rollback
rebuilds the champion's model fields there (`ctloop.components.canary.promotion`). They come
from what `promote_to_champion` recorded on the champion's version when it was promoted
(`ctloop.storage_uri`, `ctloop.predictor_args`, `ctloop.predictor_runtime`), not from the
candidate's predictor, whose Feast lookup or runtime may differ.
"""

from __future__ import annotations

import json

from ctloop.components.deploy.predictor_args import (
    EXPERIMENT_ARGS,
    PREDICTOR_RUNTIMES,
    SHADOW_ARGS,
    VARIANT_ARG,
    VERSION_ARG,
    has_args,
    without_args,
)
from ctloop.components.registry import mlflow_registry

VERSIONED_ARGS = (VERSION_ARG, VARIANT_ARG)
"""Predictor arguments naming the version served: rewritten when the champion is restored."""
ROLLOUT_ARGS = (VERSION_ARG, *SHADOW_ARGS, *EXPERIMENT_ARGS)
"""Predictor arguments a rollout stage sets, not how a model serves: a restored champion takes
them from the service as it is, not from what it was promoted with."""


def champion_to_restore(
    tracking_uri: str, registered_model: str, version: str, champion: str | None, storage_uri: str
) -> tuple[str, str, tuple[list[str], str] | None]:
    """The champion's version, storageUri and (args, runtime) it served with as recorded on
    its version (None when it was promoted before they were recorded)."""
    if champion is None or champion == version:
        raise mlflow_registry.RegistryError(
            f"registered model {registered_model!r} has no {mlflow_registry.CHAMPION} other "
            f"than version {version}: nothing to roll back to"
        )
    tags = mlflow_registry.version_tags(tracking_uri, registered_model, champion)
    storage_uri = storage_uri or tags.get(mlflow_registry.STORAGE_URI_TAG, "")
    if not storage_uri:
        raise mlflow_registry.RegistryError(
            f"champion version {champion} of {registered_model!r} has no "
            f"{mlflow_registry.STORAGE_URI_TAG} tag: give the storageUri to restore explicitly"
        )
    if mlflow_registry.PREDICTOR_ARGS_TAG not in tags:
        return champion, storage_uri, None
    recorded = tags[mlflow_registry.PREDICTOR_ARGS_TAG]
    try:
        args = json.loads(recorded)
    except json.JSONDecodeError:
        args = None
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise mlflow_registry.RegistryError(
            f"champion version {champion} of {registered_model!r} has tag "
            f"{mlflow_registry.PREDICTOR_ARGS_TAG}={recorded!r}, not a JSON list of strings"
        )
    return champion, storage_uri, (args, tags.get(mlflow_registry.PREDICTOR_RUNTIME_TAG, ""))


def restored_model(
    predictor: dict, storage_uri: str, champion: str, served_as: tuple[list[str], str] | None
) -> dict:
    """The model fields that make a Serverless predictor serve the champion again: its
    storageUri and, for ctloop's runtime, the version it reports (`--version=`, and the A/B
    variant it answers as, `--variant=`), which would otherwise stay the rolled-back
    candidate's in every answer and metric. `served_as` (the champion's recorded args and
    runtime) restores its runtime and its own args too, so a candidate's Feast lookup does not
    outlive it; without a record the candidate's other args and runtime stay. Replica bounds and
    resources stay as the candidate's deploy set them: KServe keeps no record of the
    champion's."""
    model = {"storageUri": storage_uri}
    current = predictor.get("model") or {}
    args = current.get("args") or []
    if served_as is None:
        if has_args(args, VERSIONED_ARGS):
            model["args"] = _with_version(args, champion)
        return model
    own_args, runtime = served_as
    if runtime != (current.get("runtime") or ""):
        model["runtime"] = runtime or None
    restored = own_args
    if runtime in PREDICTOR_RUNTIMES:
        # The rollout's arguments (an A/B experiment the champion logs for) are the service's
        # now, answering as the champion; its own arguments are those it was promoted with.
        rollout = [arg for arg in args if arg.startswith(EXPERIMENT_ARGS)]
        restored = _with_version([VERSION_ARG, *rollout], champion)
        restored += without_args(own_args, ROLLOUT_ARGS)
    if restored != args:
        model["args"] = restored or None
    return model


def _with_version(args: list[str], champion: str) -> list[str]:
    """`args` with those naming the version served (`VERSIONED_ARGS`) naming `champion`."""
    return [
        arg.split("=", 1)[0] + "=" + champion if arg.startswith(VERSIONED_ARGS) else arg
        for arg in args
    ]
