"""The training loop's own decisions, on record in its MLflow: two local training runs leave a
gate record each, `ctloop replay` takes every one again the same, and `ctloop audit` shows the
first version gated before it was registered."""

import json

from ctloop.pipelines.cli import main


def test_every_decision_of_two_training_runs_replays_the_same(training_loop, capsys):
    _, first, _ = training_loop
    uri, name = first["mlflow_tracking_uri"], first["registered_model"]
    where = ["--registered-model", name, "--mlflow-tracking-uri", uri, "--json"]

    assert main(["replay", "--all", *where]) == 0
    summary = json.loads(capsys.readouterr().out)
    kinds = [result["kind"] for result in summary["replays"]]
    assert kinds.count("gate") == 2
    assert summary["same"] == len(kinds)

    assert main(["audit", *where]) == 0
    events = [(e["version"], e["event"]) for e in json.loads(capsys.readouterr().out)["events"]]
    assert events.index(("1", "trained")) < events.index(("1", "gated"))
    assert events.index(("1", "gated")) < events.index(("1", "registered"))
