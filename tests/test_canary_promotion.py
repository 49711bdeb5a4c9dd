"""Promotion and rollback against the Kubernetes API stand-in and a SQLite MLflow registry.

Each test deploys version 1 (100 %) and version 2 as a canary through the real deploy path
(`cluster.deploy_inference_service`), with the stand-in playing the KServe controller: in
Serverless mode it keeps Knative revisions (a new one only when the predictor's config other
than `canaryTrafficPercent` changes) and splits traffic between the latest revision and the
last one rolled out, as KServe does. Every PATCH sent is replayed on the object and checked
against the real KServe CRD. The stand-ins are `tests.kube_standin` (the Kubernetes API, with
`tests.kserve_status` playing the controller) and `tests.prometheus_standin` (the analysis's
metrics).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kfp import compiler, dsl
from mlflow import MlflowClient

from ctloop.components.canary import promotion, report
from ctloop.components.canary.component import analyze_canary
from ctloop.components.canary.policy import parse_canary_policy
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.decisions.record import read_record
from ctloop.components.decisions.store import records_for
from ctloop.components.deploy import cluster
from ctloop.components.deploy.crd_schema import (
    ManifestValidationError,
    default_crd_dir,
    validate_inference_service,
)
from ctloop.components.deploy.inference_service import DeploymentError, desired_inference_service
from ctloop.components.image import DEFAULT_IMAGE, SERVING_RUNTIME
from ctloop.components.registry import mlflow_registry
from ctloop.components.registry.mlflow_registry import RegistryError
from ctloop.pipelines.cli import main
from tests import kube_standin, sqlite_registry
from tests.fake_clock import FakeClock
from tests.kserve_status import knative_controller, standard_controller
from tests.prometheus_standin import NOW, CannedPrometheus, version_figures

tracking_uri = sqlite_registry.tracking_uri  # a fixture: a SQLite MLflow registry per module
NAMESPACE = "ml"
OLD_URI, NEW_URI = "s3://models/churn/1", "s3://models/churn/2"
FAST = {"timeout_s": 5.0, "poll_s": 0.01}
VERSION_LABEL = "ctloop.model-version"


@pytest.fixture
def standin():
    server = kube_standin.KubeStandIn().start()
    yield server
    server.stop()


class Deployment:
    """Version 1 served and championed, version 2 deployed as a 10 % canary."""

    def __init__(self, standin, api, tracking_uri, model: str, mode: str):
        self.standin, self.api, self.tracking_uri = standin, api, tracking_uri
        self.model, self.mode, self.name = model, mode, model
        standin.reconcile = knative_controller() if mode == "Serverless" else standard_controller
        registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        registry.create_registered_model(model)
        for uri in (OLD_URI, NEW_URI, "s3://models/churn/3"):
            registry.create_model_version(model, source=uri)
        self.deploy(OLD_URI, "1")
        registry.set_registered_model_alias(model, "champion", "1")
        first = promotion.promote(api, tracking_uri, **self.options("1"))  # the champion path
        assert first["inference_service_steps"] == []
        self.deploy(NEW_URI, "2")
        registry.set_registered_model_alias(model, "challenger", "2")
        self.mark = len(standin.requests)

    def deploy(self, uri: str, version: str) -> None:
        current = cluster.get_inference_service(self.api, self.name, NAMESPACE)
        desired = desired_inference_service(
            name=self.name,
            namespace=NAMESPACE,
            storage_uri=uri,
            model_version=version,
            deployment_mode=self.mode,
            canary_percent=10,
            current=current,
            runtime=SERVING_RUNTIME,
        )
        cluster.deploy_inference_service(self.api, desired, **FAST)

    def options(self, version: str = "2") -> dict:
        return {
            "name": self.name,
            "namespace": NAMESPACE,
            "registered_model": self.model,
            "version": version,
            **FAST,
        }

    @property
    def stored(self) -> dict:
        return self.standin.objects[(NAMESPACE, self.name)]

    def patches(self) -> list[dict]:
        """The PATCH bodies sent since the canary was deployed."""
        return [
            body
            for method, _path, _type, body in self.standin.requests[self.mark :]
            if method == "PATCH"
        ]

    def version(self, number: str):
        return mlflow_registry.client(self.tracking_uri).get_model_version(self.model, number)

    def aliases(self) -> dict[str, str]:
        model = mlflow_registry.client(self.tracking_uri).get_registered_model(self.model)
        return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture
def deployment(request, standin, tracking_uri):
    def make(mode: str) -> Deployment:
        model = (
            request.node.name.split("[")[0].replace("_", "-")[5:45].strip("-") + mode[:3].lower()
        )
        return Deployment(standin, standin.custom_objects_api(), tracking_uri, model, mode)

    return make


def assert_valid_against_the_crd(before: dict, patches: list[dict]) -> None:
    """Replay the patches as the API server would; every intermediate object must be valid."""
    obj = before
    for patch in patches:
        obj = kube_standin.merge(obj, patch)
        validate_inference_service(
            {key: obj[key] for key in ("apiVersion", "kind", "metadata", "spec")},
            default_crd_dir(),
        )


def snapshot(deployment: Deployment) -> dict:
    return json.loads(json.dumps(deployment.stored))


def test_serverless_promotion_removes_the_canary_field_and_moves_the_champion_alias(
    deployment,
):
    served = deployment("Serverless")
    before = snapshot(served)

    outcome = promotion.promote(served.api, served.tracking_uri, **served.options())

    assert served.patches() == [{"spec": {"predictor": {"canaryTrafficPercent": None}}}]
    assert_valid_against_the_crd(before, served.patches())
    predictor = served.stored["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["storageUri"] == NEW_URI
    assert list(served.standin.reconcile.state["history"][-1].values()) == [100]
    assert served.aliases() == {"champion": "2"}
    replaced = served.version("1").tags
    assert replaced["ctloop.replaced_by"] == "2" and replaced["ctloop.replaced_at"].endswith(
        "+00:00"
    )
    assert served.version("2").tags["ctloop.storage_uri"] == NEW_URI
    assert outcome["changed"] and outcome["inference_service_steps"] == ["promote"]
    assert outcome["validated_against_crd"] is True

    rerun = promotion.promote(served.api, served.tracking_uri, **served.options())

    assert len(served.patches()) == 1
    assert (rerun["changed"], rerun["changes"]) == (False, [])
    assert served.version("1").tags["ctloop.replaced_at"] == replaced["ctloop.replaced_at"]


def test_serverless_rollback_pins_restores_then_unpins_without_raising_the_candidates_share(
    deployment,
):
    served = deployment("Serverless")
    before = snapshot(served)
    history = served.standin.reconcile.state["history"]
    canary_revision = served.stored["status"]["components"]["predictor"]["latestCreatedRevision"]
    reasons = ["error_rate 0.1 > primary's + 0.01 0.01"]

    outcome = promotion.roll_back(
        served.api, served.tracking_uri, reasons=reasons, **served.options()
    )

    assert served.patches() == [
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
        {
            "metadata": {"labels": {VERSION_LABEL: "1"}},
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": 0,
                    "labels": {VERSION_LABEL: "1"},
                    # the champion's predictor reports its own version again
                    "model": {"storageUri": OLD_URI, "args": ["--version=1"]},
                }
            },
        },
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]
    assert_valid_against_the_crd(before, served.patches())
    stored = served.stored
    assert stored["spec"]["predictor"]["model"]["storageUri"] == OLD_URI
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]
    assert stored["metadata"]["labels"][VERSION_LABEL] == "1"
    # The candidate's revision never had more than its 10 %, and ends with none.
    assert max(split.get(canary_revision, 0) for split in history) == 10
    assert canary_revision not in history[-1] and list(history[-1].values()) == [100]
    assert outcome["inference_service_steps"] == ["pin", "restore", "unpin"]
    tags = served.version("2").tags
    assert tags["ctloop.rolled_back"] == reasons[0] and "ctloop.rolled_back_at" in tags
    assert served.aliases() == {"champion": "1"}

    rerun = promotion.roll_back(
        served.api, served.tracking_uri, reasons=["again"], **served.options()
    )

    assert len(served.patches()) == 3 and rerun["changed"] is False
    assert served.version("2").tags["ctloop.rolled_back"] == reasons[0]


def test_serverless_rollback_interrupted_after_the_restore_finishes_on_rerun(deployment):
    served = deployment("Serverless")
    promotion.roll_back(served.api, served.tracking_uri, reasons=["x"], **served.options())
    # As if the last step had not been sent: the champion's model pinned at 0 %.
    served.stored["spec"]["predictor"]["canaryTrafficPercent"] = 0
    sent = len(served.patches())

    outcome = promotion.roll_back(
        served.api, served.tracking_uri, reasons=["x"], **served.options()
    )

    assert served.patches()[sent:] == [{"spec": {"predictor": {"canaryTrafficPercent": None}}}]
    assert outcome["inference_service_steps"] == ["unpin"]


def test_standard_promotion_makes_the_canary_predictor_the_predictor(deployment):
    served = deployment("Standard")
    before = snapshot(served)
    old_predictor = before["spec"]["predictor"]
    canary_predictor = before["spec"]["canary"][0]["predictor"]
    served.stored["spec"]["predictor"]["minReplicas"] = 2  # a field only the old one has

    outcome = promotion.promote(served.api, served.tracking_uri, **served.options())

    [patch] = served.patches()
    assert patch["spec"]["canary"] is None
    assert patch["spec"]["predictor"]["minReplicas"] is None
    assert patch["metadata"] == {"labels": {VERSION_LABEL: "2"}}
    assert_valid_against_the_crd(snapshot(served), [])
    assert_valid_against_the_crd({**before, "spec": {**before["spec"]}}, [patch])
    # The canary's predictor, less the container name KServe's webhook refuses on the stable one.
    del canary_predictor["model"]["name"]
    assert served.stored["spec"] == {"predictor": canary_predictor}
    assert old_predictor["labels"][VERSION_LABEL] == "1"
    assert served.aliases() == {"champion": "2"}
    assert served.version("2").tags["ctloop.storage_uri"] == NEW_URI
    assert outcome["deployment_mode"] == "Standard"

    rerun = promotion.promote(served.api, served.tracking_uri, **served.options())
    assert len(served.patches()) == 1 and rerun["changed"] is False


def test_standard_rollback_removes_the_canary_and_keeps_the_champions_predictor(deployment):
    served = deployment("Standard")
    before = snapshot(served)

    outcome = promotion.roll_back(
        served.api, served.tracking_uri, reasons=["p99_ms 80 ms > max 25 ms"], **served.options()
    )

    assert served.patches() == [
        {"spec": {"canary": None}, "metadata": {"labels": {VERSION_LABEL: "1"}}}
    ]
    assert_valid_against_the_crd(before, served.patches())
    assert served.stored["spec"] == {"predictor": before["spec"]["predictor"]}
    assert served.stored["metadata"]["labels"][VERSION_LABEL] == "1"
    assert served.version("2").tags["ctloop.rolled_back"] == "p99_ms 80 ms > max 25 ms"
    assert served.aliases() == {"champion": "1"}
    assert outcome["changes"][0] == f"InferenceService {NAMESPACE}/{served.name}: remove canary"

    rerun = promotion.roll_back(served.api, served.tracking_uri, reasons=["x"], **served.options())
    assert len(served.patches()) == 1 and rerun["changed"] is False


def test_a_patch_the_crd_would_reject_is_never_sent(deployment):
    served = deployment("Standard")
    served.stored["spec"]["canary"][0]["predictor"]["modelz"] = {}  # pruned by a real server

    with pytest.raises(ManifestValidationError, match=r"\$\.spec\.predictor"):
        promotion.promote(served.api, served.tracking_uri, **served.options())

    assert served.patches() == [] and served.aliases() == {"champion": "1", "challenger": "2"}


def test_promotion_refuses_a_version_that_is_not_the_canary(deployment):
    served = deployment("Serverless")

    with pytest.raises(DeploymentError) as raised:
        promotion.promote(served.api, served.tracking_uri, **served.options("3"))

    assert str(raised.value) == (
        f"InferenceService {NAMESPACE}/{served.name} serves version 2 as its canary, not "
        "version 3 as a canary: deploy version 3 first"
    )
    with pytest.raises(RegistryError, match=f"'{served.model}' has no version '9'"):
        promotion.promote(served.api, served.tracking_uri, **served.options("9"))
    assert served.patches() == []


def test_rollback_of_a_promoted_version_is_refused(deployment):
    served = deployment("Standard")
    promotion.promote(served.api, served.tracking_uri, **served.options())

    with pytest.raises(DeploymentError, match="it was promoted, so there is no canary"):
        promotion.roll_back(served.api, served.tracking_uri, reasons=["x"], **served.options())


def test_serverless_rollback_without_a_recorded_champion_uri_asks_for_one(deployment):
    served = deployment("Serverless")
    mlflow_registry.client(served.tracking_uri).delete_model_version_tag(
        served.model, "1", "ctloop.storage_uri"
    )

    with pytest.raises(RegistryError, match="has no ctloop.storage_uri tag: give the storageUri"):
        promotion.roll_back(served.api, served.tracking_uri, reasons=["x"], **served.options())
    assert served.patches() == []

    promotion.roll_back(
        served.api,
        served.tracking_uri,
        reasons=["x"],
        previous_storage_uri="gs://elsewhere/churn/1",
        **served.options(),
    )
    assert served.stored["spec"]["predictor"]["model"]["storageUri"] == "gs://elsewhere/churn/1"


def test_mode_given_must_be_the_services_mode(deployment):
    served = deployment("Standard")
    with pytest.raises(
        DeploymentError, match="runs in deployment mode 'Standard', not 'Serverless'"
    ):
        promotion.promote(
            served.api, served.tracking_uri, deployment_mode="Serverless", **served.options()
        )


# --- analysis, then promotion or rollback ---------------------------------------------------


@pytest.fixture
def prometheus():
    server = CannedPrometheus({"1": version_figures(), "2": version_figures()})
    yield server
    server.stop()


def conclude(served: Deployment, prometheus, version: str = "2"):
    clock = FakeClock(NOW)
    return promotion.run_canary_analysis(
        served.api,
        PrometheusClient(prometheus.url),
        parse_canary_policy('{"bake_time_s": 60, "step_s": 30, "error_rate": {"max": 0.01}}'),
        served.tracking_uri,
        deployment_mode=served.mode,
        metrics_model_name="churn",
        clock=clock,
        sleep=clock.sleep,
        **served.options(version),
    )


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_healthy_canary_is_analysed_then_promoted(deployment, prometheus, mode):
    served = deployment(mode)

    decision, outcome = conclude(served, prometheus)

    assert decision.verdict == "promote" and outcome["action"] == "promote"
    assert served.aliases() == {"champion": "2"}
    # Only the series of the InferenceService's namespace are read.
    assert prometheus.queries and all(
        f'namespace="{NAMESPACE}"' in query["query"] for query in prometheus.queries
    )
    text = report.outcome_markdown(decision, outcome)
    assert "## Canary analysis: PROMOTE → promote" in text
    assert "- alias champion moved to version 2" in text


def test_failing_canary_is_analysed_then_rolled_back_with_the_reasons(deployment, prometheus):
    served = deployment("Standard")
    prometheus.figures["2"] = version_figures(ok=9.0, error=1.0)

    decision, outcome = conclude(served, prometheus)

    assert decision.verdict == "rollback" and outcome["action"] == "rollback"
    assert served.version("2").tags["ctloop.rolled_back"] == "error_rate 0.1 > max 0.01"
    assert "spec" in served.stored and "canary" not in served.stored["spec"]


def test_champion_serving_all_traffic_is_promoted_without_analysis(deployment, prometheus):
    served = deployment("Serverless")
    promotion.promote(served.api, served.tracking_uri, **served.options())
    prometheus.queries.clear()

    decision, outcome = conclude(served, prometheus)

    assert decision is None and outcome["changed"] is False and prometheus.queries == []
    assert "No canary to analyse" in report.outcome_markdown(decision, outcome)
    assert "- nothing: already done" in report.outcome_markdown(decision, outcome)


# --- the KFP component and the CLI ------------------------------------------------------------


@pytest.fixture
def kubeconfig(standin, tmp_path, monkeypatch):
    """$KUBECONFIG pointing at the stand-in, as a person on call or a local run has it."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": standin.host}}],
                "users": [{"name": "oncall", "user": {}}],
                "contexts": [
                    {"name": "standin", "context": {"cluster": "standin", "user": "oncall"}}
                ],
                "current-context": "standin",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def test_analyze_canary_compiles_in_a_pipeline_with_typed_inputs_and_outputs(tmp_path):
    @dsl.pipeline(name="canary-only")
    def canary_only(model_version: str = "2", prometheus_url: str = "http://prometheus:9090"):
        analyze_canary(
            model_version=model_version,
            prometheus_url=prometheus_url,
            registered_model_name="churn",
            mlflow_tracking_uri="http://mlflow:5000",
        )

    path = tmp_path / "canary.yaml"
    compiler.Compiler().compile(canary_only, str(path))

    spec = yaml.safe_load(path.read_text())
    component = spec["components"]["comp-analyze-canary"]
    parameters = component["inputDefinitions"]["parameters"]
    assert parameters["deployment_mode"]["defaultValue"] == "Serverless"
    assert parameters["policy"]["defaultValue"] == ""
    assert "Prometheus that scrapes the predictor" in parameters["prometheus_url"]["description"]
    outputs = component["outputDefinitions"]
    assert outputs["artifacts"]["decision"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert set(outputs["parameters"]) == {"action", "verdict"}
    image = spec["deploymentSpec"]["executors"]["exec-analyze-canary"]["container"]["image"]
    assert image == DEFAULT_IMAGE


def test_analyze_canary_component_body_analyses_then_promotes(
    deployment, prometheus, kubeconfig, tmp_path
):
    served = deployment("Standard")
    decision = SimpleNamespace(path=str(tmp_path / "decision.md"), metadata={})
    record = SimpleNamespace(path=str(tmp_path / "canary.json"), metadata={})
    action_record = SimpleNamespace(path=str(tmp_path / "promotion.json"), metadata={})
    policy = {"bake_time_s": 0.3, "step_s": 0.3, "min_requests": 1}

    action, verdict = analyze_canary.python_func(
        model_version="2",
        prometheus_url=prometheus.url,
        registered_model_name=served.model,
        mlflow_tracking_uri=served.tracking_uri,
        decision=decision,
        record=record,
        action_record=action_record,
        inference_service_name=served.name,
        namespace=NAMESPACE,
        deployment_mode="Standard",
        policy=json.dumps(policy),
        metrics_model_name="churn",
        timeout_s=5,
    )

    assert (action, verdict) == ("promote", "promote")
    assert decision.metadata == {"display_name": "Canary: promote → promote"}
    assert Path(decision.path).read_text().startswith("## Canary analysis: PROMOTE → promote")
    assert served.aliases() == {"champion": "2"}
    analysis, promoted = read_record(record.path), read_record(action_record.path)
    assert promoted.inputs["trigger"]["record_id"] == analysis.id
    logged = records_for(served.tracking_uri, served.model, "2")
    assert [(r.kind, r.id) for r in logged] == [
        ("canary", analysis.id),
        ("promotion", promoted.id),
    ]


def test_cli_promote_then_rerun_says_nothing_to_do(deployment, kubeconfig, capsys):
    served = deployment("Serverless")
    argv = ["promote", "--name", served.name, "--namespace", NAMESPACE]
    argv += ["--registered-model", served.model, "--version", "2"]
    argv += ["--mlflow-tracking-uri", served.tracking_uri, "--timeout", "5"]

    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    captured = capsys.readouterr()

    assert first["changed"] and first["inference_service_steps"] == ["promote"]
    assert json.loads(captured.out)["changed"] is False
    assert "ctloop promote: nothing to do, already done" in captured.err
    assert served.aliases() == {"champion": "2"}


def test_cli_rollback_records_the_reason_and_refuses_a_promoted_version(
    deployment, kubeconfig, capsys, monkeypatch
):
    served = deployment("Standard")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.tracking_uri)
    argv = ["--name", served.name, "--namespace", NAMESPACE]
    argv += ["--registered-model", served.model, "--version", "2", "--timeout", "5"]

    assert main(["rollback", *argv, "--reason", "paged: checkout errors"]) == 0
    assert json.loads(capsys.readouterr().out)["inference_service_steps"] == ["remove canary"]
    assert served.version("2").tags["ctloop.rolled_back"] == "paged: checkout errors"

    assert main(["rollback", *argv[:6], "--version", "1"]) == 2
    assert capsys.readouterr().err.startswith(
        f"ctloop rollback: InferenceService {NAMESPACE}/{served.name} serves version 1 to all "
        "traffic: it was promoted"
    )
