"""Run the training pipeline on this machine through kfp.local, on the same definitions.

The only differences from a cluster run are arguments and retries: MLflow is an embedded
SQLite store in the work directory, deployment renders (and validates) the InferenceService
into it instead of applying it, and no step is retried (kfp.local honours `set_retry`, and a
laptop should see a step's error at once, not after the backoff a cluster's network needs).
Tasks run as subprocesses of this Python environment; stopping the
run (SIGTERM, SIGINT) stops them too (`local_stop`).
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from kfp import local

from ctloop.pipelines.local_logs import local_run_output
from ctloop.pipelines.local_stop import steps_stopped_on_signal
from ctloop.pipelines.monitoring import build_monitoring_pipeline
from ctloop.pipelines.parameters import check_local_trainer
from ctloop.pipelines.placement import LOCAL_PLACEMENT, NO_RETRY
from ctloop.pipelines.training import build_training_pipeline


@dataclass(frozen=True)
class Workdir:
    """Everything a local run writes, under one folder (`.ctloop/` by default)."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_location(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def serving(self) -> Path:
        return self.root / "serving"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "pipeline-root"

    @property
    def logs(self) -> Path:
        """kfp.local's whole output of each run the demo makes, one file a run."""
        return self.root / "logs"

    def local_arguments(self) -> dict:
        """Pipeline arguments that point a run at this work directory."""
        return {
            "mlflow_tracking_uri": self.tracking_uri,
            "mlflow_artifact_location": self.artifact_location.as_uri(),
            "deploy_target": "render",
            "render_dir": str(self.serving),
            # No KFP API on a laptop: lineage says so rather than asking a cluster's address.
            "kfp_host": "",
            # No Prometheus watches a rendered canary: it stays until `ctloop promote`.
            "canary_analysis": False,
        }


def run_training_pipeline(
    data_uri: str,
    target: str,
    workdir: str | Path,
    arguments: dict,
    log_stream=None,
    console=None,
) -> dict:
    """Run the training pipeline locally; return the summary the CLI prints.

    kfp.local's whole output goes to `log_stream` (default stdout) and, when `console` is
    given, one line per task there (see `local_logs`). Raises LocalRunError, naming the step
    and its error, when a step fails; a gate that says no is not a failure: the run
    completes and the summary says why.
    """
    work = Workdir(Path(workdir).resolve())
    outputs = _run_locally(
        build_training_pipeline(placement=LOCAL_PLACEMENT, trainjob=False, network_retry=NO_RETRY),
        {"data_uri": data_uri, "target": target, **work.local_arguments(), **arguments},
        work,
        log_stream,
        console,
    )
    return training_summary(
        bool(outputs["gate_passed"]),
        json.loads(outputs["gate_failures"]),
        json.loads(outputs["metrics"]),
        json.loads(outputs["deployment"]),
        work.tracking_uri,
    )


def training_summary(
    gate_passed: bool, gate_failures: list, metrics: dict, deployment: dict, tracking_uri: str
) -> dict:
    """The `ctloop run training --json` object, from the training pipeline's (decoded) outputs."""
    return {
        "gate_passed": gate_passed,
        "gate_failures": gate_failures,
        "metrics": metrics,
        "registered_model": deployment.get("registered_model"),
        "model_version": deployment.get("model_version"),
        "alias": deployment.get("alias"),
        "mlflow_tracking_uri": tracking_uri,
        "inference_service_manifest": deployment.get("inference_service_manifest"),
        "deployment": deployment,
    }


def run_monitoring_pipeline(
    current_uri: str,
    reference_uri: str,
    target: str,
    workdir: str | Path,
    arguments: dict,
    log_stream=None,
    console=None,
) -> dict:
    """Run the monitoring pipeline locally (retraining nested); return the CLI's summary.

    The champion comes from the work directory's MLflow store, so a training run must have
    registered one there first. `log_stream` and `console` as for `run_training_pipeline`.
    """
    work = Workdir(Path(workdir).resolve())
    outputs = _run_locally(
        build_monitoring_pipeline(
            placement=LOCAL_PLACEMENT, trainjob=False, network_retry=NO_RETRY
        ),
        {
            "current_uri": current_uri,
            "reference_uri": reference_uri,
            "target": target,
            **work.local_arguments(),
            **arguments,
        },
        work,
        log_stream,
        console,
    )
    drift = json.loads(Path(outputs["drift"].path).read_text())
    retraining = json.loads(outputs["retraining"])
    summary = {
        "drift_detected": bool(outputs["drift_detected"]),
        "drift_share": float(outputs["drift_share"]),
        "drifted_features": drift["drifted_features"],
        "drift": drift,
        "drift_report": str(Path(outputs["drift"].path).with_name("report")),
        "retrained": retraining["action"] == "retrained",
        "retraining": retraining,
        "mlflow_tracking_uri": work.tracking_uri,
    }
    if summary["retrained"]:
        summary["training"] = training_summary(
            retraining["gate_passed"],
            retraining["gate_failures"],
            retraining["metrics"],
            retraining["deployment"],
            work.tracking_uri,
        )
    return summary


def _run_locally(pipeline, arguments: dict, work: Workdir, log_stream, console) -> dict:
    check_local_trainer(arguments)
    work.root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(work.pipeline_root),
        raise_on_error=True,
    )
    with (
        steps_stopped_on_signal(),
        local_run_output(log_stream, console),
        warnings.catch_warnings(),
    ):
        # kfp.local says, for every task, that GPU and resource settings do not apply here.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        # ...and that the project image is not plain Python: locally, this environment is it.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses")
        task = pipeline(**arguments)
    return task.outputs
