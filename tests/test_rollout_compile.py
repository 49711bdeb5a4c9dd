"""Each rollout strategy's DAG and the A/B analysis pipeline, checked on the compiled YAML.

The training pipeline nests the rollout pipeline after the gate; monitoring nests training.
What a cluster user relies on: which deploy stage runs under which decision, what each step
waits for, and which parameter feeds it.
"""

import re

import pytest

from ctloop.pipelines.parameters import ParameterError, check_json_arguments
from tests.compiled_spec import pipeline_spec, tasks_under_condition, waits_for

STRATEGY = "inputs.parameter_values['pipelinechannel--rollout_strategy']"
SHADOWING = "inputs.parameter_values['pipelinechannel--deploy-model-3-serves_as'] == 'shadow'"
GO_ON = "inputs.parameter_values['pipelinechannel--analyze-shadow-go_on'] == true"
ACTION = "inputs.parameter_values['pipelinechannel--analyze-ab-action']"


@pytest.fixture(scope="module")
def training(compiled_pipelines) -> dict:
    return pipeline_spec(compiled_pipelines / "pipelines" / "training.yaml")


def _tasks(spec: dict) -> dict[str, dict]:
    return {
        name: task
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    }


def _deploys(spec: dict) -> dict[str, tuple[str, object]]:
    """Each deploy task's display name -> (its stage, where its traffic percent comes from)."""
    found = {}
    for name, task in _tasks(spec).items():
        if name.startswith("deploy-model"):
            parameters = task["inputs"]["parameters"]
            percent = parameters["canary_percent"]
            source = percent.get("componentInputParameter") or percent["runtimeValue"]["constant"]
            stage = parameters["stage"]["runtimeValue"]["constant"]
            found[task["taskInfo"]["name"], name] = (stage, source)
    return found


def test_each_strategy_deploys_its_stages(training):
    stages = sorted(_deploys(training).values(), key=str)
    assert stages == sorted(
        [
            ("canary", "pipelinechannel--canary_percent"),  # canary
            ("ab", "pipelinechannel--ab_traffic_percent"),  # ab
            ("shadow", "pipelinechannel--canary_percent"),  # shadow first
            ("canary", 100),  # blue-green switch
            ("canary", "pipelinechannel--canary_percent"),  # canary after the shadow
            ("unshadow", "pipelinechannel--canary_percent"),  # shadow rejected
        ],
        key=str,
    )


def test_canary_strategy_is_todays_rollout(training):
    guarded = tasks_under_condition(training)
    assert guarded["deploy-model"].endswith(f"| {STRATEGY} == 'canary'")
    assert guarded["analyze-canary"].endswith(
        f"{STRATEGY} == 'canary' | inputs.parameter_values['pipelinechannel--canary_analysis'] "
        "== true"
    )
    assert "deploy-model" in waits_for(training)["analyze-canary"]


def test_shadow_analysis_decides_between_a_canary_a_switch_and_removing_the_shadow(training):
    guarded, waiting, tasks = tasks_under_condition(training), waits_for(training), _tasks(training)
    shadow_first = f"!({STRATEGY} == 'canary') && !({STRATEGY} == 'ab')"
    assert guarded["deploy-model-3"].endswith(f"| {shadow_first}")
    assert guarded["analyze-shadow"].endswith(f"| {shadow_first} | {SHADOWING}")
    shadow = tasks["analyze-shadow"]["inputs"]["parameters"]
    assert shadow["shadow_version"]["componentInputParameter"] == "pipelinechannel--model_version"
    assert shadow["policy"]["componentInputParameter"] == "pipelinechannel--shadow_policy"

    # go on, blue-green: all traffic at once, then promotion after the switch
    assert guarded["deploy-model-4"].endswith(f"{GO_ON} | {STRATEGY} == 'blue-green'")
    assert guarded["promote-version"] == guarded["deploy-model-4"]
    assert "deploy-model-4" in waiting["promote-version"]
    # go on, shadow-then-canary: a canary, then canary analysis
    assert guarded["deploy-model-5"].endswith(f"{GO_ON} | !({STRATEGY} == 'blue-green')")
    assert "deploy-model-5" in waiting["analyze-canary-2"]
    # rejected: the shadow removed, then the rollback recorded with the verdict
    assert guarded["deploy-model-6"].endswith(f"{SHADOWING} | !({GO_ON})")
    assert "deploy-model-6" in waiting["roll-back-version"]
    reason = tasks["roll-back-version"]["inputs"]["parameters"]["reason"]["runtimeValue"]
    assert reason["constant"] == (
        "shadow analysis: {{$.inputs.parameters['pipelinechannel--analyze-shadow-verdict']}}"
    )
    # no service before: nothing to shadow; canary analysis promotes the first champion
    assert guarded["analyze-canary-3"].endswith(
        f"| !({SHADOWING}) | inputs.parameter_values['pipelinechannel--canary_analysis'] == true"
    )


def test_ab_strategy_deploys_a_logging_variant_and_decides_nothing_in_the_run(training):
    guarded, tasks = tasks_under_condition(training), _tasks(training)
    ab_branch = f"!({STRATEGY} == 'canary') && {STRATEGY} == 'ab'"
    in_branch = [task for task, guard in guarded.items() if guard.endswith(f"| {ab_branch}")]
    assert sorted(in_branch) == ["condition-4", "deploy-model-2"]
    log = tasks["deploy-model-2"]["inputs"]["parameters"]["prediction_log_uri"]
    assert log["componentInputParameter"] == "pipelinechannel--prediction_log_uri"


def test_monitoring_hands_the_rollout_parameters_to_the_retraining(compiled_pipelines):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / "monitoring.yaml")
    retrain = _tasks(spec)["ctloop-training"]["inputs"]["parameters"]
    for name in ("rollout_strategy", "shadow_policy", "ab_traffic_percent", "prediction_log_uri"):
        assert retrain[name]["componentInputParameter"] == f"pipelinechannel--{name}"
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["rollout_strategy"]["defaultValue"] == "canary"


def test_ab_analysis_promotes_the_winner_or_rolls_back_the_challengers(compiled_pipelines):
    spec = pipeline_spec(compiled_pipelines / "pipelines" / "ab-analysis.yaml")
    guarded, tasks = tasks_under_condition(spec), _tasks(spec)
    assert spec["pipelineInfo"]["name"] == "ctloop-ab-analysis"
    assert guarded["promote-version"] == f"{ACTION} == 'promote'"
    assert guarded["roll-back-variants"] == f"!({ACTION} == 'promote') && {ACTION} == 'rollback'"
    assert set(guarded) == {"condition-2", "condition-3", "promote-version", "roll-back-variants"}
    winner = tasks["promote-version"]["inputs"]["parameters"]["model_version"]
    assert winner["componentInputParameter"] == "pipelinechannel--analyze-ab-winner"
    control = tasks["analyze-ab"]["inputs"]["parameters"]["control_variant"]
    assert control["taskOutputParameter"]["producerTask"] == "resolve-control-variant"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rollout_strategy": "mirror"}, "rollout_strategy='mirror': not one of canary, "),
        ({"ab_traffic_percent": 100}, "ab_traffic_percent=100: outside 1..99"),
        ({"rollout_strategy": "ab"}, "needs --param prediction_log_uri="),
        (
            {"rollout_strategy": "blue-green", "serving_runtime": "kserve-xgbserver"},
            "needs ctloop's serving runtime 'ctloop-xgboost', not serving_runtime=",
        ),
    ],
)
def test_rollout_parameters_are_checked_before_a_run(arguments, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        check_json_arguments(arguments)


def test_a_canary_rollout_takes_any_runtime_and_an_ab_rollout_with_its_log_passes():
    check_json_arguments({"rollout_strategy": "canary", "serving_runtime": "kserve-xgbserver"})
    check_json_arguments({"rollout_strategy": "ab", "prediction_log_uri": "s3://logs/churn"})
