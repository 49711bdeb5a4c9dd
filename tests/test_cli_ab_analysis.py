"""`ctloop ab-analysis`: the decision as one JSON line, the report written whole, and bad input
refused in one line with nothing written."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctloop.components.decisions.record import read_record
from ctloop.components.decisions.store import records_for
from ctloop.components.experiment.decision import replay_ab
from ctloop.pipelines.cli import main
from tests import sqlite_registry

tracking_uri = sqlite_registry.tracking_uri  # a fixture: a SQLite MLflow store per module
POLICY = '{"metric": "outcome_mean", "outcome_column": "converted", "min_labelled_rows": 100}'


@pytest.fixture
def experiment(tmp_path):
    """A prediction log folder (two day partitions) and a labels CSV: variant 2 converts more."""
    rng = np.random.default_rng(5)
    rows = 4000
    variants = np.repeat(["1", "2"], rows)
    ids = np.char.add("req-", np.arange(variants.size).astype(str))
    log = pa.table(
        {
            "request_id": ids,
            "row": np.zeros(variants.size, dtype=np.int32),
            "variant": variants,
            "model_version": variants,
            "inputs_hash": ["0" * 16] * variants.size,
            "score": rng.random(variants.size),
        }
    )
    for number, day in enumerate(("2026-12-01", "2026-12-02")):
        folder = tmp_path / "log" / f"date={day}"
        folder.mkdir(parents=True)
        pq.write_table(log.slice(number * rows, rows), folder / "part-0.parquet")
    converted = rng.random(variants.size) < np.where(variants == "2", 0.3, 0.1)
    labels = tmp_path / "labels.csv"
    lines = [f"{request},{int(value)}" for request, value in zip(ids, converted, strict=True)]
    labels.write_text("request_id,converted\n" + "\n".join(lines) + "\n")
    return tmp_path


def test_prints_the_decision_and_writes_the_report(experiment, capsys):
    report = experiment / "out" / "decision.md"
    code = main(
        [
            "ab-analysis",
            "--prediction-log",
            str(experiment / "log"),
            "--labels",
            str(experiment / "labels.csv"),
            "--control-variant",
            "1",
            "--policy",
            POLICY,
            "--report",
            str(report),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (summary["action"], summary["winner"]) == ("promote", "2")
    assert summary["variants"]["2"]["labelled_rows"] == 4000
    assert summary["report"] == str(report)
    assert report.read_text().startswith("## A/B analysis: PROMOTE → 2")


def test_the_decision_record_is_written_logged_and_replays_to_the_same_winner(
    experiment, capsys, tracking_uri
):
    record_file = experiment / "records" / "ab.json"
    argv = ["ab-analysis", "--prediction-log", str(experiment / "log")]
    argv += ["--labels", str(experiment / "labels.csv"), "--control-variant", "1"]
    argv += ["--policy", POLICY, "--record", str(record_file), "--registered-model", "churn"]

    assert main([*argv, "--mlflow-tracking-uri", tracking_uri]) == 0

    summary = json.loads(capsys.readouterr().out)
    record = read_record(record_file)
    assert summary["decision_record"] == record.id
    assert records_for(tracking_uri, "churn") == [record]
    assert record.inputs["variants"]["2"]["labelled"] == 4000
    assert replay_ab(record.inputs, record.policy)[0] == {"action": "promote", "winner": "2"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--control-variant": "9"}, "control variant '9' is not in "),
        ({"--policy": '{"metric": "auc"}'}, '"metric" = "auc" must be one of'),
        ({"--policy": '{"outcome_column": "revenue"}'}, "has no column(s) ['revenue']"),
        ({"--labels": "missing.parquet"}, "does not exist"),
    ],
)
def test_bad_input_exits_2_in_one_line_and_writes_nothing(experiment, capsys, change, message):
    options = {
        "--prediction-log": str(experiment / "log"),
        "--labels": str(experiment / "labels.csv"),
        "--control-variant": "1",
        "--policy": POLICY,
        "--report": str(experiment / "decision.md"),
        **change,
    }
    code = main(["ab-analysis", *[part for pair in options.items() for part in pair]])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("ctloop ab-analysis: ") and message in line
    assert not (experiment / "decision.md").exists()
