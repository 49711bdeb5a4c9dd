"""A/B analysis on record: the per-variant summaries the test used, replayed without the log.

Records are written and read back as files before they are replayed, so replay sees what a
stored record holds.
"""

import json

import pytest

from ctloop.components.decisions.record import DecisionRecordError, read_record, write_record
from ctloop.components.experiment.decision import ab_record, replay_ab
from ctloop.components.experiment.policy import ExperimentPolicyError
from tests.test_experiment_analysis import analysed

CONVERSIONS_TEXT = json.dumps(
    {"metric": "outcome_mean", "outcome_column": "converted", "better": "higher"}
)


def recorded(decision, tmp_path):
    record = ab_record(
        decision,
        policy_text=CONVERSIONS_TEXT,
        prediction_log_uri="s3://log/",
        labels_uri="s3://labels.parquet",
        registered_model="churn",
    )
    write_record(record, tmp_path / "ab.json")
    return read_record(tmp_path / "ab.json")


def test_a_promoted_challenger_replays_to_the_same_winner_from_the_summaries(tmp_path):
    decision = analysed({"1": 0.10, "2": 0.12}, rows=20_000)
    record = recorded(decision, tmp_path)

    assert record.outcome == {"action": "promote", "winner": "2"}
    assert record.subject["model_version"] == "2"
    assert replay_ab(record.inputs, record.policy) == (record.outcome, record.reasons)


def test_the_record_holds_each_variants_counts_mean_and_variance_not_the_rows(tmp_path):
    decision = analysed({"1": 0.10, "2": 0.12}, rows=20_000, labelled=0.5)
    record = recorded(decision, tmp_path)

    control = record.inputs["variants"]["1"]
    summary = decision.summaries["1"]
    assert control["summary"] == {
        "rows": summary.rows,
        "mean": summary.mean,
        "variance": summary.variance,
    }
    assert control["logged"] == 20_000
    assert control["labelled"] + control["unlabelled"] == 20_000
    assert (record.inputs["control"], record.inputs["metric"]) == ("1", "outcome_mean")
    assert len(json.dumps(record.inputs)) < 2_000  # summaries, not 40,000 rows


def test_a_stricter_policy_on_the_same_summaries_keeps_the_experiment_running(tmp_path):
    record = recorded(analysed({"1": 0.10, "2": 0.12}, rows=20_000), tmp_path)

    stricter = json.dumps({**json.loads(CONVERSIONS_TEXT), "min_labelled_rows": 50_000})
    outcome, reasons = replay_ab(record.inputs, stricter)

    assert outcome == {"action": "continue", "winner": ""}
    assert reasons[0] == "1 labelled rows 20000 < min_labelled_rows 50000"


def test_every_challenger_worse_replays_to_rollback(tmp_path):
    record = recorded(analysed({"1": 0.12, "2": 0.10}, rows=20_000), tmp_path)

    assert record.outcome == {"action": "rollback", "winner": "1"}
    assert replay_ab(record.inputs, record.policy)[0] == record.outcome


def test_a_policy_on_another_metric_cannot_be_judged_on_the_summaries(tmp_path):
    record = recorded(analysed({"1": 0.10, "2": 0.12}, rows=20_000), tmp_path)

    with pytest.raises(ExperimentPolicyError, match="cannot judge another metric"):
        replay_ab(record.inputs, "")  # the default: log loss of "label"
    with pytest.raises(DecisionRecordError, match="ab record: an input is missing"):
        replay_ab({**record.inputs, "variants": {"1": {}}}, record.policy)
