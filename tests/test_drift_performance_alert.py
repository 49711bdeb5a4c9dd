"""The performance alert beside drift, on the demo's real Telco windows, and the drift record.

A churn model is trained on the history (the Telco rows with few seniors), its scores'
calibration checked on a test split of it; the steady window looks like the history, the
seniors' window is one the model truly serves worse (its realized accuracy falls by more
than the policy allows), so the estimate must alert on it and only on it.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema, write_profile
from ctloop.components.data.profile import profile_table, with_prediction_distribution
from ctloop.components.decisions.record import parse_record, read_record, write_record
from ctloop.components.drift.monitor import drift_report, replay_drift, run_drift
from ctloop.components.drift.policy import parse_drift_policy

POLICY = (
    '{"performance": {"max_drop": {"accuracy": 0.05, "roc_auc": 0.05},'
    ' "estimated_log_loss": {"max": 0.5}}}'
)


@dataclass(frozen=True)
class Churn:
    profile: dict
    booster: object
    steady: pa.Table
    seniors: pa.Table

    def scores(self, table: pa.Table) -> np.ndarray:
        return predict_scores(self.booster, to_frame(table, feature_schema(self.profile)))

    def report(self, table: pa.Table, policy: str = POLICY, profile: dict | None = None):
        return drift_report(
            profile or self.profile,
            table.to_batches(),
            policy=parse_drift_policy(policy),
            target="churn",
            score_batches=[self.scores(table)],
        )


@pytest.fixture(scope="module")
def churn(tmp_path_factory, telco_churn_parquet) -> Churn:
    import xgboost

    from ctloop.pipelines.demo_data import demo_tables

    tables = demo_tables(telco_churn_parquet, tmp_path_factory.mktemp("demo"))

    def churn_as_01(path: Path) -> pa.Table:
        table = pq.read_table(path)
        churned = pc.cast(pc.equal(table["churn"], "Yes"), pa.int64())
        return table.set_column(table.schema.get_field_index("churn"), "churn", churned)

    history = churn_as_01(tables.history)
    order = np.random.default_rng(0).permutation(history.num_rows)
    train = history.take(order[: history.num_rows * 7 // 10])
    test = history.take(order[history.num_rows * 7 // 10 :])
    profile = profile_table(history, "churn")
    schema = feature_schema(profile)
    matrix = xgboost.DMatrix(
        to_frame(train, schema), label=train["churn"].to_numpy(), enable_categorical=True
    )
    parameters = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1}
    booster = xgboost.train(parameters, matrix, 100)
    test_scores = predict_scores(booster, to_frame(test, schema))
    scored = with_prediction_distribution(profile, test_scores, test["churn"].to_numpy())
    return Churn(scored, booster, churn_as_01(tables.steady), churn_as_01(tables.shifted))


def test_no_alert_on_the_steady_window(churn):
    report = churn.report(churn.steady)
    estimate = report.result.estimate
    assert report.result.performance_alert is False
    assert [check["passed"] for check in estimate["checks"]] == [True, True, True]
    assert report.result.labelled_rows == churn.steady.num_rows
    assert report.metrics()["performance_alert"] == 0.0


def test_alert_on_the_window_the_model_truly_serves_worse(churn):
    report = churn.report(churn.seniors)
    estimate = report.result.estimate
    test = estimate["test_metrics"]
    accuracy = estimate["metrics"]["accuracy"]
    assert test["accuracy"] - accuracy["realized"] > 0.05  # the drop is real
    assert report.result.performance_alert is True
    failed = {check["metric"] for check in estimate["checks"] if not check["passed"]}
    assert {"accuracy_drop", "estimated_log_loss"} <= failed
    for name, metric in estimate["metrics"].items():
        assert metric["lower"] <= metric["realized"] <= metric["upper"], name
    figures = report.metrics()
    assert figures["performance_alert"] == 1.0
    assert figures["estimated_accuracy"] == pytest.approx(accuracy["estimate"])
    assert "Estimated performance: Performance alert" in report.html
    assert "accuracy drop" in report.html


def test_a_profile_without_calibration_skips_the_estimate_and_never_alerts(churn):
    older = {key: value for key, value in churn.profile.items() if key != "calibration"}
    report = churn.report(churn.seniors, profile=older)
    assert report.result.performance_alert is False
    assert "no calibration" in report.result.estimate["skipped"]
    assert any("no calibration" in note for note in report.notes)
    assert "no calibration" in report.html


def test_replaying_a_fresh_drift_record_gives_the_same_outcome(churn):
    report = churn.report(churn.seniors)
    record = parse_record(report.record(policy=POLICY, registered_model="churn").to_json())
    assert record.outcome["performance_alert"] is True
    assert record.inputs["figures"]["rows"] == churn.seniors.num_rows
    outcome, reasons = replay_drift(record.inputs, record.policy)
    assert outcome == record.outcome
    assert reasons == record.reasons
    loose = '{"performance": {"max_drop": {"accuracy": 0.5}}}'
    assert replay_drift(record.inputs, loose)[0]["performance_alert"] is False
    strict = '{"drift_share": 0.0, "default": {"psi": 0.001}}'
    assert replay_drift(record.inputs, strict)[0]["drift_detected"] is True


def test_the_drift_step_records_the_profile_hash_and_the_policy_text(churn, tmp_path):
    profile_path = tmp_path / "profile.json"
    write_profile(churn.profile, profile_path)
    pq.write_table(churn.seniors, tmp_path / "window.parquet")
    pq.write_table(pa.table({"score": churn.scores(churn.seniors)}), tmp_path / "scores.parquet")
    report = run_drift(
        str(tmp_path / "window.parquet"),
        str(profile_path),
        predictions_path=str(tmp_path / "scores.parquet"),
        target="churn",
        policy=POLICY,
    )
    write_record(report.record(policy=POLICY, model_version="3"), tmp_path / "record.json")
    record = read_record(tmp_path / "record.json")
    assert record.kind == "drift" and record.policy == POLICY
    assert record.subject["model_version"] == "3"
    assert record.inputs["profile_sha256"] == hashlib.sha256(profile_path.read_bytes()).hexdigest()
    assert record.inputs["labelled_rows"] == churn.seniors.num_rows
    assert replay_drift(record.inputs, record.policy) == (record.outcome, record.reasons)


def test_labels_that_are_not_0_or_1_leave_the_estimate_without_realized_metrics(churn):
    window = churn.steady.set_column(
        churn.steady.schema.get_field_index("churn"),
        "churn",
        pa.array(np.full(churn.steady.num_rows, 2)),
    )
    report = churn.report(window)
    estimate = report.result.estimate
    assert estimate["labelled_rows"] == 0
    assert all(metric["realized"] is None for metric in estimate["metrics"].values())
    assert report.result.labelled_rows == churn.steady.num_rows
    assert report.result.performance_alert is False
