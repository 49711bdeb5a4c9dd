"""The demo's rollout end to end on small models: shadow, canary promoted, broken canary
rolled back, each decided by the real analysis from real predictors (and a real Prometheus).

Two small churn models are trained and registered as the training pipeline would (champion,
then challenger rendered as a 10 % canary); the rollout then runs with the demo's policies
and bake times cut to seconds. Needs Debian's `prometheus` for the canary stages (skipped
otherwise, like the live canary test).
"""

import shutil
from dataclasses import asdict

import pytest
import yaml

from ctloop.components.decisions.store import records_for
from ctloop.components.deploy import rollout
from ctloop.components.image import SERVING_RUNTIME
from ctloop.components.registry import mlflow_registry
from ctloop.components.table_io import read_table
from ctloop.pipelines import demo_rollout
from ctloop.pipelines.demo_data import demo_tables
from ctloop.pipelines.demo_models import EXTRA_FEATURE, Registry, register_model
from ctloop.pipelines.replay import SAME, replay

# Trains three small models and starts four predictors and Prometheus: scheduled early.
pytestmark = pytest.mark.e2e

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the prometheus binary is not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)",
)

NAME = "churn"
FAST = '{"num_boost_round": 40, "max_depth": 3, "eta": 0.3}'
# The challenger stops a few trees earlier on the same rows: close to the champion.
CHALLENGER = '{"num_boost_round": 36, "max_depth": 3, "eta": 0.3}'


@pytest.fixture(scope="module")
def demo(tmp_path_factory, telco_churn_parquet):
    """(root, registry, render folder, stages, what was announced) of one rollout."""
    root = tmp_path_factory.mktemp("rollout")
    tables = demo_tables(telco_churn_parquet, root / "data")
    registry = Registry(
        f"sqlite:///{root / 'mlflow.db'}", "demo", (root / "mlartifacts").as_uri(), NAME
    )
    history = read_table(str(tables.history))
    render_dir = root / "serving"
    summaries = []
    for index, hyperparameters in enumerate((FAST, CHALLENGER)):
        version, model_dir = register_model(
            history, "churn", root / f"model-{index}", registry, hyperparameters, {}
        )
        request = rollout.RolloutRequest(
            NAME, "demo", str(model_dir), version, runtime=SERVING_RUNTIME
        )
        deployment = rollout.render(request, str(render_dir))
        summaries.append({"model_version": version, "deployment": deployment})
    policy = {**demo_rollout.CANARY_POLICY, "bake_time_s": 8, "step_s": 2, "min_requests": 10}
    said = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_rollout, "CANARY_POLICY", policy)
        stages = demo_rollout.run_rollout(
            root / "rollout",
            registry,
            render_dir,
            summaries,
            tables.steady,
            tables.history,
            "churn",
            say=said.append,
        )
    return root, registry, render_dir, stages, said


@needs_prometheus
def test_every_rollout_decision_is_on_record_and_replays_the_same(demo):
    """Shadow, both canaries and what each led to: in MLflow, and decided alike again."""
    _root, registry, _render_dir, _stages, _said = demo
    records = records_for(registry.tracking_uri, NAME)
    kinds = [record.kind for record in records]
    assert sorted(kinds) == ["canary", "canary", "promotion", "rollback", "shadow"]
    promotion = next(record for record in records if record.kind == "promotion")
    assert promotion.inputs["trigger"]["kind"] == "canary"
    assert [replay(record).status for record in records] == [SAME] * len(records)


@needs_prometheus
def test_shadow_agreeing_with_the_champion_goes_on_to_a_canary(demo):
    _root, _registry, _render_dir, stages, said = demo

    shadow = stages[0]
    assert shadow.verdict == "go on to a canary", shadow.reasons
    assert shadow.reasons[0].startswith("disagreement_rate ")
    assert "error_rate 0 (limit 0)" in shadow.reasons[0]
    assert shadow.report.read_text().startswith("#")
    assert said[0].strip().startswith("== rollout 1: shadow, v2 beside the champion v1")


@needs_prometheus
def test_healthy_canary_is_promoted_alias_and_rendered_service_follow(demo):
    _root, registry, render_dir, stages, _said = demo

    canary = stages[1]
    assert canary.verdict.startswith("promote after"), canary.reasons
    assert canary.title.startswith("canary: v2 took ")
    assert canary.reasons[-1] == (
        "v2 promoted; MLflow's champion is v2; the rendered InferenceService serves v2 only"
    )
    assert mlflow_registry.version_with_alias(registry.tracking_uri, NAME) == "2"
    assert "# " in canary.report.read_text()


@needs_prometheus
def test_router_gave_the_canary_its_rendered_percent(demo):
    _root, _registry, _render_dir, stages, _said = demo

    # "canary: v2 took N of M requests (10 %), ...": deterministic by count, N = M // 10.
    words = stages[1].title.split()
    taken, sent = int(words[3]), int(words[5])
    assert sent > 0 and taken == sent * 10 // 100


@needs_prometheus
def test_broken_canary_is_rolled_back_and_the_service_serves_the_champion(demo):
    _root, registry, render_dir, stages, said = demo

    broken = stages[2]
    assert said[-1].startswith(f"== rollout 3: a broken challenger (trained with {EXTRA_FEATURE}")
    assert broken.verdict.startswith("rollback after"), broken.reasons
    assert broken.reasons[0] == "error_rate 1 (v2 0, limit 0.01)"
    # The predictor's own answer says why: the feature callers do not send.
    assert broken.reasons[1].startswith("v3 answers HTTP 400: ")
    assert EXTRA_FEATURE in broken.reasons[1]
    assert broken.reasons[2].startswith("v3 tagged ctloop.rolled_back; MLflow's champion is v2")
    # The champion stays the promoted challenger; the broken version is tagged rolled back.
    assert mlflow_registry.version_with_alias(registry.tracking_uri, NAME) == "2"
    tags = mlflow_registry.version_tags(registry.tracking_uri, NAME, "3")
    assert tags[mlflow_registry.ROLLED_BACK_TAG].startswith("error_rate 1")
    service = yaml.safe_load((render_dir / "demo" / f"{NAME}.yaml").read_text())
    predictor = service["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["labels"]["ctloop.model-version"] == "2"
    assert predictor["model"]["args"] == ["--version=2"]


@pytest.mark.parametrize(
    ("shadow_verdict", "prometheus", "why"),
    [
        ("reject", "/usr/bin/prometheus", "the shadow stage rejected v2: it never takes traffic"),
        ("go on to a canary", None, "no prometheus binary to watch a canary; to get it: apt-get"),
    ],
)
def test_canary_stages_are_skipped_saying_why(
    monkeypatch, tmp_path, shadow_verdict, prometheus, why
):
    """A rejected shadow never reaches a canary; without Prometheus nothing can watch one,
    and the demo says how to install it. (Registry and shadow stand in: only the routing
    between stages is under test here.)"""
    aliases = {mlflow_registry.CHAMPION: "1", mlflow_registry.CHALLENGER: "2"}
    monkeypatch.setattr(
        mlflow_registry, "version_with_alias", lambda _uri, _name, alias="champion": aliases[alias]
    )
    monkeypatch.setattr(shutil, "which", lambda _name: prometheus)
    shadow = demo_rollout.Stage("shadow", shadow_verdict, [])
    monkeypatch.setattr(demo_rollout.Rollout, "shadow", lambda *_args: shadow)
    summaries = _summaries("1", "2")
    registry = Registry("sqlite:///unused.db", "demo", "", NAME)
    root = tmp_path / "rollout"
    root.mkdir()
    (root / "stale.log").write_text("a previous demo run's")
    said = []

    stages = demo_rollout.run_rollout(
        root, registry, tmp_path, summaries, tmp_path, tmp_path, "churn", say=said.append
    )

    assert stages[0] is shadow
    assert stages[1].title == "canary stages" and stages[1].verdict == "skipped"
    assert stages[1].reasons[0].startswith(why)
    assert len(stages) == 2
    assert not (root / "stale.log").exists()
    # Said as it happens too, not only in the closing lines, when Prometheus is missing.
    assert any(why in line for line in said) == (prometheus is None)


def _summaries(*versions: str) -> list[dict]:
    """Training-run summaries as the demo's runs return them, each version rendered."""
    return [
        {
            "model_version": version,
            "deployment": asdict(rollout.RolloutRequest(NAME, "demo", f"/m/{version}", version)),
        }
        for version in versions
    ]
