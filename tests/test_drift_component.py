"""The drift and batch scoring components in small pipelines run through kfp.local."""

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kfp import dsl, local
from kfp.dsl import HTML, Artifact, Metrics

from ctloop.components.batch_scoring.component import score_dataset
from ctloop.components.data.component import load_dataset, validate_dataset
from ctloop.components.decisions.record import read_record
from ctloop.components.decisions.store import records_for
from ctloop.components.drift.component import monitor_drift
from ctloop.components.drift.monitor import replay_drift
from tests.registered_champion import churn_champion

pytestmark = pytest.mark.e2e


class DriftOutputs(NamedTuple):
    drift_detected: bool
    drift_share: float
    performance_alert: bool
    labelled_rows: int
    metrics: Metrics
    report: HTML
    drift: Artifact
    record: Artifact


def _outputs(drift) -> DriftOutputs:
    """The drift task's outputs, as the pipeline's."""
    return DriftOutputs(*(drift.outputs[name] for name in DriftOutputs._fields))


@dsl.pipeline(name="drift-against-training-profile")
def drift_against_training_profile(reference_uri: str, window_uri: str) -> DriftOutputs:
    """Profile the reference as training does, then check a window against it."""
    reference = load_dataset(uri=reference_uri)
    validated = validate_dataset(dataset=reference.outputs["dataset"], target="churn")
    window = load_dataset(uri=window_uri)
    drift = monitor_drift(
        window=window.outputs["dataset"],
        reference_profile=validated.outputs["reference_profile"],
        target="churn",
    )
    return _outputs(drift)


@dsl.pipeline(name="drift-of-champion-scores")
def drift_of_champion_scores(
    window_uri: str, model_uri: str, tracking_uri: str, baseline: str
) -> DriftOutputs:
    """Score a window with the champion, then check features, scores and quality."""
    window = load_dataset(uri=window_uri)
    scored = score_dataset(
        dataset=window.outputs["dataset"],
        model_uri=model_uri,
        mlflow_tracking_uri=tracking_uri,
        key_columns=["row_id"],
        batch_rows=1000,
    )
    drift = monitor_drift(
        window=window.outputs["dataset"],
        reference_profile=scored.outputs["reference_profile"],
        predictions=scored.outputs["predictions"],
        target="churn",
        baseline_metrics=baseline,
        registered_model_name="churn",  # the version: the one score_dataset loaded
        mlflow_tracking_uri=tracking_uri,
    )
    return _outputs(drift)


@pytest.fixture
def run_locally(tmp_path):
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        raise_on_error=True,
    )

    def run(pipeline, **arguments):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You may be attemping to run a task")
            return pipeline(**arguments).outputs

    return run


def test_a_month_to_month_window_drifts_from_the_training_profile(
    run_locally, telco_churn_parquet, tmp_path
):
    telco = pq.read_table(telco_churn_parquet)
    window = tmp_path / "month_to_month.parquet"
    pq.write_table(telco.filter(pc.equal(telco.column("contract"), "Month-to-month")), window)
    outputs = run_locally(
        drift_against_training_profile,
        reference_uri=str(telco_churn_parquet),
        window_uri=str(window),
    )
    figures = json.loads(Path(outputs["drift"].path).read_text())
    assert outputs["drift_detected"] is True
    assert outputs["drift_share"] == pytest.approx(figures["drift_share"])
    assert figures["drift_share"] > 0.3
    assert figures["drifted_features"][0] == "contract"
    assert "churn" not in figures["features"]  # the label is never a feature
    assert figures["prediction"] is None and figures["performance"] is None
    assert any("no predictions given" in note for note in figures["notes"])
    metrics = outputs["metrics"].metadata
    assert metrics["drifted_features"] == len(figures["drifted_features"])
    assert metrics["severity_contract"] == pytest.approx(
        figures["features"]["contract"]["severity"]
    )
    assert outputs["metrics"].metadata["display_name"] == "Drift"
    page = Path(outputs["report"].path).read_text()
    assert page.startswith("<!DOCTYPE html>") and "Drift detected" in page
    assert outputs["report"].metadata["display_name"] == "Drift report"


def test_champion_scores_on_a_fresh_window_do_not_drift_and_quality_is_compared(
    run_locally, tmp_path
):
    champion = churn_champion(tmp_path / "champion", _telco(tmp_path))
    window = tmp_path / "window.parquet"
    pq.write_table(champion.current, window)
    outputs = run_locally(
        drift_of_champion_scores,
        window_uri=str(window),
        model_uri="models:/churn@champion",
        tracking_uri=champion.tracking_uri,
        baseline='{"roc_auc": 0.84, "log_loss": 0.42}',
    )
    figures = json.loads(Path(outputs["drift"].path).read_text())
    assert outputs["drift_detected"] is False and figures["drifted_features"] == []
    prediction = figures["prediction"]
    assert prediction["drifted"] is False and prediction["values"] == champion.current.num_rows
    performance = figures["performance"]
    assert performance["labelled_rows"] == champion.current.num_rows
    assert performance["roc_auc"] > 0.75
    assert performance["roc_auc_change"] == pytest.approx(performance["roc_auc"] - 0.84)
    assert outputs["metrics"].metadata["roc_auc_change"] == pytest.approx(
        performance["roc_auc_change"]
    )
    # The champion's profile predates calibrations: no estimate, no alert, and said so.
    assert outputs["performance_alert"] is False
    assert outputs["labelled_rows"] == champion.current.num_rows
    assert "no calibration" in figures["estimate"]["skipped"]
    record = read_record(outputs["record"].path)
    assert record.kind == "drift" and record.outcome["drift_detected"] is False
    assert record.subject["model_version"] == "1"
    assert replay_drift(record.inputs, record.policy) == (record.outcome, record.reasons)
    assert [logged.id for logged in records_for(champion.tracking_uri, "churn", "1")] == [record.id]


def _telco(tmp_path: Path) -> Path:
    from ctloop.pipelines.demo_data import export_telco_churn

    return export_telco_churn(tmp_path / "telco.parquet")
