"""Scoring time of candidate and champion, timed interleaved, with an injected clock."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost as xgb

from ctloop.components.contract.model_folder import write_model_folder
from ctloop.components.contract.model_input import to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import profile_table
from ctloop.components.evaluate import evaluation
from ctloop.components.evaluate.latency import (
    LatencyError,
    interleaved_latency,
    latency_batch,
)
from ctloop.components.registry.mlflow_registry import RegisteredModel
from ctloop.components.table_io import write_parquet


class ScriptedClock:
    """A clock that moves only when a scorer runs, by the durations scripted for it (ms)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def scorer(self, name: str, durations_ms: list[float]):
        remaining = iter(durations_ms)

        def score() -> None:
            self.calls.append(name)
            self.now += next(remaining) / 1000.0

        return score


def test_calls_alternate_candidate_and_champion_after_one_warm_up_each():
    clock = ScriptedClock()
    scorers = {
        "candidate": clock.scorer("candidate", [9.0] + [2.0] * 5),
        "champion": clock.scorer("champion", [9.0] + [1.0] * 5),
    }
    interleaved_latency(scorers, rounds=5, clock=clock)
    assert clock.calls == ["candidate", "champion"] * 6


def test_median_and_minimum_are_not_moved_by_a_few_preempted_calls():
    clock = ScriptedClock()
    # Warm-up 50 ms (not timed); two calls preempted (40 ms) among seven of about 2 ms.
    candidate = [50.0, 2.0, 40.0, 2.1, 1.9, 40.0, 2.0, 2.2]
    champion = [50.0, 1.0, 1.1, 30.0, 0.9, 1.0, 1.2, 1.0]
    timings = interleaved_latency(
        {
            "candidate": clock.scorer("candidate", candidate),
            "champion": clock.scorer("champion", champion),
        },
        rounds=7,
        clock=clock,
    )
    assert timings["candidate"] == pytest.approx({"median_ms": 2.1, "min_ms": 1.9})
    assert timings["champion"] == pytest.approx({"median_ms": 1.0, "min_ms": 0.9})


def test_a_lone_candidate_is_timed_alone():
    clock = ScriptedClock()
    timings = interleaved_latency({"candidate": clock.scorer("c", [5.0, 3.0, 4.0])}, 2, clock)
    assert timings == {"candidate": pytest.approx({"median_ms": 3.5, "min_ms": 3.0})}


@pytest.mark.parametrize(
    ("scorers", "rounds", "message"),
    [({}, 3, "no scorer to time"), ({"candidate": lambda: None}, 0, r"rounds \(0\) must be >= 1")],
)
def test_nothing_to_time_is_refused(scorers, rounds, message):
    with pytest.raises(LatencyError, match=message):
        interleaved_latency(scorers, rounds)


def test_the_batch_is_the_first_rows_cycled_to_its_length():
    frame = pd.DataFrame({"a": range(300)})
    batch = latency_batch(frame, 1000)
    assert len(batch) == 1000
    assert batch["a"].tolist() == list(range(300)) * 3 + list(range(100))
    assert latency_batch(frame, 10)["a"].tolist() == list(range(10))
    with pytest.raises(LatencyError, match="empty frame"):
        latency_batch(frame.iloc[:0])


def _trained(table: pa.Table, target: str) -> tuple[xgb.Booster, dict]:
    profile = profile_table(table, target)
    frame = to_frame(table, feature_schema(profile))
    label = table.column(target).to_numpy()
    data = xgb.DMatrix(frame, label=label, enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, data, 3)
    return booster, profile


def test_evaluation_times_candidate_and_champion_on_the_same_rows_each_in_its_own_schema(
    tmp_path, monkeypatch
):
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "x1": rng.random(300),
            "plan": rng.choice(["basic", "plus"], 300),
            "x2": rng.random(300),
            "churn": rng.integers(0, 2, 300),
        }
    )
    write_parquet(table, tmp_path / "test.parquet")
    candidate, profile = _trained(table, "churn")
    write_model_folder(candidate, profile, str(tmp_path / "model"))
    champion, champion_profile = _trained(table.select(["x2", "x1", "churn"]), "churn")
    registered = RegisteredModel("churn", "4", "run", "models:/churn/4", champion_profile)
    monkeypatch.setattr(evaluation.mlflow_registry, "model_by_alias", lambda *_: registered)
    monkeypatch.setattr(evaluation.mlflow_registry, "load_booster", lambda _: champion)
    timed = {}

    def recorded(scorers):
        timed.update(scorers)
        return {name: {"median_ms": 2.0, "min_ms": 1.5} for name in scorers}

    monkeypatch.setattr(evaluation, "interleaved_latency", recorded)
    result, _ = evaluation.run_evaluation(
        test_path=str(tmp_path / "test.parquet"),
        model_dir=str(tmp_path / "model"),
        profile=profile,
        tracking_uri="unused",
        registered_model_name="churn",
    )
    timing = {"median_ms": 2.0, "min_ms": 1.5}
    assert result["latency"] == {
        "batch_rows": 1000,
        "rounds": 31,
        "candidate": timing,
        "champion": timing,
    }
    assert result["champion_version"] == "4"
    assert list(timed) == ["candidate", "champion"]
    (candidate_model, candidate_rows) = timed["candidate"].args
    (champion_model, champion_rows) = timed["champion"].args
    assert champion_model is champion
    assert list(candidate_rows.columns) == ["x1", "plan", "x2"]
    assert list(champion_rows.columns) == ["x2", "x1"]
    assert len(candidate_rows) == len(champion_rows) == 1000
    assert candidate_rows["x2"].tolist() == champion_rows["x2"].tolist()
