"""cluster.py against a Kubernetes API stand-in on 127.0.0.1, through the real `kubernetes` client.

The stand-in (`tests.kube_standin`) stores InferenceServices and applies merge patches the
way the API server does; each test plays the KServe controller by scripting the status
the service reports on successive GETs. It stays for what a real API server will not do on
demand: a 409 race, a 5xx, a request never answered. The same paths against a real
kube-apiserver, as the project's Role: tests/test_deploy_real_apiserver.py.
"""

import json
import socket
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from ctloop.components.deploy import api_client
from ctloop.components.deploy.cluster import (
    DeploymentTimeout,
    apply_inference_service,
    deploy_inference_service,
    get_inference_service,
    wait_until_ready,
)
from ctloop.components.deploy.inference_service import DeploymentError, desired_inference_service
from tests.kube_standin import KubeStandIn

ROLE = Path(__file__).resolve().parents[1] / "manifests" / "rbac" / "role.yaml"
NAME, NAMESPACE = "churn", "ml"
OLD_URI, NEW_URI = "s3://models/churn/1", "s3://models/churn/2"
FAST = {"timeout_s": 5.0, "poll_s": 0.01}


@pytest.fixture
def standin():
    server = KubeStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def api(standin) -> client.CustomObjectsApi:
    return standin.custom_objects_api()


def revision(generation: int) -> str:
    return f"{NAME}-predictor-{generation:05d}"


def serverless_status(obj: dict) -> dict:
    """What KServe reports once a Serverless service has rolled out its spec."""
    generation = obj["metadata"]["generation"]
    percent = obj["spec"]["predictor"].get("canaryTrafficPercent", 100)
    traffic = [{"revisionName": revision(generation), "latestRevision": True, "percent": percent}]
    if percent < 100:
        traffic.append(
            {
                "revisionName": revision(generation - 1),
                "latestRevision": False,
                "percent": 100 - percent,
            }
        )
    return {
        "url": f"http://{NAME}.{NAMESPACE}.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestCreatedRevision": revision(generation),
                "latestReadyRevision": revision(generation),
                "traffic": traffic,
            }
        },
    }


def standard_status(obj: dict) -> dict:
    """What KServe reports once a Standard (raw deployment) service has rolled out its spec."""
    status = {
        "url": f"http://{NAME}-{NAMESPACE}.example.com",
        "deploymentMode": "Standard",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    if obj["spec"].get("canary"):
        percent = obj["spec"]["canary"][0]["trafficPercent"]
        status["canaryStatuses"] = [{"name": "canary-0", "ready": True, "trafficPercent": percent}]
    return status


def controller(rolled_out, reconciles_after: int = 2):
    """Reports the rolled-out status only from the `reconciles_after`-th GET after a write;
    until then the service keeps the status it had (stale, as on a real cluster)."""

    def reconcile(obj: dict, gets_since_write: int) -> dict | None:
        return rolled_out(obj) if gets_since_write >= reconciles_after else None

    return reconcile


def desired(current: dict | None, storage_uri: str, version: str, **options) -> dict:
    return desired_inference_service(
        name=NAME,
        namespace=NAMESPACE,
        storage_uri=storage_uri,
        model_version=version,
        current=current,
        **options,
    )


def seed_served(standin, mode: str, rolled_out) -> dict:
    """A service that already serves the old model at 100 %, Ready."""
    obj = desired(None, OLD_URI, "1", deployment_mode=mode)
    standin.put(obj)
    stored = standin.objects[(NAMESPACE, NAME)]
    stored["status"] = rolled_out(stored)
    return stored


def writes(standin) -> list[tuple[str, object]]:
    return [(method, body) for method, _path, _type, body in standin.writes()]


def test_first_deploy_creates_the_service_and_waits_until_ready(standin, api):
    standin.reconcile = controller(serverless_status, reconciles_after=3)
    manifest = desired(None, NEW_URI, "2")

    outcome = deploy_inference_service(api, manifest, **FAST)

    assert writes(standin) == [("POST", manifest)]
    assert outcome["action"] == "created"
    assert (outcome["name"], outcome["namespace"]) == (NAME, NAMESPACE)
    assert outcome["url"] == f"http://{NAME}.{NAMESPACE}.example.com"
    assert outcome["status"]["components"]["predictor"]["traffic"][0]["percent"] == 100


def test_new_model_is_merge_patched_in_as_a_serverless_canary(standin, api):
    current = seed_served(standin, "Serverless", serverless_status)
    standin.reconcile = controller(serverless_status)

    outcome = deploy_inference_service(
        api, desired(current, NEW_URI, "2", canary_percent=10), **FAST
    )

    [(method, _path, content_type, body)] = standin.writes()
    assert (method, content_type) == ("PATCH", "application/merge-patch+json")
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
    stored = standin.objects[(NAMESPACE, NAME)]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == NEW_URI
    assert stored["metadata"]["labels"]["ctloop.model-version"] == "2"
    assert outcome["action"] == "patched"
    assert outcome["status"]["components"]["predictor"]["traffic"] == [
        {"revisionName": revision(2), "latestRevision": True, "percent": 10},
        {"revisionName": revision(1), "latestRevision": False, "percent": 90},
    ]


def test_full_replacement_waits_for_the_new_revision_not_the_stale_ready_status(standin, api):
    current = seed_served(standin, "Serverless", serverless_status)
    standin.reconcile = controller(serverless_status, reconciles_after=4)

    outcome = deploy_inference_service(
        api, desired(current, NEW_URI, "2", canary_percent=100), **FAST
    )

    assert outcome["status"]["components"]["predictor"]["latestReadyRevision"] == revision(2)


def test_rerun_with_the_same_model_sends_no_write(standin, api):
    standin.reconcile = controller(serverless_status)
    deploy_inference_service(api, desired(None, NEW_URI, "2"), **FAST)
    writes_after_first = len(standin.writes())

    current = get_inference_service(api, NAME, NAMESPACE)
    outcome = deploy_inference_service(api, desired(current, NEW_URI, "2"), **FAST)

    assert outcome["action"] == "unchanged"
    assert len(standin.writes()) == writes_after_first == 1


def test_apply_counts_server_defaults_as_already_applied(standin, api):
    manifest = desired(None, NEW_URI, "2")
    standin.put(manifest)
    stored = standin.objects[(NAMESPACE, NAME)]
    stored["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "1"}}  # webhook default

    _obj, action = apply_inference_service(api, manifest)

    assert action == "unchanged"
    assert standin.writes() == []


def test_standard_mode_canary_goes_to_spec_canary_and_waits_for_canary_status(standin, api):
    current = seed_served(standin, "Standard", standard_status)
    standin.reconcile = controller(standard_status, reconciles_after=3)

    outcome = deploy_inference_service(
        api, desired(current, NEW_URI, "2", deployment_mode="Standard", canary_percent=20), **FAST
    )

    stored = standin.objects[(NAMESPACE, NAME)]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == OLD_URI
    assert stored["spec"]["canary"][0]["trafficPercent"] == 20
    assert stored["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == NEW_URI
    assert "canaryTrafficPercent" not in json.dumps(stored["spec"])
    assert outcome["action"] == "patched"
    assert outcome["status"]["canaryStatuses"] == [
        {"name": "canary-0", "ready": True, "trafficPercent": 20}
    ]


@pytest.mark.parametrize(
    ("mode", "rolled_out", "canary_field"),
    [
        ("Serverless", serverless_status, ("predictor", "canaryTrafficPercent")),
        ("Standard", standard_status, ("canary",)),
    ],
)
def test_replacing_a_canary_removes_the_canary_field_with_a_merge_patch_null(
    standin, api, mode, rolled_out, canary_field
):
    seed_served(standin, mode, rolled_out)
    standin.reconcile = controller(rolled_out, reconciles_after=1)
    current = get_inference_service(api, NAME, NAMESPACE)
    deploy_inference_service(api, desired(current, NEW_URI, "2", deployment_mode=mode), **FAST)

    current = get_inference_service(api, NAME, NAMESPACE)
    deploy_inference_service(
        api,
        desired(current, "s3://models/churn/3", "3", deployment_mode=mode, canary_percent=100),
        **FAST,
    )

    *parents, field = ("spec", *canary_field)
    patch_node, stored_node = standin.writes()[-1][3], standin.objects[(NAMESPACE, NAME)]
    for key in parents:
        patch_node, stored_node = patch_node[key], stored_node[key]
    assert patch_node[field] is None
    assert field not in stored_node
    stored = standin.objects[(NAMESPACE, NAME)]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/3"


def test_not_ready_in_time_raises_timeout_with_the_last_status(standin, api):
    failing = {
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "OOMKilled"}
        ]
    }
    standin.reconcile = lambda obj, gets: failing

    with pytest.raises(DeploymentTimeout) as raised:
        deploy_inference_service(api, desired(None, NEW_URI, "2"), timeout_s=0.2, poll_s=0.02)

    message = str(raised.value)
    assert "condition Ready is not True" in message
    assert json.dumps(failing, sort_keys=True) in message


@pytest.fixture
def through_kubeconfig(standin, tmp_path, monkeypatch):
    """`kube_api()` as a step or the CLI makes it: $KUBECONFIG naming the stand-in, and
    request timeouts short enough for a test."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", standin.host)))
    monkeypatch.setattr(api_client, "REQUEST_TIMEOUT_S", (1.0, 0.2))
    return api_client.kube_api()


SERVICES = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"{SERVICES}/{NAME}"), ("POST", SERVICES), ("PATCH", f"{SERVICES}/{NAME}")],
    ids=["GET", "POST", "PATCH"],
)
def test_a_request_that_gets_no_answer_fails_in_one_line_naming_the_endpoint(
    standin, through_kubeconfig, method, path
):
    if method == "PATCH":
        seed_served(standin, "Serverless", serverless_status)
    standin.unanswered.add(method)

    with pytest.raises(api_client.KubernetesApiError) as raised:
        deploy_inference_service(through_kubeconfig, desired(None, NEW_URI, "2"), **FAST)

    assert (
        str(raised.value) == f"Kubernetes API {method} {standin.host}{path}: no answer within 0.2 s"
    )
    assert raised.value.status is None
    sent = [request for request in standin.requests if request[0] == method]
    assert len(sent) == 1  # not sent again: a POST or PATCH may have been applied


def test_an_error_answer_fails_in_one_line_with_the_status_message(standin, through_kubeconfig):
    seed_served(standin, "Serverless", serverless_status)
    standin.failing["PATCH"] = 500

    with pytest.raises(api_client.KubernetesApiError) as raised:
        deploy_inference_service(through_kubeconfig, desired(None, NEW_URI, "2"), **FAST)

    assert str(raised.value) == (
        f"Kubernetes API PATCH {standin.host}{SERVICES}/{NAME}: 500 Internal Server Error: "
        "etcdserver: request timed out (500)"
    )
    assert raised.value.status == 500


def test_a_closed_port_fails_in_one_line_naming_the_endpoint(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", host)))

    with pytest.raises(api_client.KubernetesApiError) as raised:
        get_inference_service(api_client.kube_api(), NAME, NAMESPACE)

    message = str(raised.value)
    assert message.startswith(f"Kubernetes API GET {host}{SERVICES}/{NAME}: cannot connect: ")
    assert "Connection refused" in message and "\n" not in message


def test_wait_requires_the_expected_traffic_split(standin, api):
    standin.put(desired(None, NEW_URI, "2"))
    standin.reconcile = lambda obj, gets: serverless_status(obj)  # ready at 100 %

    with pytest.raises(DeploymentTimeout, match="does not have 10 % of traffic"):
        wait_until_ready(
            api, NAME, NAMESPACE, expected_canary_percent=10, timeout_s=0.1, poll_s=0.02
        )


def test_apply_refuses_to_switch_deployment_mode_in_place(standin, api):
    seed_served(standin, "Serverless", serverless_status)

    with pytest.raises(DeploymentError, match="'Serverless'.*'Standard'"):
        apply_inference_service(api, desired(None, NEW_URI, "2", deployment_mode="Standard"))

    assert standin.writes() == []


def rbac_verb(method: str, path: str) -> str:
    """The RBAC verb the API server checks for a request."""
    named = not path.split("?")[0].endswith("/inferenceservices")
    if method == "GET":
        return "get" if named else ("watch" if "watch=" in path else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def test_role_grants_exactly_get_create_patch_on_inferenceservices():
    role = yaml.safe_load(ROLE.read_text())

    # The rest of the Role is the distributed train step's (tests/test_trainjob_real_apiserver.py).
    assert [rule for rule in role["rules"] if rule["apiGroups"] == ["serving.kserve.io"]] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch"],
        }
    ]
    assert {group for rule in role["rules"] for group in rule["apiGroups"]} == {
        "serving.kserve.io",
        "trainer.kubeflow.org",
        "",
    }


def test_deploy_uses_only_the_verbs_the_role_grants(standin, api):
    role_verbs = set(yaml.safe_load(ROLE.read_text())["rules"][0]["verbs"])
    standin.reconcile = controller(serverless_status)
    deploy_inference_service(api, desired(None, OLD_URI, "1"), **FAST)
    current = get_inference_service(api, NAME, NAMESPACE)
    deploy_inference_service(api, desired(current, NEW_URI, "2"), **FAST)
    current = get_inference_service(api, NAME, NAMESPACE)
    deploy_inference_service(api, desired(current, NEW_URI, "2"), **FAST)

    used = {rbac_verb(method, path) for method, path, _type, _body in standin.requests}

    assert used == role_verbs == {"get", "create", "patch"}


def _kubeconfig(path: Path, host: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": host}}],
                "users": [{"name": "pipeline", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "standin", "context": {"cluster": "standin", "user": "pipeline"}}
                ],
                "current-context": "standin",
            }
        )
    )
    return path


def test_deploy_component_creates_then_canaries_then_changes_nothing(
    standin, tmp_path, monkeypatch
):
    """The deploy step's own body, as a pipeline runs it, against the API through kubeconfig."""
    from kfp import dsl

    from ctloop.components.deploy.component import deploy_model

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", standin.host)))
    standin.reconcile = controller(serverless_status, reconciles_after=1)

    def deploy(artifact_uri: str, version: str) -> dict:
        manifest = dsl.Artifact(uri=str(tmp_path / f"manifest-{version}.yaml"))
        summary = deploy_model.python_func(
            model=dsl.Model(uri=artifact_uri),
            model_version=version,
            registered_model_name="churn",
            alias="champion" if version == "1" else "challenger",
            manifest=manifest,
            inference_service_name=NAME,
            namespace=NAMESPACE,
            target="cluster",
            timeout_s=10,
        )
        deployment, serves_as = summary
        assert serves_as == ("all-traffic" if version == "1" else "canary")
        return json.loads(deployment)

    first = deploy("minio://mlpipeline/v2/artifacts/run-1/train-model/model", "1")
    assert first["action"] == "created" and first["canary_traffic_percent"] is None
    stored = standin.objects[(NAMESPACE, NAME)]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == (
        "s3://mlpipeline/v2/artifacts/run-1/train-model/model"
    )
    second = deploy("minio://mlpipeline/v2/artifacts/run-2/train-model/model", "2")
    assert second["action"] == "patched" and second["canary_traffic_percent"] == 10
    applied = yaml.safe_load(Path(second["manifest_artifact"]).read_text())
    assert applied["spec"]["predictor"]["canaryTrafficPercent"] == 10
    before = len(standin.writes())
    again = deploy("minio://mlpipeline/v2/artifacts/run-2/train-model/model", "2")
    assert again["action"] == "unchanged" and len(standin.writes()) == before


def test_deploy_component_applies_the_serving_capacity_and_refuses_a_wrong_one_first(
    standin, tmp_path, monkeypatch
):
    from kfp import dsl

    from ctloop.components.deploy.component import deploy_model
    from ctloop.components.deploy.inference_service import DeploymentError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", standin.host)))
    standin.reconcile = controller(serverless_status, reconciles_after=1)

    def deploy(capacity: str) -> None:
        deploy_model.python_func(
            model=dsl.Model(uri="s3://models/churn/1"),
            model_version="1",
            registered_model_name="churn",
            alias="champion",
            manifest=dsl.Artifact(uri=str(tmp_path / "manifest.yaml")),
            inference_service_name=NAME,
            namespace=NAMESPACE,
            serving_capacity=capacity,
            target="cluster",
            timeout_s=10,
        )

    with pytest.raises(DeploymentError, match="serving_capacity has unknown key"):
        deploy('{"replicas": 2}')
    assert standin.writes() == []

    deploy('{"min_replicas": 2, "max_replicas": 5, "limits": {"cpu": "2"}}')
    predictor = standin.objects[(NAMESPACE, NAME)]["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert predictor["model"]["resources"] == {"limits": {"cpu": "2"}}
