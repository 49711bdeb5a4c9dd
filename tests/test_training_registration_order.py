"""A refused registration stops the rollout: the rollout (deploy, analyses) waits on register.

Registration refuses a candidate whose champion moved since the gate compared them; the
steps after it must then never run, in the training pipeline and in the retraining nested in
monitoring. KFP runs no task whose dependency failed, so the compiled YAML must say that the
nested rollout pipeline depends on register (not only sits beside it under the gate's
condition) and that its deploy and canary analysis take the version register returned.
"""

import pytest

from tests.compiled_spec import pipeline_spec


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline and of its nested DAGs, by task name."""
    return {
        name: task
        for dag in [spec["root"]["dag"], *(c.get("dag", {}) for c in spec["components"].values())]
        for name, task in dag.get("tasks", {}).items()
    }


@pytest.mark.parametrize("pipeline", ["training", "monitoring"])
def test_deploy_and_canary_analysis_wait_on_registration(compiled_pipelines, pipeline):
    tasks = _tasks(pipeline_spec(compiled_pipelines / "pipelines" / f"{pipeline}.yaml"))
    rollout = tasks["ctloop-rollout"]
    assert "register-model" in rollout["dependentTasks"]
    version = rollout["inputs"]["parameters"]["model_version"]
    assert version["taskOutputParameter"]["producerTask"] == "register-model"
    deploy = tasks["deploy-model"]["inputs"]["parameters"]["model_version"]
    assert deploy["componentInputParameter"] == "pipelinechannel--model_version"
    canary = tasks["analyze-canary"]["inputs"]["parameters"]["model_version"]
    assert canary["componentInputParameter"] == "pipelinechannel--model_version"
