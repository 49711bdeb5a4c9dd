"""Entity-key requests on a cluster: the deploy step gives the predictor its Feast lookup.

With `feature_repo` and `feature_service`, the predictor serving the new model gets
`--feast-repo=` and `--feature-service=` (appended by KServe to the runtime's args) at every
stage, on the Feast runtime only. Every manifest is validated against KServe's real CRD and
applied a second time to show it changes nothing (the `stage` fixture of test_deploy_stages).
"""

import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from ctloop.components.deploy.component import deploy_model
from ctloop.components.deploy.inference_service import DeploymentError
from ctloop.components.deploy.rollout import serves_as
from ctloop.components.image import SERVING_FEAST_RUNTIME, SERVING_RUNTIME
from ctloop.serving.server import build_parser
from tests import test_deploy_stages as stages
from tests.test_deploy_stages import LOG, MODES, URIS, args
from tests.test_serving_runtime_manifest import built_runtime

crd_dir, stage = stages.crd_dir, stages.stage  # the fixtures: every manifest checked alike

REPO = "s3://features/churn"
SERVICE = "churn_features"
LOOKUP = [f"--feast-repo={REPO}", f"--feature-service={SERVICE}"]
FEAST = {"runtime": SERVING_FEAST_RUNTIME, "feature_repo": REPO, "feature_service": SERVICE}


def feast_champion(stage, mode: str) -> dict:
    [served] = stage("canary", "1", None, mode, **FEAST)
    return served


def new_predictor(isvc: dict) -> dict:
    """The predictor of the newest model: the last canary entry (Standard), else the predictor."""
    spec = isvc["spec"]
    return spec["canary"][-1]["predictor"] if spec.get("canary") else spec["predictor"]


@pytest.mark.parametrize("mode", MODES)
def test_a_first_deployment_and_a_canary_look_features_up_in_the_repository(stage, mode):
    served = feast_champion(stage, mode)
    [canary] = stage("canary", "2", served, mode, **FEAST)

    assert args(served["spec"]["predictor"]) == ["--version=1", *LOOKUP]
    assert served["spec"]["predictor"]["model"]["runtime"] == SERVING_FEAST_RUNTIME
    assert args(new_predictor(canary)) == ["--version=2", *LOOKUP]
    assert serves_as(canary, "2") == "canary"


@pytest.mark.parametrize("mode", MODES)
def test_an_ab_challenger_looks_features_up_and_logs_as_a_variant(stage, mode):
    steps = stage("ab", "2", feast_champion(stage, mode), mode, canary_percent=30, **FEAST)

    logged = ["--variant={}", f"--prediction-log-uri={LOG}"]
    champion, challenger = steps[0]["spec"]["predictor"], new_predictor(steps[-1])
    assert args(champion) == ["--version=1", *LOOKUP, *(a.format("1") for a in logged)]
    assert args(challenger) == ["--version=2", *(a.format("2") for a in logged), *LOOKUP]


@pytest.mark.parametrize("mode", MODES)
def test_a_shadow_is_scored_on_the_features_the_champion_looks_up(stage, mode):
    [shadowed] = stage("shadow", "2", feast_champion(stage, mode), mode, **FEAST)
    [unshadowed] = stage("unshadow", "2", shadowed, mode, **FEAST)

    assert args(shadowed["spec"]["predictor"]) == [
        "--version=1",
        *LOOKUP,
        f"--shadow-model-uri={URIS['2']}",
        "--shadow-version=2",
    ]
    assert args(unshadowed["spec"]["predictor"]) == ["--version=1", *LOOKUP]


@pytest.mark.parametrize("mode", MODES)
def test_a_shadow_on_a_champion_without_feast_is_refused_naming_the_feast_runtime(stage, mode):
    [served] = stage("canary", "1", None, mode)  # ctloop-xgboost: no Feast in its image

    with pytest.raises(DeploymentError, match=r"champion's \(shadow's\) predictor runs on "):
        stage("shadow", "2", served, mode, **FEAST)


@pytest.mark.parametrize("runtime", [SERVING_RUNTIME, "kserve-xgbserver", None])
@pytest.mark.parametrize("name", ["canary", "shadow", "ab"])
def test_a_lookup_on_another_runtime_is_refused_naming_the_feast_runtime(stage, name, runtime):
    options = {**FEAST, "runtime": runtime}

    with pytest.raises(
        DeploymentError, match=f"needs the serving runtime '{SERVING_FEAST_RUNTIME}'"
    ):
        stage(name, "1", None, "Standard", **options)


@pytest.mark.parametrize("missing", ["feature_repo", "feature_service"])
def test_a_repository_without_a_feature_service_or_the_reverse_is_refused(stage, missing):
    with pytest.raises(DeploymentError, match="needs both feature_repo .* and feature_service"):
        stage("canary", "1", None, "Serverless", **{**FEAST, missing: ""})


def test_the_predictor_takes_the_lookup_arguments_after_the_runtimes(stage):
    """KServe appends the model's args to the runtime container's: the server parses both."""
    [container] = built_runtime(SERVING_FEAST_RUNTIME)["spec"]["containers"]
    served = feast_champion(stage, "Serverless")

    parsed = build_parser().parse_args(
        [arg.replace("{{.Name}}", "churn") for arg in container["args"]]
        + args(served["spec"]["predictor"])
    )

    assert (parsed.feast_repo, parsed.feature_service, parsed.version) == (REPO, SERVICE, "1")


def test_the_deploy_step_renders_the_lookup_and_refuses_it_on_ctloops_plain_runtime(
    tmp_path,
    crd_dir,  # noqa: F811
):
    def deploy(version: str, runtime: str) -> dict:
        deployment, _ = deploy_model.python_func(
            model=dsl.Model(uri=URIS[version]),
            model_version=version,
            registered_model_name="churn",
            alias="champion",
            manifest=dsl.Artifact(uri=str(tmp_path / f"manifest-{version}.yaml")),
            inference_service_name="churn",
            namespace="ml",
            serving_runtime=runtime,
            target="render",
            render_dir=str(tmp_path / "rendered"),
            feature_repo=REPO,
            feature_service=SERVICE,
        )
        return json.loads(deployment)

    with pytest.raises(DeploymentError, match=SERVING_FEAST_RUNTIME):
        deploy("1", SERVING_RUNTIME)
    assert not (tmp_path / "rendered").exists()
    outcome = deploy("1", SERVING_FEAST_RUNTIME)

    rendered = yaml.safe_load(Path(outcome["inference_service_manifest"]).read_text())
    assert outcome["validated_against_crd"] is True
    assert (outcome["feature_repo"], outcome["feature_service"]) == (REPO, SERVICE)
    assert rendered["spec"]["predictor"]["model"]["args"] == ["--version=1", *LOOKUP]
