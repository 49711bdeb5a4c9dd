"""The InferenceService at each stage of a rollout: canary, shadow, shadow removed, A/B.

`desired_stage` extends `desired_inference_service` (the canary, and the blue-green switch as
its `canary_percent=100`) with the stages that need ctloop's own predictor, because KServe has
no traffic mirroring and no per-variant logging of its own. Each returns the manifests to
apply in turn, the last being the stage itself; every one is built from the service as it is
(`current`), so applying a stage twice changes nothing.

- "shadow": the champion keeps all traffic; its predictor's args gain `--shadow-model-uri=`
  and `--shadow-version=` (the new model's storageUri and version). The predictor scores the
  same rows with the shadow off the request path. Serverless: a new revision of the champion
  takes all traffic; Standard: the champion's pods roll.
- "unshadow": those two arguments removed again (the shadow was rejected).
- "canary" (and "canary" at 100 %, the blue-green switch): see `desired_inference_service`.
  The new predictor is built afresh, so it carries no shadow; in Standard the stable side
  drops the shadow too. In Serverless the previous revision (the shadowed champion) keeps
  its shadow for the rest of the traffic until promotion or rollback replace it.
- "ab": every variant's predictor carries `--variant=<its version>` and
  `--prediction-log-uri=<uri>`, so each answer is tagged and logged for the A/B analysis.
  Serverless holds two variants: the champion's revision (first made to log, at 100 %, as a
  step of its own: Knative's previous revision keeps the args it was created with) and the
  challenger through `canaryTrafficPercent`. Standard holds N: the champion in
  `spec.predictor` and one `spec.canary[]` entry per challenger, each with its
  `trafficPercent`; the champion takes the rest. A new run adds its version beside the
  variants already running.

A Feast lookup (`feature_repo` and `feature_service`, for entity-key requests) puts
`--feast-repo=` and `--feature-service=` on the predictor that serves the new model: the new
predictor of a canary or an A/B stage (and of a first deployment), and in a shadow stage the
champion's, which looks the features up for both models; only on the Feast runtime
(`SERVING_FEAST_RUNTIME`), whose image has Feast. The champion's own lookup is otherwise kept.

Why `spec.canary[]` and not an InferenceGraph `Splitter` for N variants: the 0.20 CRD's
`spec.canary` is a list (atomic, no item limit) and KServe's controller makes one Deployment
per entry (named by its `predictor.name`) and one weighted backend per ready entry in the
service's HTTPRoute, the stable predictor taking 100 minus the canaries' sum (the webhook
refuses a sum over 100). So the variants stay one object: one merge patch sets or ends the
experiment, the CRD validates it here, the project's Role (get/create/patch on
inferenceservices) suffices, and promotion and rollback stay the patches the canary already
uses. A Splitter needs an InferenceGraph (another CRD, a router pod in the request path, and
RBAC for a second kind) plus one InferenceService per variant, created and deleted as the
experiment starts and ends. Serverless mode has no `spec.canary` (the webhook refuses it
there), hence its two variants.
"""

from __future__ import annotations

import copy

from ctloop.components.deploy.inference_service import (
    MODEL_VERSION_LABEL,
    SERVERLESS,
    DeploymentError,
    canonical_mode,
    check_request,
    check_same_mode,
    desired_inference_service,
    owned_fields,
)
from ctloop.components.deploy.predictor_args import (
    EXPERIMENT_ARGS,
    FEAST_ARGS,
    PREDICTOR_RUNTIMES,
    SHADOW_ARGS,
    VARIANT_ARG,
    experiment_args,
    feast_args,
    has_args,
    shadow_args,
    without_args,
)
from ctloop.components.image import SERVING_FEAST_RUNTIME
from ctloop.components.kube_labels import check_labels

CANARY, SHADOW, UNSHADOW, AB = "canary", "shadow", "unshadow", "ab"
STAGES = (CANARY, SHADOW, UNSHADOW, AB)


def desired_stage(stage: str, *, labels: dict | None = None, **arguments) -> list[dict]:
    """The manifests to apply in turn so that the service `name` in `namespace` reaches `stage`
    for `model_version` (served from `storage_uri`), given the service as it is (`current`,
    None when there is none): the `arguments` of `_stage_manifests`.

    With no `current` service there is nothing to compare the new model with: it takes all
    traffic as a first deployment (an "ab" first deployment already logs, as the only
    variant). `canary_percent` is the new version's share for "canary" and "ab".
    `predictor_options` (service_account, min_replicas, max_replicas, resources) go to a
    newly built predictor as in `desired_inference_service`. `feature_repo` and
    `feature_service` (both or neither) give the predictor serving the new model a Feast
    lookup (the module's docstring says which). `labels` (team, project,
    cost-center, ...) go on the service's metadata in every manifest of every stage, the
    current service's own labels kept beside them, so cost tools group its spend whichever
    stage last changed it. The metadata is enough to reach the pods, which is where cost tools
    read labels: KServe's controller puts the InferenceService's labels on every predictor pod
    it makes (`buildObjectMeta` in its predictor reconciler, kserve 0.20), through the Knative
    revision template in Serverless mode (less its `serviceLabelDisallowedList` keys, which it
    strips from `spec.predictor.labels` alike) and the Deployment's pod template in Standard
    mode, `spec.canary[]` Deployments included (built from a copy of the service).

    Raises:
        DeploymentError: an unknown stage; shadow or A/B on a runtime other than ctloop's;
            "ab" without a prediction log URI or with shares that leave the champion nothing;
            a Feast lookup with only one of its two arguments, or on a runtime (the new
            model's, or in a shadow stage the champion's) other than the Feast runtime;
            a shadow or A/B stage while a canary runs; "unshadow" with no service; a label
            Kubernetes refuses, or one setting the model version label; and whatever
            `desired_inference_service` refuses.
    """
    if stage not in STAGES:
        raise DeploymentError(f"rollout stage {stage!r} is not one of {', '.join(STAGES)}")
    labels = check_labels(labels or {}, DeploymentError)
    if MODEL_VERSION_LABEL in labels:
        raise DeploymentError(
            f"label {MODEL_VERSION_LABEL!r} is the served model's version, set by the deploy "
            "step: it cannot be given as a label"
        )
    return [_labelled(manifest, labels) for manifest in _stage_manifests(stage, **arguments)]


def _labelled(isvc: dict, labels: dict[str, str]) -> dict:
    if labels:
        metadata = isvc["metadata"]
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    return isvc


def _stage_manifests(
    stage: str,
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    model_version: str,
    current: dict | None,
    deployment_mode: str = SERVERLESS,
    canary_percent: int = 10,
    runtime: str | None = None,
    prediction_log_uri: str = "",
    feature_repo: str = "",
    feature_service: str = "",
    **predictor_options,
) -> list[dict]:
    service = {
        "name": name,
        "namespace": namespace,
        "storage_uri": storage_uri,
        "model_version": model_version,
        "deployment_mode": deployment_mode,
        "canary_percent": canary_percent,
        "runtime": runtime,
        **predictor_options,
    }
    lookup = _lookup_args(runtime, feature_repo, feature_service)
    if stage == CANARY:
        return [desired_inference_service(current=current, extra_args=lookup, **service)]
    if runtime not in PREDICTOR_RUNTIMES:
        raise DeploymentError(
            f"rollout stage {stage!r} needs ctloop's predictor (serving runtime "
            f"{' or '.join(map(repr, PREDICTOR_RUNTIMES))}), which takes the shadow and variant "
            f"arguments; serving runtime {runtime or ''!r} would not start with them"
        )
    if stage == AB and not prediction_log_uri:
        raise DeploymentError(
            "rollout stage 'ab' needs a prediction log URI: the A/B analysis reads each "
            "variant's answers from it"
        )
    mode = canonical_mode(deployment_mode)
    check_request(name, namespace, model_version, canary_percent, None, None)
    if current is None:
        if stage == UNSHADOW:
            raise DeploymentError(
                f"InferenceService {namespace}/{name} does not exist: there is no shadow to remove"
            )
        extra = experiment_args(model_version, prediction_log_uri) if stage == AB else []
        return [desired_inference_service(current=None, extra_args=extra + lookup, **service)]
    check_same_mode(current, mode)
    if stage == UNSHADOW:
        return [_with_primary_args(current, [])]
    if stage == SHADOW:
        return _shadow(current, storage_uri, model_version, lookup)
    return _ab(current, service, prediction_log_uri, lookup)


def _lookup_args(runtime: str | None, feature_repo: str, feature_service: str) -> list[str]:
    """The Feast lookup's arguments ([] without one), checked."""
    if not feature_repo and not feature_service:
        return []
    if not feature_repo or not feature_service:
        raise DeploymentError(
            f"a Feast lookup needs both feature_repo ({feature_repo!r}) and feature_service "
            f"({feature_service!r}): the predictor looks the service's features up in the "
            "repository"
        )
    _check_feast_runtime(runtime, "the new model's")
    return feast_args(feature_repo, feature_service)


def _check_feast_runtime(runtime: str | None, whose: str) -> None:
    if runtime != SERVING_FEAST_RUNTIME:
        raise DeploymentError(
            f"a Feast lookup (feature_repo, feature_service) needs the serving runtime "
            f"{SERVING_FEAST_RUNTIME!r}, whose image has Feast; {whose} predictor runs on "
            f"{runtime or ''!r}, which would not start with --feast-repo"
        )


def _shadow(current: dict, storage_uri: str, version: str, lookup: list[str]) -> list[dict]:
    _refuse_running_split(current, SHADOW)
    if _primary_model(current).get("storageUri") == storage_uri:
        return [owned_fields(current)]  # the version already serves: nothing to shadow
    if not lookup:
        return [_with_primary_args(current, shadow_args(storage_uri, version))]
    # The champion's predictor looks the features up for the shadow too.
    _check_feast_runtime(_primary_model(current).get("runtime"), "the champion's (shadow's)")
    args = lookup + shadow_args(storage_uri, version)
    return [_with_primary_args(current, args, SHADOW_ARGS + FEAST_ARGS)]


def _ab(current: dict, service: dict, log_uri: str, lookup: list[str]) -> list[dict]:
    version, percent = service["model_version"], service["canary_percent"]
    if not 1 <= percent <= 99:
        raise DeploymentError(
            f"A/B traffic percent {percent} is outside 1..99: the champion must keep a share"
        )
    spec = current["spec"]
    variants = [spec["predictor"]] + [entry["predictor"] for entry in spec.get("canary") or []]
    if any((v.get("model") or {}).get("storageUri") == service["storage_uri"] for v in variants):
        return [owned_fields(current)]  # already a variant: the running split stays
    champion = (spec["predictor"].get("labels") or {}).get(MODEL_VERSION_LABEL, "")
    champion_args = experiment_args(champion, log_uri)
    challenger_args = experiment_args(version, log_uri) + lookup
    if canonical_mode(service["deployment_mode"]) == SERVERLESS:
        _refuse_running_split(current, AB)
        logging = _with_primary_args(current, champion_args, SHADOW_ARGS + EXPERIMENT_ARGS)
        split = desired_inference_service(current=logging, extra_args=challenger_args, **service)
        return [logging, split]
    running = spec.get("canary") or []
    if not all(
        has_args(entry["predictor"]["model"].get("args"), (VARIANT_ARG,)) for entry in running
    ):
        _refuse_running_split(current, AB)
    split = desired_inference_service(current=current, extra_args=challenger_args, **service)
    stable = split["spec"]["predictor"].setdefault("model", {})
    stable["args"] = without_args(stable.get("args"), SHADOW_ARGS + EXPERIMENT_ARGS) + champion_args
    split["spec"]["canary"] = copy.deepcopy(running) + split["spec"]["canary"]
    shares = [entry["trafficPercent"] for entry in split["spec"]["canary"]]
    if sum(shares) >= 100:
        raise DeploymentError(
            f"A/B variants would take {' + '.join(map(str, shares))} = {sum(shares)} % of "
            "traffic, leaving the champion none; lower the traffic percent or end a variant"
        )
    return [split]


def _primary_model(isvc: dict) -> dict:
    return isvc["spec"]["predictor"].get("model") or {}


def _with_primary_args(
    current: dict, args: list[str], replaced: tuple[str, ...] = SHADOW_ARGS
) -> dict:
    """`current`'s owned fields with the primary predictor's args starting with `replaced`
    swapped for `args` (the other args kept, in order)."""
    isvc = owned_fields(current)
    model = isvc["spec"]["predictor"].setdefault("model", {})
    new_args = without_args(model.get("args"), replaced) + args
    if new_args != (model.get("args") or []):
        model["args"] = new_args
    return isvc


def _refuse_running_split(current: dict, stage: str) -> None:
    spec, metadata = current["spec"], current["metadata"]
    if "canaryTrafficPercent" in spec["predictor"] or spec.get("canary"):
        raise DeploymentError(
            f"InferenceService {metadata['namespace']}/{metadata['name']} is splitting traffic "
            f"(a canary or A/B variant runs): promote or roll it back before the {stage!r} stage"
        )
