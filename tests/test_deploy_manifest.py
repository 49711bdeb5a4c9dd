"""InferenceService manifests: first deploy, canary per mode, idempotence, and CRD validation.

Every manifest built here is validated against KServe's real CRD (../shared/kserve), closed
against unknown fields; those tests skip when the CRD folder is absent.
"""

import copy
from pathlib import Path

import pytest
import yaml

from ctloop.components.deploy.crd_schema import (
    CRD_DIR_ENV,
    ManifestValidationError,
    default_crd_dir,
    validate_inference_service,
)
from ctloop.components.deploy.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    MODEL_VERSION_LABEL,
    DeploymentError,
    deployment_mode_of,
    desired_inference_service,
    render_yaml,
    storage_uri_for,
)

OLD_URI = "s3://models/churn/1"
NEW_URI = "s3://models/churn/2"


@pytest.fixture(scope="module")
def crd_dir() -> Path:
    found = default_crd_dir()
    if found is None:
        pytest.skip(f"KServe CRDs not found: set ${CRD_DIR_ENV} or provide ../shared/kserve")
    return found


@pytest.fixture
def build(crd_dir):
    """desired_inference_service, with every result validated against the real CRD."""

    def build_and_validate(**overrides) -> dict:
        arguments = {
            "name": "churn",
            "namespace": "ml",
            "storage_uri": NEW_URI,
            "model_version": "2",
        }
        isvc = desired_inference_service(**{**arguments, **overrides})
        validate_inference_service(isvc, crd_dir)
        return isvc

    return build_and_validate


def served(build, mode: str, storage_uri: str = OLD_URI, version: str = "1") -> dict:
    """A service as it exists after a first deploy of `storage_uri`."""
    return build(storage_uri=storage_uri, model_version=version, deployment_mode=mode)


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_first_deploy_gives_new_model_all_traffic_without_canary_fields(build, mode):
    isvc = build(deployment_mode=mode, canary_percent=10)

    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["annotations"] == {DEPLOYMENT_MODE_ANNOTATION: mode}
    assert isvc["metadata"]["labels"] == {MODEL_VERSION_LABEL: "2"}
    assert isvc["spec"] == {
        "predictor": {
            "labels": {MODEL_VERSION_LABEL: "2"},
            "model": {"modelFormat": {"name": "xgboost"}, "storageUri": NEW_URI},
        }
    }


def test_serverless_canary_points_predictor_at_new_model(build):
    current = served(build, "Serverless")

    isvc = build(current=current, canary_percent=25)

    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == NEW_URI
    assert predictor["canaryTrafficPercent"] == 25
    assert "canary" not in isvc["spec"]
    assert isvc["metadata"]["labels"][MODEL_VERSION_LABEL] == "2"


def test_standard_canary_keeps_predictor_on_current_model_and_adds_spec_canary(build):
    current = served(build, "Standard")

    isvc = build(current=current, deployment_mode="Standard", canary_percent=10)

    assert isvc["spec"]["predictor"] == current["spec"]["predictor"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == OLD_URI
    [canary] = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["model"]["storageUri"] == NEW_URI
    assert canary["predictor"]["labels"] == {MODEL_VERSION_LABEL: "2"}
    assert "canaryTrafficPercent" not in yaml.safe_dump(isvc)


def test_standard_canary_drops_ignored_canary_traffic_percent_from_current(build):
    current = served(build, "Standard")
    current["spec"]["predictor"]["canaryTrafficPercent"] = 30  # set by hand, ignored by KServe

    isvc = build(current=current, deployment_mode="Standard")

    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_canary_percent_100_replaces_model_without_canary_fields(build, mode):
    current = served(build, mode)

    isvc = build(current=current, deployment_mode=mode, canary_percent=100)

    assert isvc["spec"] == {
        "predictor": {
            "labels": {MODEL_VERSION_LABEL: "2"},
            "model": {"modelFormat": {"name": "xgboost"}, "storageUri": NEW_URI},
        }
    }


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_same_model_twice_returns_current_unchanged(build, mode):
    current = served(build, mode, storage_uri=NEW_URI, version="2")

    again = build(current=current, deployment_mode=mode, canary_percent=10)

    assert again == current


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_redeploying_the_model_in_canary_keeps_the_running_split(build, mode):
    canary = build(current=served(build, mode), deployment_mode=mode, canary_percent=20)
    from_api = {**copy.deepcopy(canary), "status": {"url": "http://x"}}
    from_api["metadata"].update(generation=2, resourceVersion="7")

    again = build(current=from_api, deployment_mode=mode, canary_percent=50)

    assert again == canary


def test_rawdeployment_current_is_standard_and_keeps_its_annotation(build):
    current = served(build, "Standard")
    current["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] = "RawDeployment"

    isvc = build(current=current, deployment_mode="Standard")

    assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == "RawDeployment"
    assert isvc["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == NEW_URI


def test_mode_switch_in_place_is_rejected_naming_both_modes(build):
    current = served(build, "Serverless")

    with pytest.raises(DeploymentError, match="'Serverless'.*'Standard'"):
        build(current=current, deployment_mode="Standard")


def test_unknown_deployment_mode_is_rejected(build):
    with pytest.raises(DeploymentError, match="'ModelMesh' is not supported"):
        build(deployment_mode="ModelMesh")


@pytest.mark.parametrize("name", ["Churn", "1churn", "churn_model", "churn-", "c" * 64, ""])
def test_name_that_is_not_a_dns_1035_label_is_rejected(build, name):
    with pytest.raises(DeploymentError, match="metadata.name .* is not a DNS-1035 label"):
        build(name=name)


@pytest.mark.parametrize("percent", [0, 101, -5, True, 10.0])
def test_canary_percent_outside_1_to_100_is_rejected(build, percent):
    with pytest.raises(DeploymentError, match="canary_percent"):
        build(canary_percent=percent)


@pytest.mark.parametrize("version", ["", "v 2", "-2", "x" * 64])
def test_model_version_that_cannot_be_a_label_is_rejected(build, version):
    with pytest.raises(DeploymentError, match=MODEL_VERSION_LABEL):
        build(model_version=version)


def test_runtime_account_replicas_and_resources_reach_the_predictor(build):
    isvc = build(
        runtime="kserve-xgbserver",
        service_account="models-reader",
        min_replicas=1,
        max_replicas=3,
        resources={"requests": {"cpu": 1, "memory": "2Gi"}, "limits": {"nvidia.com/gpu": "1"}},
        labels={"team": "churn"},
    )

    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "models-reader"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert predictor["model"]["runtime"] == "kserve-xgbserver"
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": 1, "memory": "2Gi"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert isvc["metadata"]["labels"] == {"team": "churn", MODEL_VERSION_LABEL: "2"}


def test_ctloops_runtime_is_told_the_registered_version_other_runtimes_are_not(build):
    ours = build(runtime="ctloop-xgboost", model_version="7")["spec"]["predictor"]["model"]
    assert ours["args"] == ["--version=7"]
    theirs = build(runtime="kserve-xgbserver", model_version="7")["spec"]["predictor"]["model"]
    assert "args" not in theirs


def test_unknown_resources_key_is_rejected(build):
    with pytest.raises(DeploymentError, match=r"\['limit'\]"):
        build(resources={"limit": {"cpu": "1"}})


def test_max_replicas_below_min_is_rejected(build):
    with pytest.raises(DeploymentError, match="max_replicas 1 is below min_replicas 2"):
        build(min_replicas=2, max_replicas=1)


@pytest.mark.parametrize(
    ("artifact_uri", "expected"),
    [
        ("minio://mlpipeline/v2/artifacts/model", "s3://mlpipeline/v2/artifacts/model"),
        ("s3://bucket/model", "s3://bucket/model"),
        ("gs://bucket/model", "gs://bucket/model"),
        ("pvc://models-pvc/churn", "pvc://models-pvc/churn"),
        ("https://example.com/model.bst", "https://example.com/model.bst"),
        ("/tmp/local_outputs/model", "/tmp/local_outputs/model"),
        ("file:///tmp/local_outputs/model", "/tmp/local_outputs/model"),
    ],
)
def test_storage_uri_for_maps_kfp_artifact_uris(artifact_uri, expected):
    assert storage_uri_for(artifact_uri) == expected


def test_storage_uri_for_makes_relative_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert storage_uri_for("outputs/model") == str(tmp_path.resolve() / "outputs" / "model")


def test_storage_uri_for_uses_the_given_minio_scheme():
    assert storage_uri_for("minio://b/m", minio_scheme="gs") == "gs://b/m"


@pytest.mark.parametrize("artifact_uri", ["", "ftp://host/model"])
def test_storage_uri_for_rejects_what_kserve_cannot_serve(artifact_uri):
    with pytest.raises(DeploymentError, match="artifact URI"):
        storage_uri_for(artifact_uri)


def test_deployment_mode_of_reads_annotation_then_status_then_defaults_to_serverless():
    assert deployment_mode_of({"metadata": {}}) == "Serverless"
    raw = {"metadata": {"annotations": {DEPLOYMENT_MODE_ANNOTATION: "RawDeployment"}}}
    assert deployment_mode_of(raw) == "Standard"
    assert deployment_mode_of({"metadata": {}, "status": {"deploymentMode": "Standard"}}) == (
        "Standard"
    )


def test_render_yaml_is_deterministic_and_round_trips(build):
    isvc = build()
    reordered = dict(reversed(list(isvc.items())))

    assert render_yaml(reordered) == render_yaml(isvc)
    assert yaml.safe_load(render_yaml(isvc)) == isvc


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("spec", "predictor"), "foo"),
        (("spec",), "tracing"),
        (("spec", "predictor"), "schedulingGroup"),
    ],
)
def test_crd_validation_rejects_fields_the_crd_does_not_define(build, crd_dir, path, field):
    isvc = build()
    node = isvc
    for key in path:
        node = node[key]
    node[field] = {}

    with pytest.raises(ManifestValidationError) as raised:
        validate_inference_service(isvc, crd_dir)

    assert str(raised.value).startswith("$." + ".".join(path) + ":")
    assert repr(field) in str(raised.value)


def test_crd_validation_names_path_of_a_wrongly_typed_value(build, crd_dir):
    isvc = build(current=served(build, "Standard"), deployment_mode="Standard")
    isvc["spec"]["canary"][0]["trafficPercent"] = "ten"

    with pytest.raises(ManifestValidationError, match=r"^\$\.spec\.canary\[0\]\.trafficPercent: "):
        validate_inference_service(isvc, crd_dir)


def test_crd_validation_accepts_int_or_string_quantities_only(build, crd_dir):
    isvc = build(resources={"limits": {"cpu": 2, "memory": "4Gi"}})
    isvc["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = [2]

    with pytest.raises(ManifestValidationError, match=r"resources\.limits\.cpu"):
        validate_inference_service(isvc, crd_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"apiVersion": "serving.kserve.io/v1alpha1"}, r"\$\.apiVersion"),
        ({"kind": "ServingRuntime"}, r"\$\.kind"),
        ({"metadata": {"namespace": "ml"}}, r"\$\.metadata\.name"),
    ],
)
def test_crd_validation_checks_identity_fields(build, crd_dir, change, message):
    isvc = {**build(), **change}

    with pytest.raises(ManifestValidationError, match=message):
        validate_inference_service(isvc, crd_dir)


def test_default_crd_dir_refuses_a_configured_folder_without_the_crd(tmp_path, monkeypatch):
    monkeypatch.setenv(CRD_DIR_ENV, str(tmp_path))

    with pytest.raises(FileNotFoundError, match=CRD_DIR_ENV):
        default_crd_dir()


def test_default_crd_dir_honours_the_environment(crd_dir, monkeypatch):
    monkeypatch.setenv(CRD_DIR_ENV, str(crd_dir))

    assert default_crd_dir() == crd_dir
