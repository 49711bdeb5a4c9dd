"""A Serverless rollback gives the champion back its own runtime and predictor args.

In Serverless mode the candidate lives in the champion's `spec.predictor`, so restoring the
champion's storageUri alone would leave it serving with the candidate's Feast lookup (args and
runtime). The same stand-ins as tests/test_canary_promotion.py: the Kubernetes API with the
Knative controller, a SQLite MLflow registry, every PATCH checked against the KServe CRD.
"""

import json

import pytest
from mlflow import MlflowClient

from ctloop.components.canary import promotion
from ctloop.components.deploy import cluster
from ctloop.components.deploy.predictor_args import feast_args
from ctloop.components.deploy.stages import desired_stage
from ctloop.components.image import SERVING_FEAST_RUNTIME, SERVING_RUNTIME
from ctloop.components.registry import mlflow_registry
from ctloop.components.registry.mlflow_registry import RegistryError
from tests import test_canary_promotion as canary
from tests.test_canary_promotion import FAST, NAMESPACE, OLD_URI, Deployment

tracking_uri = canary.tracking_uri  # fixtures: the module's SQLite registry, the API stand-in
standin = canary.standin
REPO = "s3://features/churn/feature_store.yaml"
CHAMPION_LOOKUP = feast_args(REPO, "churn_v1")
CANDIDATE_LOOKUP = feast_args(REPO, "churn_v2")


class Lookups(Deployment):
    """Version 1 championed and version 2 a 10 % canary, each deployed as the deploy step does,
    with its own feature service ("": on the plain runtime, no lookup)."""

    def __init__(self, *args, services: dict[str, str]):
        self.services = services
        super().__init__(*args)

    def deploy(self, uri: str, version: str) -> None:
        service = self.services[version]
        lookup = {"runtime": SERVING_RUNTIME}
        if service:
            lookup = {"runtime": SERVING_FEAST_RUNTIME, "feature_repo": REPO}
        current = cluster.get_inference_service(self.api, self.name, NAMESPACE)
        target = {"name": self.name, "namespace": NAMESPACE, "deployment_mode": self.mode}
        (manifest,) = desired_stage(
            "canary",
            storage_uri=uri,
            model_version=version,
            current=current,
            feature_service=service,
            **target,
            **lookup,
        )
        cluster.deploy_inference_service(self.api, manifest, **FAST)


@pytest.fixture
def served(request, standin, tracking_uri):
    def make(champion: str, candidate: str) -> Lookups:
        model = request.node.name.split("[")[0].replace("_", "-")[5:45].strip("-")
        api = standin.custom_objects_api()
        services = {"1": champion, "2": candidate}
        return Lookups(standin, api, tracking_uri, model, "Serverless", services=services)

    return make


def restore_patch(served: Lookups) -> dict:
    """The model the rollback's restore step sent."""
    pinned = [p for p in served.patches() if "labels" in p.get("metadata", {})]
    return pinned[0]["spec"]["predictor"]["model"]


def test_promotion_records_the_args_and_runtime_the_champion_serves_with(served):
    deployment = served(champion="churn_v1", candidate="")

    tags = deployment.version("1").tags

    assert json.loads(tags[mlflow_registry.PREDICTOR_ARGS_TAG]) == ["--version=1", *CHAMPION_LOOKUP]
    assert tags[mlflow_registry.PREDICTOR_RUNTIME_TAG] == SERVING_FEAST_RUNTIME


def test_rollback_of_a_feast_candidate_leaves_a_plain_champion_without_its_lookup(served):
    deployment = served(champion="", candidate="churn_v2")
    before = canary.snapshot(deployment)
    assert deployment.stored["spec"]["predictor"]["model"]["runtime"] == SERVING_FEAST_RUNTIME

    promotion.roll_back(
        deployment.api, deployment.tracking_uri, reasons=["lost"], **deployment.options()
    )

    assert restore_patch(deployment) == {
        "storageUri": OLD_URI,
        "runtime": SERVING_RUNTIME,
        "args": ["--version=1"],
    }
    canary.assert_valid_against_the_crd(before, deployment.patches())
    model = deployment.stored["spec"]["predictor"]["model"]
    assert (model["storageUri"], model["runtime"], model["args"]) == (
        OLD_URI,
        SERVING_RUNTIME,
        ["--version=1"],
    )
    assert "canaryTrafficPercent" not in deployment.stored["spec"]["predictor"]


def test_rollback_restores_the_champions_own_feature_service(served):
    deployment = served(champion="churn_v1", candidate="churn_v2")

    promotion.roll_back(
        deployment.api, deployment.tracking_uri, reasons=["lost"], **deployment.options()
    )

    model = deployment.stored["spec"]["predictor"]["model"]
    assert (model["runtime"], model["args"]) == (
        SERVING_FEAST_RUNTIME,
        ["--version=1", *CHAMPION_LOOKUP],
    )
    assert "runtime" not in restore_patch(deployment)  # the same runtime: not sent


def test_a_champion_promoted_without_a_record_keeps_the_candidates_args_and_runtime(served):
    deployment = served(champion="", candidate="churn_v2")
    registry = MlflowClient(tracking_uri=deployment.tracking_uri)
    for tag in (mlflow_registry.PREDICTOR_ARGS_TAG, mlflow_registry.PREDICTOR_RUNTIME_TAG):
        registry.delete_model_version_tag(deployment.model, "1", tag)

    promotion.roll_back(
        deployment.api, deployment.tracking_uri, reasons=["lost"], **deployment.options()
    )

    assert restore_patch(deployment) == {
        "storageUri": OLD_URI,
        "args": ["--version=1", *CANDIDATE_LOOKUP],
    }


def test_a_recorded_args_tag_that_is_not_a_list_of_strings_is_refused_naming_it(served):
    deployment = served(champion="", candidate="churn_v2")
    registry = MlflowClient(tracking_uri=deployment.tracking_uri)
    registry.set_model_version_tag(deployment.model, "1", mlflow_registry.PREDICTOR_ARGS_TAG, "{")
    sent = len(deployment.patches())

    with pytest.raises(RegistryError, match=r"ctloop.predictor_args='\{', not a JSON list"):
        promotion.roll_back(
            deployment.api, deployment.tracking_uri, reasons=["lost"], **deployment.options()
        )

    assert len(deployment.patches()) == sent
