"""What the InferenceService looks like at each rollout stage, in both deployment modes.

Every manifest is validated against KServe's real CRD (../shared/kserve, closed against unknown
fields), and every stage is applied a second time to its own result to show it changes nothing.
"""

from pathlib import Path

import pytest
import yaml

from ctloop.components.deploy import rollout
from ctloop.components.deploy.crd_schema import (
    CRD_DIR_ENV,
    default_crd_dir,
    validate_inference_service,
)
from ctloop.components.deploy.inference_service import MODEL_VERSION_LABEL, DeploymentError
from ctloop.components.deploy.rollout import serves_as
from ctloop.components.deploy.stages import desired_stage
from ctloop.components.image import SERVING_RUNTIME

MODES = ["Serverless", "Standard"]
URIS = {version: f"s3://models/churn/{version}" for version in ("1", "2", "3")}
LOG = "s3://logs/churn"


@pytest.fixture(scope="module")
def crd_dir():
    found = default_crd_dir()
    if found is None:
        pytest.skip(f"KServe CRDs not found: set ${CRD_DIR_ENV} or provide ../shared/kserve")
    return found


@pytest.fixture
def stage(crd_dir):
    """desired_stage for version `version` of churn, each manifest validated against the CRD;
    also checks that the stage applied to its own result changes nothing."""

    def build(name: str, version: str, current: dict | None, mode: str, **options) -> list[dict]:
        arguments = {
            "name": "churn",
            "namespace": "ml",
            "storage_uri": URIS[version],
            "model_version": version,
            "deployment_mode": mode,
            "runtime": SERVING_RUNTIME,
            "prediction_log_uri": LOG,
            **options,
        }
        steps = desired_stage(name, current=current, **arguments)
        for step in steps:
            validate_inference_service(step, crd_dir)
        assert desired_stage(name, current=steps[-1], **arguments)[-1] == steps[-1]
        return steps

    return build


def champion(stage, mode: str) -> dict:
    [served] = stage("canary", "1", None, mode)
    return served


def args(predictor: dict) -> list[str]:
    return predictor["model"].get("args", [])


@pytest.mark.parametrize("mode", MODES)
def test_shadow_keeps_all_traffic_on_the_champion_and_gives_it_the_new_model_to_score(stage, mode):
    served = champion(stage, mode)

    [shadowed] = stage("shadow", "2", served, mode)

    predictor = shadowed["spec"]["predictor"]
    assert "canary" not in shadowed["spec"] and "canaryTrafficPercent" not in predictor
    assert predictor["model"]["storageUri"] == URIS["1"]
    assert predictor["labels"] == {MODEL_VERSION_LABEL: "1"}
    assert args(predictor) == [
        "--version=1",
        f"--shadow-model-uri={URIS['2']}",
        "--shadow-version=2",
    ]
    assert serves_as(shadowed, "2") == "shadow" and serves_as(shadowed, "1") == "all-traffic"


@pytest.mark.parametrize("mode", MODES)
def test_removing_the_shadow_restores_the_champion_as_it_was(stage, mode):
    served = champion(stage, mode)
    [shadowed] = stage("shadow", "2", served, mode)

    [unshadowed] = stage("unshadow", "2", shadowed, mode)

    assert unshadowed == served
    assert serves_as(unshadowed, "2") == "nothing"


@pytest.mark.parametrize("mode", MODES)
def test_a_canary_after_a_shadow_carries_no_shadow(stage, mode):
    [shadowed] = stage("shadow", "2", champion(stage, mode), mode)

    [canary] = stage("canary", "2", shadowed, mode, canary_percent=10)

    spec = canary["spec"]
    predictors = [spec["predictor"]] + [entry["predictor"] for entry in spec.get("canary", [])]
    assert all(not arg.startswith("--shadow") for p in predictors for arg in args(p))
    assert serves_as(canary, "2") == "canary"


@pytest.mark.parametrize("mode", MODES)
def test_blue_green_switch_gives_the_new_model_all_traffic_and_ends_the_shadow(stage, mode):
    [shadowed] = stage("shadow", "2", champion(stage, mode), mode)

    [switched] = stage("canary", "2", shadowed, mode, canary_percent=100)

    assert set(switched["spec"]) == {"predictor"}
    predictor = switched["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["storageUri"] == URIS["2"]
    assert args(predictor) == ["--version=2"]
    assert serves_as(switched, "2") == "all-traffic"


@pytest.mark.parametrize("mode", MODES)
def test_a_first_deployment_serves_the_new_model_whatever_the_stage(stage, mode):
    [shadow_first] = stage("shadow", "1", None, mode)
    [ab_first] = stage("ab", "1", None, mode)

    assert serves_as(shadow_first, "1") == serves_as(ab_first, "1") == "all-traffic"
    assert args(shadow_first["spec"]["predictor"]) == ["--version=1"]
    assert args(ab_first["spec"]["predictor"]) == [
        "--version=1",
        "--variant=1",
        f"--prediction-log-uri={LOG}",
    ]


def test_serverless_ab_first_makes_the_champion_log_then_splits_through_the_canary_field(stage):
    served = champion(stage, "Serverless")

    logging, split = stage("ab", "2", served, "Serverless", canary_percent=30)

    assert logging["spec"]["predictor"]["model"]["storageUri"] == URIS["1"]
    assert "canaryTrafficPercent" not in logging["spec"]["predictor"]
    assert args(logging["spec"]["predictor"]) == [
        "--version=1",
        "--variant=1",
        f"--prediction-log-uri={LOG}",
    ]
    predictor = split["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 30
    assert predictor["model"]["storageUri"] == URIS["2"]
    assert args(predictor) == ["--version=2", "--variant=2", f"--prediction-log-uri={LOG}"]


def test_serverless_ab_holds_two_variants_only(stage):
    _, split = stage("ab", "2", champion(stage, "Serverless"), "Serverless", canary_percent=30)

    with pytest.raises(DeploymentError, match="is splitting traffic .* before the 'ab' stage"):
        stage("ab", "3", split, "Serverless", canary_percent=20)


def test_standard_ab_holds_n_weighted_variants_as_canary_entries(stage):
    served = champion(stage, "Standard")

    [two] = stage("ab", "2", served, "Standard", canary_percent=30)
    [three] = stage("ab", "3", two, "Standard", canary_percent=20)

    spec = three["spec"]
    assert args(spec["predictor"]) == ["--version=1", "--variant=1", f"--prediction-log-uri={LOG}"]
    assert spec["predictor"]["model"]["storageUri"] == URIS["1"]
    assert [(e["predictor"]["name"], e["trafficPercent"]) for e in spec["canary"]] == [
        ("v2", 30),
        ("v3", 20),
    ]
    assert [args(e["predictor"]) for e in spec["canary"]] == [
        [f"--version={v}", f"--variant={v}", f"--prediction-log-uri={LOG}"] for v in ("2", "3")
    ]
    assert serves_as(three, "3") == serves_as(three, "2") == "canary"


def test_standard_ab_refuses_variants_that_leave_the_champion_no_traffic(stage):
    [two] = stage("ab", "2", champion(stage, "Standard"), "Standard", canary_percent=60)

    with pytest.raises(DeploymentError, match=r"60 \+ 40 = 100 % of traffic"):
        stage("ab", "3", two, "Standard", canary_percent=40)


@pytest.mark.parametrize("mode", MODES)
def test_shadow_and_ab_refuse_a_runtime_that_does_not_know_their_arguments(stage, mode):
    served = champion(stage, mode)

    for name in ("shadow", "ab"):
        with pytest.raises(DeploymentError, match="needs ctloop's predictor .* 'kserve-xgbserver'"):
            stage(name, "2", served, mode, runtime="kserve-xgbserver")


def test_ab_without_a_prediction_log_is_refused(stage):
    with pytest.raises(DeploymentError, match="'ab' needs a prediction log URI"):
        stage("ab", "2", champion(stage, "Standard"), "Standard", prediction_log_uri="")


@pytest.mark.parametrize("mode", MODES)
def test_shadow_while_a_canary_runs_is_refused(stage, mode):
    [canary] = stage("canary", "2", champion(stage, mode), mode)

    with pytest.raises(DeploymentError, match="is splitting traffic"):
        stage("shadow", "3", canary, mode)


def test_an_unknown_stage_is_refused(stage):
    with pytest.raises(DeploymentError, match="rollout stage 'mirror' is not one of"):
        stage("mirror", "2", None, "Standard")


@pytest.mark.parametrize("mode", MODES)
def test_rendering_a_stage_twice_changes_nothing(mode, tmp_path, crd_dir):
    def render(version: str, stage_name: str) -> dict:
        request = rollout.RolloutRequest(
            name="churn",
            namespace="ml",
            model_artifact_uri=URIS[version],
            model_version=version,
            deployment_mode=mode,
            runtime=SERVING_RUNTIME,
            stage=stage_name,
            prediction_log_uri=LOG,
        )
        return rollout.render(request, str(tmp_path))

    assert render("1", "canary")["action"] == "created"
    first = render("2", "ab")
    assert (first["action"], first["serves_as"], first["validated_against_crd"]) == (
        "patched",
        "canary",
        True,
    )
    assert render("2", "ab")["action"] == "unchanged"


COST_LABELS = {"team": "fraud", "example.com/cost-center": "cc-42"}


@pytest.mark.parametrize("mode", MODES)
def test_every_stage_puts_the_cost_labels_on_the_service(stage, mode):
    def labels(isvc: dict) -> dict:
        return isvc["metadata"]["labels"]

    unlabelled = champion(stage, mode)
    shadowed = stage("shadow", "2", unlabelled, mode, labels=COST_LABELS)
    assert labels(shadowed[-1]) == {**COST_LABELS, MODEL_VERSION_LABEL: "1"}
    [unshadowed] = stage("unshadow", "2", shadowed[-1], mode, labels=COST_LABELS)
    assert labels(unshadowed) == labels(shadowed[-1])
    [canary] = stage("canary", "2", unshadowed, mode, labels=COST_LABELS)
    assert labels(canary) == {**COST_LABELS, MODEL_VERSION_LABEL: "2"}
    variants = stage("ab", "3", champion(stage, mode), mode, labels=COST_LABELS)
    assert [labels(step) for step in variants] == [
        {**COST_LABELS, MODEL_VERSION_LABEL: version} for version in ("1", "3")[-len(variants) :]
    ]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"cost center": "cc-42"}, "label key 'cost center'"),
        ({"team": "fraud/ml"}, "label team='fraud/ml'"),
        ({MODEL_VERSION_LABEL: "7"}, f"label '{MODEL_VERSION_LABEL}' is the served model's"),
    ],
)
def test_a_label_kubernetes_or_the_deploy_step_would_not_take_is_refused(stage, labels, message):
    with pytest.raises(DeploymentError, match=message):
        stage("canary", "1", None, "Standard", labels=labels)


def test_the_rendered_service_carries_the_requests_labels(tmp_path, crd_dir):
    request = rollout.RolloutRequest(
        name="churn",
        namespace="ml",
        model_artifact_uri=URIS["1"],
        model_version="1",
        labels=COST_LABELS,
    )
    outcome = rollout.render(request, str(tmp_path))

    rendered = yaml.safe_load(Path(outcome["inference_service_manifest"]).read_text())
    assert outcome["validated_against_crd"]
    assert rendered["metadata"]["labels"] == {**COST_LABELS, MODEL_VERSION_LABEL: "1"}


def test_a_standard_canary_is_named_for_its_version_and_has_fixed_replicas(stage):
    """KServe's webhook refuses a `spec.canary[]` predictor without a name, or with
    maxReplicas (a canary runs fixed replicas)."""
    served = champion(stage, "Standard")

    [canary] = stage("canary", "2", served, "Standard", min_replicas=1, max_replicas=4)

    [entry] = canary["spec"]["canary"]
    assert entry["predictor"]["name"] == "v2"
    assert entry["predictor"]["minReplicas"] == 1 and "maxReplicas" not in entry["predictor"]


@pytest.mark.parametrize("mode", MODES)
def test_only_canary_entries_name_the_model_container(stage, mode):
    """The CRD requires `spec.canary[].predictor.model.name`; KServe's webhook refuses
    `spec.predictor.model.name` ("the 'name' field is not allowed in standard predictor")."""
    served = champion(stage, mode)
    [canary] = stage("canary", "2", served, mode)
    steps = stage("ab", "3", served, mode, canary_percent=20)

    for isvc in [served, canary, *steps]:
        assert "name" not in isvc["spec"]["predictor"]["model"]
        for entry in isvc["spec"].get("canary", []):
            assert entry["predictor"]["model"]["name"] == "kserve-container"
