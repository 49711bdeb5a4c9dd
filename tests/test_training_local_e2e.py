"""The training pipeline run for real through kfp.local: MLflow, registry, rendered manifest."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ctloop.components.deploy.crd_schema import default_crd_dir, validate_inference_service

pytestmark = pytest.mark.e2e


def _client(tracking_uri: str) -> MlflowClient:
    """A client on the run's store for tracking and registry (not the process default)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def test_first_model_passes_the_gate_becomes_champion_and_takes_all_traffic(training_loop):
    workdir, first, _ = training_loop
    assert first["gate_passed"] is True and first["gate_failures"] == []
    assert first["metrics"]["roc_auc"] > 0.8  # Telco churn: a real signal, learned
    assert (first["registered_model"], first["model_version"], first["alias"]) == (
        "ctloop-model",
        "1",
        "champion",
    )
    manifest = yaml.safe_load(Path(first["deployment"]["manifest_artifact"]).read_text())
    predictor = manifest["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert first["deployment"]["action"] == "created"


def test_second_model_is_compared_with_the_champion_and_rendered_as_a_canary(training_loop):
    workdir, first, second = training_loop
    client = _client(first["mlflow_tracking_uri"])
    if not second["gate_passed"]:
        pytest.fail(f"challenger rejected: {second['gate_failures']}")
    assert (second["model_version"], second["alias"]) == ("2", "challenger")
    assert str(client.get_model_version_by_alias("ctloop-model", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("ctloop-model", "challenger").version) == "2"
    version = client.get_model_version("ctloop-model", "2")
    assert version.tags["ctloop.gate"] == "passed"
    assert version.tags["ctloop.champion_compared"] == "1"
    assert json.loads(version.tags["ctloop.test_metrics"])["roc_auc"] == pytest.approx(
        second["metrics"]["roc_auc"]
    )
    manifest_path = Path(second["inference_service_manifest"])
    assert manifest_path == Path(first["inference_service_manifest"])  # the same service
    manifest = yaml.safe_load(manifest_path.read_text())
    predictor = manifest["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert second["deployment"]["action"] == "patched"
    assert predictor["model"]["modelFormat"]["name"] == "xgboost"
    model_dir = Path(predictor["model"]["storageUri"].removeprefix("file://"))
    assert (model_dir / "model.json").is_file()
    assert json.loads((model_dir / "reference_profile.json").read_text())["target"] == "churn"
    if default_crd_dir() is not None:
        validate_inference_service(manifest)


def test_training_run_logs_what_a_reviewer_needs(training_loop):
    _, first, _ = training_loop
    client = _client(first["mlflow_tracking_uri"])
    version = client.get_model_version("ctloop-model", first["model_version"])
    run = client.get_run(version.run_id)
    assert run.data.params["max_depth"] == "6"
    assert len(run.data.tags["ctloop.dataset.content_hash"]) == 64
    assert run.data.tags["kfp.run_id"]
    history = client.get_metric_history(run.info.run_id, "validation_auc")
    assert len(history) > 5 and [m.step for m in history] == list(range(len(history)))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reference_profile.json", "evaluation.json"} <= artifacts
    profile = json.loads(
        Path(client.download_artifacts(run.info.run_id, "reference_profile.json")).read_text()
    )
    assert profile["features"]["contract"]["kind"] == "categorical"
    assert sum(profile["prediction"]["bin_frequencies"]) == pytest.approx(1.0)


def test_cli_run_prints_one_json_summary_line(tmp_path, telco_churn_parquet):
    """A failing gate is a decision, not an error: exit 0, nothing registered."""
    policy = json.dumps({"thresholds": {"roc_auc": {"min": 0.999}}})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctloop",
            "run",
            "training",
            "--data",
            str(telco_churn_parquet),
            "--target",
            "churn",
            "--workdir",
            str(tmp_path),
            "--json",
            "--param",
            f"gate_policy={policy}",
            "--param",
            'hyperparameters={"num_boost_round": 20}',
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = result.stdout.strip().splitlines()  # task logs go to stderr under --json
    summary = json.loads(line)
    assert summary["gate_passed"] is False
    assert summary["gate_failures"][0]["metric"] == "roc_auc"
    assert summary["registered_model"] is None and summary["model_version"] is None
    assert summary["inference_service_manifest"] is None
    assert summary["mlflow_tracking_uri"].startswith("sqlite:///")
    client = _client(summary["mlflow_tracking_uri"])
    assert client.search_registered_models() == []
    [run] = client.search_runs([client.get_experiment_by_name("ctloop").experiment_id])
    assert run.data.tags["ctloop.gate"] == "failed"
