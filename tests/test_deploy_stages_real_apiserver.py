"""Shadow and A/B stages applied to a real kube-apiserver, as the project's Role, both modes.

The same namespaces, Role-bound client and status writer as tests/test_deploy_real_apiserver.py
(tests/envtest.py starts the server once per run): the KServe CRD's schema, defaults and
pruning apply to every write, and a rerun of a stage must send no write at all. A shadow and
an A/B stage also with a Feast lookup: its arguments are stored on the predictors that look
features up, as sent.
"""

import pytest
from mlflow import MlflowClient

from ctloop.components.canary import promotion, variants
from ctloop.components.registry import mlflow_registry
from tests import envtest
from tests import test_deploy_real_apiserver as real_api
from tests.test_deploy_real_apiserver import LOOKUPS, NAME, URIS, Namespace

envtest.require_apiserver()
# Fixtures shared with the deploy tests: the run's API server, a SQLite MLflow registry for the
# module, and namespaces where ctloop acts as the Role-bound account.
kube_apiserver = envtest.kube_apiserver
tracking_uri = real_api.tracking_uri
space = real_api.space
LOG = "s3://logs/churn"


def apply_stage(ns: Namespace, stage: str, version: str, percent: int = 10, **lookup) -> list[str]:
    """ctloop's deploy step for `stage`, logging predictions under LOG; `lookup` is a Feast
    lookup. Returns the actions."""
    steps = ns.apply_stage(stage, version, percent, prediction_log_uri=LOG, **lookup)
    return [outcome["action"] for outcome in steps]


def register(ns: Namespace, champion: str = "1") -> None:
    registry = MlflowClient(tracking_uri=ns.tracking_uri, registry_uri=ns.tracking_uri)
    registry.create_registered_model(ns.model)
    for uri in URIS.values():
        registry.create_model_version(ns.model, source=uri)
    registry.set_registered_model_alias(ns.model, "champion", champion)


def args(predictor: dict) -> list[str]:
    return predictor["model"].get("args", [])


@pytest.mark.parametrize(("lookup", "lookup_args"), LOOKUPS)
@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_shadow_is_applied_then_sends_nothing_then_is_removed(space, mode, lookup, lookup_args):
    ns = space(mode)
    apply_stage(ns, "canary", "1", **lookup)

    assert apply_stage(ns, "shadow", "2", **lookup) == ["patched"]
    predictor = ns.stored()["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == URIS["1"]
    assert args(predictor) == [
        "--version=1",
        *lookup_args,
        f"--shadow-model-uri={URIS['2']}",
        "--shadow-version=2",
    ]
    assert "canaryTrafficPercent" not in predictor and "canary" not in ns.stored()["spec"]

    mark = len(ns.sent)
    assert apply_stage(ns, "shadow", "2", **lookup) == ["unchanged"]
    assert ns.writes_since(mark) == []

    assert apply_stage(ns, "unshadow", "2", **lookup) == ["patched"]
    assert args(ns.stored()["spec"]["predictor"]) == ["--version=1", *lookup_args]


@pytest.mark.parametrize(("lookup", "lookup_args"), LOOKUPS)
def test_standard_ab_runs_n_variants_and_ends_them_one_by_one(space, lookup, lookup_args):
    ns = space("Standard")
    register(ns)
    apply_stage(ns, "canary", "1", **lookup)

    assert apply_stage(ns, "ab", "2", percent=30, **lookup) == ["patched"]
    assert apply_stage(ns, "ab", "3", percent=20, **lookup) == ["patched"]
    stored = ns.stored()
    logged = ["--variant={}", f"--prediction-log-uri={LOG}"]
    assert args(stored["spec"]["predictor"]) == [
        "--version=1",
        *lookup_args,
        *(arg.format("1") for arg in logged),
    ]
    assert [(e["predictor"]["name"], e["trafficPercent"]) for e in stored["spec"]["canary"]] == [
        ("v2", 30),
        ("v3", 20),
    ]
    assert [args(e["predictor"]) for e in stored["spec"]["canary"]] == [
        [f"--version={version}", *(arg.format(version) for arg in logged), *lookup_args]
        for version in ("2", "3")
    ]
    assert [s["trafficPercent"] for s in stored["status"]["canaryStatuses"]] == [30, 20]
    mark = len(ns.sent)
    assert apply_stage(ns, "ab", "3", percent=20, **lookup) == ["unchanged"]
    assert ns.writes_since(mark) == []

    promotion.roll_back(ns.api, ns.tracking_uri, reasons=["lost"], **ns.options("2"))
    remaining = ns.stored()["spec"]["canary"]
    assert [e["predictor"]["name"] for e in remaining] == ["v3"]

    promotion.promote(ns.api, ns.tracking_uri, **ns.options("3"))
    stored = ns.stored()
    assert "canary" not in stored["spec"]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URIS["3"]
    assert ns.aliases() == {"champion": "3"}


@pytest.mark.parametrize(("lookup", "lookup_args"), LOOKUPS)
def test_serverless_ab_makes_the_champion_log_first_and_a_rollback_restores_its_variant(
    space, lookup, lookup_args
):
    ns = space("Serverless")
    register(ns)
    apply_stage(ns, "canary", "1", **lookup)
    promotion.promote(ns.api, ns.tracking_uri, **ns.options("1"))

    assert apply_stage(ns, "ab", "2", percent=30, **lookup) == ["patched", "patched"]
    history = ns.writer.revisions[NAME].state["history"]
    # The champion's logging revision took all traffic before the challenger took its 30 %.
    assert history[-2:] == [
        {f"{NAME}-predictor-00002": 100},
        {f"{NAME}-predictor-00003": 30, f"{NAME}-predictor-00002": 70},
    ]
    assert args(ns.stored()["spec"]["predictor"]) == [
        "--version=2",
        "--variant=2",
        f"--prediction-log-uri={LOG}",
        *lookup_args,
    ]
    mark = len(ns.sent)
    assert apply_stage(ns, "ab", "2", percent=30, **lookup) == ["unchanged"]
    assert ns.writes_since(mark) == []

    promotion.roll_back(ns.api, ns.tracking_uri, reasons=["lost"], **ns.options("2"))
    predictor = ns.stored()["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == URIS["1"]
    # The challenger's arguments, its lookup too, answering as the champion's version again
    assert args(predictor) == [
        "--version=1",
        "--variant=1",
        f"--prediction-log-uri={LOG}",
        *lookup_args,
    ]


def test_ending_an_experiment_the_control_won_rolls_back_every_challenger(space):
    ns = space("Standard")
    register(ns)
    apply_stage(ns, "canary", "1")
    apply_stage(ns, "ab", "2", percent=30)
    apply_stage(ns, "ab", "3", percent=20)
    options = {key: value for key, value in ns.options().items() if key != "version"}

    outcome = variants.roll_back_challengers(
        ns.api, ns.tracking_uri, reasons=["A/B: control won"], **options
    )

    assert outcome["versions"] == ["2", "3"]
    stored = ns.stored()
    assert "canary" not in stored["spec"] and "canaryStatuses" not in stored["status"]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URIS["1"]
    for version in ("2", "3"):
        assert (
            mlflow_registry.version_tags(ns.tracking_uri, ns.model, version)["ctloop.rolled_back"]
            == "A/B: control won"
        )
    mark = len(ns.sent)
    rerun = variants.roll_back_challengers(ns.api, ns.tracking_uri, reasons=["again"], **options)
    assert (rerun["versions"], rerun["changed"], ns.writes_since(mark)) == ([], False, [])


def test_the_experiments_control_is_the_champion_unless_named(space):
    from ctloop.components.canary.component import resolve_control_variant

    ns = space("Standard")
    register(ns, champion="1")
    resolve = resolve_control_variant.python_func

    assert resolve("", ns.model, ns.tracking_uri) == "1"
    assert resolve("7", ns.model, ns.tracking_uri) == "7"
