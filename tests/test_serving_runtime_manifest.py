"""The ServingRuntimes, ctloop-xgboost and ctloop-xgboost-feast: valid for KServe's real CRD,
and what deploy names.

Each is built as kubectl applies it (kustomize: the Feast one is derived from the other) and
checked strictly against `serving.kserve.io_servingruntimes.yaml` (unknown fields rejected); its
image, arguments and metrics port are checked against the package version and the server's own
flags; and the training pipeline's deploy step is checked to render an InferenceService that
selects the plain runtime.
"""

import copy
from pathlib import Path

import pytest
import yaml

from ctloop import __version__
from ctloop.components.deploy.crd_schema import (
    SERVING_RUNTIME_CRD_FILE,
    ManifestValidationError,
    default_crd_dir,
    validate_custom_resource,
    validate_inference_service,
)
from ctloop.components.deploy.rollout import RolloutRequest, render
from ctloop.components.image import (
    SERVING_FEAST_IMAGE,
    SERVING_FEAST_RUNTIME,
    SERVING_IMAGE,
    SERVING_RUNTIME,
)
from ctloop.pipelines.training import build_training_pipeline
from ctloop.serving.server import build_parser
from tests.test_manifests import _build as kustomize_build

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests" / "serving"
RUNTIMES = {
    SERVING_RUNTIME: ("serving/runtime", SERVING_IMAGE),
    SERVING_FEAST_RUNTIME: ("serving/feast", SERVING_FEAST_IMAGE),
}
"""Each runtime: the kustomization that builds it alone, and the image it must run."""


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    return default_crd_dir() or pytest.skip("no KServe CRDs: set $CTLOOP_KSERVE_CRDS")


def built_runtime(name: str) -> dict:
    """The ServingRuntime `name` as `kubectl apply -k` builds it."""
    [runtime] = kustomize_build(RUNTIMES[name][0])
    return runtime


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    return {name: built_runtime(name) for name in RUNTIMES}


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request, built) -> dict:
    return copy.deepcopy(built[request.param])


def _container(runtime: dict) -> dict:
    [container] = runtime["spec"]["containers"]
    return container


def test_runtime_validates_strictly_against_the_kserve_crd(runtime, crd_dir):
    validate_custom_resource(runtime, SERVING_RUNTIME_CRD_FILE, crd_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: _container(r).update(argv=["--name=x"]),
            r"^\$\.spec\.containers\[0\]: .*'argv'",
        ),
        (lambda r: r["spec"]["supportedModelFormats"][0].update(autoSelect="no"), "autoSelect"),
        (lambda r: r.update(apiVersion="serving.kserve.io/v1beta1"), r"^\$\.apiVersion: "),
        (lambda r: r.update(kind="InferenceService"), r"^\$\.kind: "),
    ],
    ids=["unknown field", "wrong type", "unserved version", "other kind"],
)
def test_runtime_validation_rejects_what_kserve_would_not_take(runtime, crd_dir, change, message):
    change(runtime)

    with pytest.raises(ManifestValidationError, match=message):
        validate_custom_resource(runtime, SERVING_RUNTIME_CRD_FILE, crd_dir)


def test_runtime_serves_xgboost_only_where_a_service_names_it(runtime):
    assert runtime["metadata"]["name"] in RUNTIMES
    [model_format] = runtime["spec"]["supportedModelFormats"]
    assert (model_format["name"], model_format["autoSelect"]) == ("xgboost", False)
    assert set(runtime["spec"]["protocolVersions"]) == {"v1", "v2"}


def test_runtime_runs_the_serving_image_of_this_package_version(runtime):
    image = _container(runtime)["image"]

    assert image == RUNTIMES[runtime["metadata"]["name"]][1]
    assert image.rpartition(":")[2] == __version__


def test_runtime_args_are_flags_the_server_accepts(runtime):
    container = _container(runtime)
    args = [arg.replace("{{.Name}}", "churn") for arg in container["args"]]

    parsed = build_parser().parse_args(["--host", "0.0.0.0", *args])

    assert "--name={{.Name}}" in container["args"]  # KServe fills in the model name
    assert (parsed.name, parsed.model_dir) == ("churn", "/mnt/models")
    assert [port["containerPort"] for port in container["ports"]] == [parsed.port]


def test_runtime_asks_for_the_servers_metrics_to_be_scraped(runtime):
    annotations = runtime["spec"]["annotations"]
    [port] = _container(runtime)["ports"]

    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


def test_runtime_runs_as_non_root_without_privileges(runtime):
    security = _container(runtime)["securityContext"]

    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_kustomization_builds_the_plain_runtime_and_the_feast_one_on_its_own():
    names = {
        folder: [r["metadata"]["name"] for r in kustomize_build(folder)]
        for folder in ("serving", "serving/feast")
    }

    assert names == {"serving": [SERVING_RUNTIME], "serving/feast": [SERVING_FEAST_RUNTIME]}


def test_the_feast_runtime_is_the_plain_one_on_the_feast_image(built):
    """Derived, not copied: the same arguments, port, resources and security."""
    feast, plain = copy.deepcopy(built[SERVING_FEAST_RUNTIME]), built[SERVING_RUNTIME]
    name = "app.kubernetes.io/name"

    assert (feast["metadata"]["labels"][name], _container(feast)["image"]) == (
        SERVING_FEAST_RUNTIME,
        SERVING_FEAST_IMAGE,
    )
    feast["metadata"]["name"] = feast["metadata"]["labels"][name] = SERVING_RUNTIME
    _container(feast)["image"] = SERVING_IMAGE
    assert feast == plain


def test_training_pipeline_deploys_on_the_ctloop_runtime_by_default(tmp_path, crd_dir):
    inputs = build_training_pipeline().component_spec.inputs
    default = inputs["serving_runtime"].default
    request = RolloutRequest(
        name="ctloop-model",
        namespace="ml",
        model_artifact_uri=str(tmp_path / "model"),
        model_version="1",
        runtime=default,
    )

    outcome = render(request, str(tmp_path / "rendered"))

    assert default == SERVING_RUNTIME == "ctloop-xgboost"
    assert outcome["validated_against_crd"] is True
    rendered = yaml.safe_load(Path(outcome["inference_service_manifest"]).read_text())
    assert rendered["spec"]["predictor"]["model"]["runtime"] == "ctloop-xgboost"
    assert rendered["spec"]["predictor"]["model"]["modelFormat"] == {"name": "xgboost"}
    validate_inference_service(rendered, crd_dir)
