"""Which steps KFP retries: those that talk to networks on a cluster, none in a local run."""

from kfp import compiler

from ctloop.pipelines.experiment import build_experiment_pipeline
from ctloop.pipelines.monitoring import build_monitoring_pipeline
from ctloop.pipelines.placement import LOCAL_PLACEMENT, NETWORK_RETRY, NO_RETRY
from tests.compiled_spec import pipeline_spec


def _retried(pipeline, tmp_path) -> dict[str, int]:
    """Each task (nested pipelines' included) -> its retry count, 0 when none."""
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    spec = pipeline_spec(path)
    return {
        name: task.get("retryPolicy", {}).get("maxRetryCount", 0)
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if "dag" not in spec["components"][task["componentRef"]["name"]]
    }


def test_steps_that_talk_to_networks_are_retried_on_a_cluster_and_registration_is_not(tmp_path):
    retries = _retried(build_monitoring_pipeline(), tmp_path)
    network = [
        "load-dataset",  # the window, from object storage
        "score-dataset",  # the champion, from MLflow
        "prepare-retraining-data",
        "start-retraining-run",  # the KFP API
        "evaluate-model",  # the champion, from MLflow
        "record-rejection",
        "deploy-model",  # Kubernetes
        "analyze-canary",  # Prometheus
        "analyze-shadow",
        "promote-version",
        "roll-back-version",
    ]
    for task in network:
        assert retries[task] == NETWORK_RETRY.num_retries, task
    assert retries["register-model"] == 0
    assert retries["train-model"] > 0  # its own policy: preemption, not the network
    assert retries["validate-dataset"] == 0  # bad data fails the same way every time


def test_the_ab_analysis_retries_every_step(tmp_path):
    retries = _retried(build_experiment_pipeline(), tmp_path)
    assert set(retries.values()) == {NETWORK_RETRY.num_retries}


def test_a_local_run_retries_nothing(tmp_path):
    pipeline = build_monitoring_pipeline(
        placement=LOCAL_PLACEMENT, trainjob=False, network_retry=NO_RETRY
    )
    retries = _retried(pipeline, tmp_path)
    assert set(retries.values()) == {0}
