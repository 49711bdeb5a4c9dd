"""Deploy, canary, promote and roll back against a real kube-apiserver, as the project's Role.

Every call is ctloop's own (components/deploy/cluster.py, components/canary/promotion.py),
authenticated as a service account bound only to the Role in manifests/rbac/ (tests/envtest.py
starts the server once per run and makes that subject). No KServe controller runs: a
`StatusWriter` (tests/kserve_status.py) plays it, writing the status (Ready, traffic) of each
new generation through the status subresource. Both deployment modes; a deployment also with
a Feast lookup (the Feast runtime, --feast-repo and --feature-service), read back as sent.

What the stand-in (tests/kube_standin.py) cannot show and these do: the KServe CRD's schema,
defaults and pruning applied to every write, RBAC enforced on every request, generations and
resourceVersions as the API server keeps them, and the status subresource.
"""

import contextlib
import json

import pytest
from kubernetes import client
from mlflow import MlflowClient

from ctloop.components.canary import promotion
from ctloop.components.canary.policy import parse_canary_policy
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.deploy import cluster
from ctloop.components.deploy.api_client import KubernetesApiError
from ctloop.components.deploy.inference_service import DeploymentError, desired_inference_service
from ctloop.components.deploy.serving_capacity import parse_serving_capacity
from ctloop.components.deploy.stages import desired_stage
from ctloop.components.image import SERVING_RUNTIME
from ctloop.components.registry import mlflow_registry
from ctloop.pipelines.cli import main
from tests import envtest, sqlite_registry
from tests.envtest import record_requests
from tests.fake_clock import FakeClock
from tests.kserve_status import StatusWriter
from tests.prometheus_standin import NOW, CannedPrometheus, version_figures
from tests.test_deploy_feast_lookup import FEAST, LOOKUP, new_predictor

envtest.require_apiserver()
# Fixtures: the run's API server, and a SQLite MLflow registry for the module.
kube_apiserver = envtest.kube_apiserver
tracking_uri = sqlite_registry.tracking_uri
MODES = ["Serverless", "Standard"]
NAME = "churn"
URIS = {version: f"s3://models/churn/{version}" for version in ("1", "2", "3")}
VERSION_LABEL = "ctloop.model-version"
FAST = {"timeout_s": 30.0, "poll_s": 0.02}
# Deployments without and with a Feast lookup (tests/test_deploy_feast_lookup.py): what the
# deploy step is given, and the arguments the predictor serving the new model then has.
LOOKUPS = [pytest.param({}, [], id="plain"), pytest.param(FEAST, LOOKUP, id="feast")]


class Namespace:
    """A namespace of the real server where ctloop acts as the Role-bound service account
    and a `StatusWriter` plays KServe; `sent` lists every request ctloop's client sent."""

    def __init__(self, server, writer: StatusWriter, mode: str, tracking_uri: str, model: str):
        self.namespace, self.mode, self.writer = writer.namespace, mode, writer
        self.tracking_uri, self.model = tracking_uri, model
        self.subject = server.role_bound(self.namespace)
        self.api = self.subject.custom_objects_api()
        self.sent = record_requests(self.api)
        self.admin = writer.api

    def deploy(self, version: str, canary_percent: int = 10, **lookup) -> dict:
        """ctloop's deploy step at its default stage: a first deployment, else a canary;
        `lookup` is a Feast lookup (the runtime, feature_repo, feature_service)."""
        [outcome] = self.apply_stage("canary", version, canary_percent, **lookup)
        return outcome

    def apply_stage(self, stage: str, version: str, percent: int = 10, **options) -> list[dict]:
        """ctloop's deploy step for `stage`: read the service, compute the stage's manifests
        (`options` as `desired_stage` takes them; runtime ctloop-xgboost unless given), apply
        and await each; returns what each apply did."""
        options = {"runtime": SERVING_RUNTIME, **options}
        current = cluster.get_inference_service(self.api, NAME, self.namespace)
        steps = desired_stage(
            stage,
            name=NAME,
            namespace=self.namespace,
            storage_uri=URIS[version],
            model_version=version,
            current=current,
            deployment_mode=self.mode,
            canary_percent=percent,
            **options,
        )
        return [cluster.deploy_inference_service(self.api, step, **FAST) for step in steps]

    def stored(self) -> dict:
        """The service as the server holds it, read as the admin (not one of ctloop's calls)."""
        return self.admin.get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices", NAME
        )

    def writes_since(self, mark: int) -> list[tuple[str, str]]:
        return [(method, path) for method, path in self.sent[mark:] if method != "GET"]

    def options(self, version: str = "2") -> dict:
        return {
            "name": NAME,
            "namespace": self.namespace,
            "registered_model": self.model,
            "version": version,
            **FAST,
        }

    def serve_champion_and_canary(self) -> None:
        """Version 1 deployed and promoted to champion, version 2 deployed as a 10 % canary,
        both registered: where canary analysis, promotion and rollback start."""
        registry = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        registry.create_registered_model(self.model)
        for version in ("1", "2"):
            registry.create_model_version(self.model, source=URIS[version])
        self.deploy("1")
        registry.set_registered_model_alias(self.model, "champion", "1")
        promotion.promote(self.api, self.tracking_uri, **self.options("1"))
        self.deploy("2")
        registry.set_registered_model_alias(self.model, "challenger", "2")

    def aliases(self) -> dict[str, str]:
        model = mlflow_registry.client(self.tracking_uri).get_registered_model(self.model)
        return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture
def space(kube_apiserver, tracking_uri):
    """Makes a `Namespace` in a deployment mode; its status writer stops with the test."""
    with contextlib.ExitStack() as writers:

        def make(mode: str) -> Namespace:
            namespace = kube_apiserver.namespace(mode.lower())
            admin = kube_apiserver.admin.custom_objects_api()
            writer = writers.enter_context(StatusWriter(admin, namespace))
            return Namespace(kube_apiserver, writer, mode, tracking_uri, f"churn-{namespace}")

        yield make


def services_path(namespace: str) -> str:
    return f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"


def assert_serves(ns: Namespace, version: str, canary: str | None = None) -> dict:
    """The server holds `version` taking all traffic, or `canary` taking 10 % beside it."""
    stored = ns.stored()
    spec, status = stored["spec"], stored["status"]
    assert stored["metadata"]["labels"][VERSION_LABEL] == (canary or version)
    if ns.mode == "Serverless":
        predictor = spec["predictor"]
        assert predictor["model"]["storageUri"] == URIS[canary or version]
        assert predictor.get("canaryTrafficPercent") == (10 if canary else None)
        latest = [e for e in status["components"]["predictor"]["traffic"] if e["latestRevision"]]
        assert latest[0]["percent"] == (10 if canary else 100)
    else:
        assert spec["predictor"]["model"]["storageUri"] == URIS[version]
        assert [c["predictor"]["model"]["storageUri"] for c in spec.get("canary", [])] == (
            [URIS[canary]] if canary else []
        )
        assert [s["trafficPercent"] for s in status.get("canaryStatuses", [])] == (
            [10] if canary else []
        )
    return stored


@pytest.mark.parametrize(("lookup", "lookup_args"), LOOKUPS)
@pytest.mark.parametrize("mode", MODES)
def test_deploy_creates_then_sends_nothing_then_patches_in_a_canary(
    space, mode, lookup, lookup_args
):
    ns = space(mode)

    assert ns.deploy("1", **lookup)["action"] == "created"
    created = assert_serves(ns, "1")
    assert created["metadata"]["generation"] == 1
    assert ns.writes_since(0) == [("POST", services_path(ns.namespace))]
    model = created["spec"]["predictor"]["model"]
    assert model["runtime"] == lookup.get("runtime", SERVING_RUNTIME)
    assert model["args"] == ["--version=1", *lookup_args]

    mark = len(ns.sent)
    assert ns.deploy("1", **lookup)["action"] == "unchanged"
    assert ns.writes_since(mark) == []
    again = ns.stored()["metadata"]
    assert (again["generation"], again["resourceVersion"]) == (
        1,
        created["metadata"]["resourceVersion"],
    )

    mark = len(ns.sent)
    assert ns.deploy("2", **lookup)["action"] == "patched"
    assert ns.writes_since(mark) == [("PATCH", f"{services_path(ns.namespace)}/{NAME}")]
    canary = assert_serves(ns, "1", canary="2")
    assert canary["metadata"]["generation"] == 2
    assert new_predictor(canary)["model"]["args"] == ["--version=2", *lookup_args]
    mark = len(ns.sent)
    assert ns.deploy("2", **lookup)["action"] == "unchanged"
    assert ns.writes_since(mark) == []


@pytest.mark.parametrize("mode", MODES)
def test_promotion_gives_the_canary_all_traffic_and_a_rerun_sends_nothing(space, mode):
    ns = space(mode)
    ns.serve_champion_and_canary()

    outcome = promotion.promote(ns.api, ns.tracking_uri, **ns.options())

    assert outcome["inference_service_steps"] == ["promote"]
    assert_serves(ns, "2")
    assert ns.aliases() == {"champion": "2"}
    mark = len(ns.sent)
    rerun = promotion.promote(ns.api, ns.tracking_uri, **ns.options())
    assert rerun["changed"] is False and ns.writes_since(mark) == []


@pytest.mark.parametrize(
    ("mode", "steps"),
    [("Serverless", ["pin", "restore", "unpin"]), ("Standard", ["remove canary"])],
)
def test_rollback_serves_the_champion_again_and_a_rerun_sends_nothing(space, mode, steps):
    ns = space(mode)
    ns.serve_champion_and_canary()

    outcome = promotion.roll_back(ns.api, ns.tracking_uri, reasons=["paged"], **ns.options())

    assert outcome["inference_service_steps"] == steps
    assert_serves(ns, "1")
    assert ns.aliases() == {"champion": "1"}
    if mode == "Serverless":  # the canary's revision never took more than its 10 %
        history = ns.writer.revisions[NAME].state["history"]
        canary_revision = f"{NAME}-predictor-00002"
        assert max(split.get(canary_revision, 0) for split in history) == 10
    mark = len(ns.sent)
    rerun = promotion.roll_back(ns.api, ns.tracking_uri, reasons=["again"], **ns.options())
    assert rerun["changed"] is False and ns.writes_since(mark) == []


@pytest.mark.parametrize(
    ("mode", "canary_figures", "action"),
    [
        ("Serverless", version_figures(), "promote"),
        ("Standard", version_figures(ok=9.0, error=1.0), "rollback"),
    ],
)
def test_canary_analysis_and_its_ready_waits_need_only_the_role(
    space, mode, canary_figures, action
):
    ns = space(mode)
    ns.serve_champion_and_canary()
    prometheus = CannedPrometheus({"1": version_figures(), "2": canary_figures})
    clock = FakeClock(NOW)
    try:
        decision, outcome = promotion.run_canary_analysis(
            ns.api,
            PrometheusClient(prometheus.url),
            parse_canary_policy('{"bake_time_s": 60, "step_s": 30, "error_rate": {"max": 0.01}}'),
            ns.tracking_uri,
            deployment_mode=mode,
            metrics_model_name=NAME,
            clock=clock,
            sleep=clock.sleep,
            **ns.options(),
        )
    finally:
        prometheus.stop()

    assert (decision.verdict, outcome["action"]) == (action, action)
    assert_serves(ns, "2" if action == "promote" else "1")
    assert {method for method, _path in ns.sent} == {"GET", "POST", "PATCH"}


def test_the_role_refuses_what_ctloop_never_does_and_ctloop_says_so_in_one_line(
    space,
    kube_apiserver,
):
    ns = space("Serverless")
    ns.deploy("1")
    group = ("serving.kserve.io", "v1beta1")

    for refused in (
        lambda: ns.api.list_namespaced_custom_object(*group, ns.namespace, "inferenceservices"),
        lambda: ns.api.delete_namespaced_custom_object(
            *group, ns.namespace, "inferenceservices", NAME
        ),
    ):
        with pytest.raises(client.ApiException) as raised:
            refused()
        assert raised.value.status == 403

    elsewhere = kube_apiserver.namespace("unbound")
    with pytest.raises(KubernetesApiError) as raised:
        cluster.get_inference_service(ns.api, NAME, elsewhere)
    assert str(raised.value) == (
        f"Kubernetes API GET {kube_apiserver.host}{services_path(elsewhere)}/{NAME}: "
        f'403 Forbidden: inferenceservices.serving.kserve.io "{NAME}" is forbidden: User '
        f'"{ns.subject.user}" cannot get resource "inferenceservices" in API group '
        f'"serving.kserve.io" in the namespace "{elsewhere}"'
    )


def test_a_service_the_crd_refuses_fails_in_one_line_naming_the_field(space):
    ns = space("Standard")
    desired = desired_inference_service(
        name=NAME, namespace=ns.namespace, storage_uri=URIS["1"], model_version="1"
    )
    desired["spec"]["predictor"]["minReplicas"] = "two"

    with pytest.raises(KubernetesApiError) as raised:
        cluster.apply_inference_service(ns.api, desired)

    message = str(raised.value)
    assert raised.value.status == 422 and "\n" not in message
    assert message.startswith(
        f"Kubernetes API POST {ns.subject.host}{services_path(ns.namespace)}: 422"
    )
    assert "spec.predictor.minReplicas" in message


def test_cli_promotes_through_the_role_bound_kubeconfig(space, monkeypatch, capsys):
    ns = space("Serverless")
    ns.serve_champion_and_canary()
    monkeypatch.setenv("KUBECONFIG", str(ns.subject.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    code = main(
        ["promote", "--name", NAME, "--namespace", ns.namespace, "--version", "2"]
        + ["--registered-model", ns.model, "--mlflow-tracking-uri", ns.tracking_uri]
        + ["--timeout", "30"]
    )

    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["inference_service_steps"] == ["promote"]
    assert_serves(ns, "2")


@pytest.mark.parametrize("mode", MODES)
def test_deploy_step_applies_its_serving_capacity_through_the_role_bound_kubeconfig(
    space, mode, monkeypatch, tmp_path
):
    """The pipeline's deploy step itself (kube_api() from $KUBECONFIG, as a local run has it)."""
    from kfp import dsl

    from ctloop.components.deploy.component import deploy_model

    ns = space(mode)
    monkeypatch.setenv("KUBECONFIG", str(ns.subject.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    capacity = {"min_replicas": 0, "max_replicas": 3}
    capacity |= {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}}

    def deploy() -> dict:
        summary, _serves_as = deploy_model.python_func(
            model=dsl.Model(uri=URIS["1"]),
            model_version="1",
            registered_model_name=ns.model,
            alias="champion",
            manifest=dsl.Artifact(uri=str(tmp_path / "manifest.yaml")),
            inference_service_name=NAME,
            namespace=ns.namespace,
            deployment_mode=mode,
            serving_capacity=json.dumps(capacity),
            timeout_s=30,
        )
        return json.loads(summary)

    assert deploy()["action"] == "created"
    created = ns.stored()
    predictor = created["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 3)
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2"},
    }
    assert deploy()["action"] == "unchanged"
    assert ns.stored()["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# Quantities the Kubernetes client's parse_quantity takes, and some it does not; the server
# decides which are quantities.
QUANTITIES = ["1", "0.5", "500m", "2Gi", "1.5Gi", "1e3", "1E3", "+1", "1.", ".5", "1e-3", "1u"]
QUANTITIES += ["1K", "1mi", " 1", "1 ", "1_000", "inf", "١", "1ki", "1KiB", "2GB", "1e"]


def test_serving_capacity_takes_exactly_the_quantities_the_api_server_takes(space):
    ns = space("Standard")
    server_takes, ctloop_takes = [], []
    for quantity in QUANTITIES:
        desired = desired_inference_service(
            name=NAME,
            namespace=ns.namespace,
            storage_uri=URIS["1"],
            model_version="1",
            resources={"limits": {"cpu": quantity}},
        )
        try:
            ns.api.create_namespaced_custom_object(
                "serving.kserve.io",
                "v1beta1",
                ns.namespace,
                "inferenceservices",
                desired,
                dry_run="All",
            )
            server_takes.append(quantity)
        except client.ApiException as error:
            assert error.status == 422, error.body
        try:
            parse_serving_capacity(json.dumps({"limits": {"cpu": quantity}}))
            ctloop_takes.append(quantity)
        except DeploymentError:
            pass

    assert ctloop_takes == server_takes
