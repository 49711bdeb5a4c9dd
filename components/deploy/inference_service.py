"""The desired KServe InferenceService for a model version: first deploy, canary, or no change.

One pure function turns "serve this model" plus the service as it exists now into the
manifest to apply, so the cluster path and the local (rendered) path compute exactly the
same thing. Manifests are built from the kserve SDK's typed models and serialised by the
Kubernetes client, never written as dicts by hand, so field names cannot drift from the API.

The canary field depends on the deployment mode, because each mode silently ignores the
other's field (kserve#5335):

- "Serverless" (Knative): `spec.predictor` points at the NEW model with
  `canaryTrafficPercent: N`; KServe keeps the previously rolled-out revision for the rest.
- "Standard" (raw deployment, formerly "RawDeployment", KServe >= 0.20): `spec.predictor`
  stays on the current model and `spec.canary: [{trafficPercent: N, predictor: <new>}]`.

The manifests target the KServe 0.20 CRD, so fields the 0.21 SDK knows but that CRD lacks
(`spec.tracing`, `predictor.ephemeralContainers`, `predictor.schedulingGroup`) are never set.

The other rollout stages (shadow, A/B) build on this in `stages`. The module is a little over
this project's usual size because the checks of a request (name, mode, percent, replicas)
belong with the one function that builds from it; `stages` reuses them.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from kserve import (
    V1beta1CanarySpec,
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
)
from kubernetes.client import ApiClient, V1ObjectMeta, V1ResourceRequirements

from ctloop.components.deploy.predictor_args import (
    PREDICTOR_RUNTIMES,
    SHADOW_ARGS,
    VERSION_ARG,
    has_args,
    without_args,
)

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODEL_VERSION_LABEL = "ctloop.model-version"
MODEL_FORMAT = "xgboost"
# The container name KServe gives the model server. The CRD requires it on a canary's model
# (`spec.canary[].predictor.model.name`), and KServe's webhook refuses it on `spec.predictor`
# ("the 'name' field is not allowed in standard predictor"): only canary entries carry it.
MODEL_CONTAINER_NAME = "kserve-container"
SERVERLESS = "Serverless"
STANDARD = "Standard"
# Accepted spellings -> the canonical mode. "RawDeployment" is the pre-0.20 name of Standard.
DEPLOYMENT_MODES = {SERVERLESS: SERVERLESS, STANDARD: STANDARD, "RawDeployment": STANDARD}
# Schemes the KServe storage initializer downloads from; anything else cannot be served.
SERVABLE_SCHEMES = ("s3", "gs", "pvc", "http", "https", "hdfs", "webhdfs", "oci", "hf")

_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class DeploymentError(ValueError):
    """A deployment request that is malformed or impossible (e.g. switching modes in place)."""


def storage_uri_for(artifact_uri: str, minio_scheme: str = "s3") -> str:
    """The `storageUri` KServe needs for a KFP model artifact URI.

    KFP on a cluster stores artifacts as `minio://bucket/key`, which KServe cannot read:
    MinIO speaks S3, so the scheme becomes `minio_scheme` (with the S3 endpoint and
    credentials coming from the predictor's service account). `s3://`, `gs://`, `pvc://`,
    `http(s)://`, `hdfs://`, `webhdfs://`, `oci://` and `hf://` are returned unchanged.

    A local path (what `kfp.local` produces; `file://` URIs included) is returned as an
    absolute path. KServe on a cluster cannot serve it; it exists for local rendering and
    the local model server, which both read the file directly.

    Raises:
        DeploymentError: the URI is empty or has a scheme KServe cannot download from.
    """
    if not artifact_uri:
        raise DeploymentError("artifact URI is empty: cannot derive a KServe storageUri")
    parts = urlsplit(artifact_uri)
    if parts.scheme == "minio":
        return f"{minio_scheme}://{parts.netloc}{parts.path}"
    if parts.scheme in SERVABLE_SCHEMES:
        return artifact_uri
    if parts.scheme == "file":
        return str(Path(parts.path).resolve())
    if parts.scheme == "" or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return str(Path(artifact_uri).resolve())
    raise DeploymentError(
        f"artifact URI {artifact_uri!r} has scheme {parts.scheme!r}; KServe can serve only "
        f"minio:// (rewritten to {minio_scheme}://), {', '.join(SERVABLE_SCHEMES)} or a local path"
    )


def deployment_mode_of(isvc: dict) -> str:
    """The deployment mode of an InferenceService, canonical ("Serverless" or "Standard").

    Read from the `serving.kserve.io/deploymentMode` annotation, else the mode the controller
    reported in `status.deploymentMode`, else KServe's default, Serverless. An unknown
    spelling is returned as written, so a caller comparing modes can name it.
    """
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION) or (isvc.get("status") or {}).get(
        "deploymentMode"
    )
    return DEPLOYMENT_MODES.get(mode or SERVERLESS, mode)


def rolling_out_storage_uri(isvc: dict) -> str | None:
    """The storageUri of the newest model the service rolls out (the canary, if any).

    Serverless: the predictor's model (it is the new revision even during a canary).
    Standard: the canary predictor's model when `spec.canary` is set, else the predictor's.
    """
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    if deployment_mode_of(isvc) == STANDARD and spec.get("canary"):
        predictor = spec["canary"][0].get("predictor") or {}
    return (predictor.get("model") or {}).get("storageUri")


def desired_inference_service(
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    model_version: str,
    deployment_mode: str = SERVERLESS,
    canary_percent: int = 10,
    current: dict | None = None,
    runtime: str | None = None,
    service_account: str | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    resources: dict | None = None,
    labels: dict | None = None,
    extra_args: list[str] | None = None,
) -> dict:
    """The InferenceService to apply so that `storage_uri` is served.

    - No `current` service: the new model takes 100 % (no canary field: KServe gives the
      first revision all traffic anyway).
    - `current` already rolls out `storage_uri` (as its model, or as its canary): the
      current service unchanged, so deploying the same model twice changes nothing; a
      running canary keeps its split (promote/roll back is a separate decision).
    - Otherwise the new model gets `canary_percent` % through the mode's canary field;
      `canary_percent=100` replaces the model outright (no canary field).

    `current` is the object as the API returns it (or as last rendered). The result holds
    apiVersion, kind, metadata (name, namespace, labels, annotations) and spec: the fields
    this project owns. `extra_args` go to the new predictor after `--version=` (ctloop's
    runtimes only: `runtime` must be one of `PREDICTOR_RUNTIMES`).

    In Standard mode the canary's predictor is named for its version (`variant_name`): KServe
    requires a name on every `spec.canary[]` predictor and names its Deployment after it. It
    sets no `maxReplicas` there: KServe gives a canary fixed replicas and refuses the field.
    The stable side loses any shadow arguments (`SHADOW_ARGS`): a canary ends a shadow stage.

    Raises:
        DeploymentError: invalid name, namespace, percent, replicas, resources or model
            version label; an unknown deployment mode; or `current` in another mode.
    """
    mode = canonical_mode(deployment_mode)
    check_request(name, namespace, model_version, canary_percent, min_replicas, max_replicas)
    if extra_args and runtime not in PREDICTOR_RUNTIMES:
        raise DeploymentError(
            f"arguments {extra_args} are for ctloop's predictor, but the serving runtime is "
            f"{runtime!r}, not one of {list(PREDICTOR_RUNTIMES)}: another runtime does not "
            "know them"
        )
    if current is not None:
        check_same_mode(current, mode)
        if rolling_out_storage_uri(current) == storage_uri:
            return owned_fields(current)

    new_predictor = V1beta1PredictorSpec(
        model=V1beta1ModelSpec(
            name=None,
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
            storage_uri=storage_uri,
            runtime=runtime,
            # KServe appends these to the runtime's args. ctloop's predictor then reports the
            # registered version in every answer and metric: what tells canary from primary.
            args=[VERSION_ARG + model_version, *(extra_args or [])]
            if runtime in PREDICTOR_RUNTIMES
            else None,
            resources=_resource_requirements(resources),
        ),
        service_account_name=service_account,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        labels={MODEL_VERSION_LABEL: model_version},
    )
    canary = current is not None and canary_percent < 100
    if not canary:
        spec = V1beta1InferenceServiceSpec(predictor=new_predictor)
    elif mode == SERVERLESS:
        new_predictor.canary_traffic_percent = canary_percent
        spec = V1beta1InferenceServiceSpec(predictor=new_predictor)
    else:
        new_predictor.name = variant_name(model_version)
        new_predictor.model.name = MODEL_CONTAINER_NAME
        new_predictor.max_replicas = None
        spec = V1beta1InferenceServiceSpec(
            predictor=_current_standard_predictor(current),
            canary=[V1beta1CanarySpec(traffic_percent=canary_percent, predictor=new_predictor)],
        )
    # Keep the current spelling of the mode (RawDeployment vs Standard): the annotation is
    # the service's identity and is not ours to rewrite.
    mode_annotation = mode
    if current is not None:
        current_annotations = current["metadata"].get("annotations") or {}
        mode_annotation = current_annotations.get(DEPLOYMENT_MODE_ANNOTATION, mode)
    isvc = V1beta1InferenceService(
        api_version=API_VERSION,
        kind=KIND,
        metadata=V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={**(labels or {}), MODEL_VERSION_LABEL: model_version},
            annotations={DEPLOYMENT_MODE_ANNOTATION: mode_annotation},
        ),
        spec=spec,
    )
    return ApiClient().sanitize_for_serialization(isvc)


def variant_name(model_version: str) -> str:
    """The predictor name of a Standard-mode canary serving `model_version`: `v` + the version
    in lowercase, characters other than letters, digits and '-' as '-' ("2" -> "v2").

    Raises:
        DeploymentError: the result is not a DNS-1035 label KServe accepts as a name.
    """
    candidate = "v" + re.sub(r"[^a-z0-9-]", "-", model_version.lower())
    if len(candidate) > 63 or not _DNS_1035_LABEL.fullmatch(candidate):
        raise DeploymentError(
            f"model_version {model_version!r} gives no predictor name KServe accepts "
            f"({candidate!r} is not a DNS-1035 label)"
        )
    return candidate


def render_yaml(isvc: dict) -> str:
    """The manifest as YAML with sorted keys: the same object always renders the same bytes."""
    return yaml.safe_dump(isvc, sort_keys=True, default_flow_style=False)


def canonical_mode(deployment_mode: str) -> str:
    """The canonical spelling of a deployment mode ("Serverless" or "Standard").

    Raises:
        DeploymentError: an unknown mode, naming the known ones.
    """
    if deployment_mode not in DEPLOYMENT_MODES:
        raise DeploymentError(
            f"deployment_mode {deployment_mode!r} is not supported; "
            f"use one of {sorted(DEPLOYMENT_MODES)}"
        )
    return DEPLOYMENT_MODES[deployment_mode]


def check_same_mode(current: dict, mode: str) -> None:
    """Refuse to change the deployment mode of an existing service (KServe cannot).

    Raises:
        DeploymentError: naming the service and both modes.
    """
    current_mode = deployment_mode_of(current)
    if current_mode != mode:
        metadata = current["metadata"]
        raise DeploymentError(
            f"InferenceService {metadata['namespace']}/{metadata['name']} runs in deployment "
            f"mode {current_mode!r} but {mode!r} was requested; a service cannot switch "
            "modes in place: delete it first or deploy under another name"
        )


def check_request(
    name: str,
    namespace: str,
    model_version: str,
    canary_percent: int,
    min_replicas: int | None,
    max_replicas: int | None,
) -> None:
    """Refuse a name, namespace, version label, canary percent or replica bound KServe would
    not take.

    Raises:
        DeploymentError: naming the field, its value and the rule.
    """
    if len(name) > 63 or not _DNS_1035_LABEL.fullmatch(name):
        raise DeploymentError(
            f"metadata.name {name!r} is not a DNS-1035 label: at most 63 lowercase letters, "
            "digits or '-', starting with a letter and ending with a letter or digit"
        )
    if len(namespace) > 63 or not _DNS_1123_LABEL.fullmatch(namespace):
        raise DeploymentError(
            f"metadata.namespace {namespace!r} is not a DNS-1123 label: at most 63 lowercase "
            "letters, digits or '-', starting and ending with a letter or digit"
        )
    if not model_version or len(model_version) > 63 or not _LABEL_VALUE.fullmatch(model_version):
        raise DeploymentError(
            f"model_version {model_version!r} cannot be the label {MODEL_VERSION_LABEL}: "
            "1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
        )
    if isinstance(canary_percent, bool) or not isinstance(canary_percent, int):
        raise DeploymentError(f"canary_percent {canary_percent!r} must be an integer 1..100")
    if not 1 <= canary_percent <= 100:
        raise DeploymentError(
            f"canary_percent {canary_percent} is outside 1..100 (100 = replace the model)"
        )
    check_replicas(min_replicas, max_replicas)


def check_replicas(min_replicas: int | None, max_replicas: int | None) -> None:
    """Replica bounds KServe accepts: integers >= 0 (None: KServe's default), max >= min.

    Raises:
        DeploymentError: naming the bound and its value.
    """
    for key, value in (("min_replicas", min_replicas), ("max_replicas", max_replicas)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DeploymentError(f"{key} {value!r} must be an integer")
        if value is not None and value < 0:
            raise DeploymentError(f"{key} {value} must be >= 0")
    if min_replicas is not None and max_replicas is not None and max_replicas < min_replicas:
        raise DeploymentError(f"max_replicas {max_replicas} is below min_replicas {min_replicas}")


def _resource_requirements(resources: dict | None) -> V1ResourceRequirements | None:
    if resources is None:
        return None
    unknown = sorted(set(resources) - {"requests", "limits"})
    if unknown:
        raise DeploymentError(
            f"resources has keys {unknown}; only 'requests' and 'limits' are allowed "
            "(e.g. {'requests': {'cpu': '1', 'memory': '2Gi'}})"
        )
    return V1ResourceRequirements(
        requests=resources.get("requests"), limits=resources.get("limits")
    )


def _current_standard_predictor(current: dict) -> dict:
    """The current predictor, verbatim, for Standard mode's stable side of a canary.

    Taken as the API returns it (webhook defaults included) rather than rebuilt, so the
    serving pods are not touched; the kserve SDK cannot deserialise it into typed models
    (its deserialiser does not know the Kubernetes core types). `canaryTrafficPercent` is
    dropped: Standard mode ignores it. So are shadow arguments: a canary ends a shadow stage.
    """
    predictor = copy.deepcopy(current["spec"]["predictor"])
    predictor.pop("canaryTrafficPercent", None)
    model = predictor.get("model") or {}
    if has_args(model.get("args"), SHADOW_ARGS):
        model["args"] = without_args(model["args"], SHADOW_ARGS)
    return predictor


def owned_fields(isvc: dict) -> dict:
    """The fields of an existing service this project manages, as they are now."""
    metadata = isvc["metadata"]
    owned_metadata = {key: metadata[key] for key in ("name", "namespace") if key in metadata}
    for key in ("labels", "annotations"):
        if metadata.get(key):
            owned_metadata[key] = copy.deepcopy(metadata[key])
    return {
        "apiVersion": isvc.get("apiVersion", API_VERSION),
        "kind": isvc.get("kind", KIND),
        "metadata": owned_metadata,
        "spec": copy.deepcopy(isvc["spec"]),
    }
