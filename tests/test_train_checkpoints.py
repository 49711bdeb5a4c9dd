"""A train step killed mid-way resumes from its last checkpoint and ends with the same model."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from ctloop.components.contract.profile import feature_schema
from ctloop.components.train.checkpoints import CheckpointStore, training_fingerprint
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

PROFILE = {
    "target": "label",
    "task": "binary",
    "feature_order": ["x0", "x1", "x2", "colour"],
    "features": {
        **{f"x{i}": {"kind": "numeric"} for i in range(3)},
        "colour": {"kind": "categorical", "categories": {"red": 0.4, "green": 0.3, "blue": 0.3}},
    },
}
SCHEMA = feature_schema(PROFILE)
# Row and column sampling on: the case where a naive resume draws different samples.
SAMPLED = '{"num_boost_round": 40, "early_stopping_rounds": null, "max_depth": 4, "nthread": 1}'

CHILD = """
import json, sys, time
import xgboost as xgb
from ctloop.components.contract.profile import feature_schema
from ctloop.components.train.checkpoints import CheckpointStore
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

train, validation, store, profile, params = sys.argv[1:]

class Slow(xgb.callback.TrainingCallback):
    def after_iteration(self, model, epoch, evals_log):
        time.sleep(0.1)
        return False

train_booster(
    train, validation, target="label", schema=feature_schema(json.loads(profile)),
    params=parse_hyperparameters(params, "binary"), callbacks=[Slow()],
    checkpoints=CheckpointStore(store), checkpoint_every=5,
)
"""


def _write(path, rows, seed, noise=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    colour = rng.choice(["red", "green", "blue"], size=rows)
    logit = np.zeros(rows) if noise else 2 * x[:, 0] - x[:, 1] * x[:, 2] + (colour == "red")
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    columns = {f"x{i}": x[:, i] for i in range(3)}
    pq.write_table(pa.table({**columns, "colour": colour, "label": label}), path)
    return path


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    return _write(folder / "train.parquet", 3000, 1), _write(folder / "valid.parquet", 800, 2)


def _train(splits, params, **options):
    return train_booster(
        *splits,
        target="label",
        schema=SCHEMA,
        params=parse_hyperparameters(params, "binary"),
        **options,
    )


class _CrashAfter(xgb.callback.TrainingCallback):
    """Stands in for a preempted node: the process dies after `rounds` rounds."""

    def __init__(self, rounds):
        super().__init__()
        self.rounds = rounds

    def after_iteration(self, model, epoch, evals_log):
        if epoch + 1 == self.rounds:
            raise KeyboardInterrupt("node preempted")
        return False


class _Rounds(xgb.callback.TrainingCallback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def after_iteration(self, model, epoch, evals_log):
        self.seen.append(epoch)
        return False


def test_training_killed_by_sigkill_resumes_to_the_same_model(splits, tmp_path):
    store = tmp_path / "checkpoints"
    arguments = [*map(str, splits), str(store), json.dumps(PROFILE), SAMPLED]
    killed = subprocess.Popen([sys.executable, "-c", CHILD, *arguments])
    reference = CheckpointStore(str(tmp_path / "reference"))
    uninterrupted = _train(splits, SAMPLED, checkpoint_every=5, checkpoints=reference).booster
    while not list(store.glob("*.json")):
        assert killed.poll() is None, "the training process ended before its first checkpoint"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    checkpoint = CheckpointStore(str(store)).latest()
    assert 0 < checkpoint.rounds < 40 and not checkpoint.finished

    rounds = _Rounds()
    store = CheckpointStore(str(store))
    result = _train(splits, SAMPLED, checkpoint_every=5, checkpoints=store, callbacks=[rounds])
    resumed = result.booster
    assert result.resumed_rounds == checkpoint.rounds
    assert rounds.seen == list(range(checkpoint.rounds, 40))
    assert resumed.get_dump() == uninterrupted.get_dump()
    frame = pq.read_table(splits[1]).to_pandas()
    del frame["label"]
    frame["colour"] = frame["colour"].astype("category")
    matrix = xgb.DMatrix(frame, enable_categorical=True)
    np.testing.assert_array_equal(resumed.predict(matrix), uninterrupted.predict(matrix))


def test_early_stopping_state_survives_a_crash(tmp_path):
    splits = (
        _write(tmp_path / "t.parquet", 2000, 5, True),
        _write(tmp_path / "v.parquet", 800, 6, True),
    )
    params = '{"num_boost_round": 200, "early_stopping_rounds": 6, "max_depth": 3, "nthread": 1}'
    reference = CheckpointStore(str(tmp_path / "reference"))
    uninterrupted = _train(splits, params, checkpoint_every=4, checkpoints=reference)
    assert uninterrupted.early_stopped
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    crash_at = uninterrupted.booster.num_boosted_rounds() - 2  # after the best round
    with pytest.raises(KeyboardInterrupt):
        _train(
            splits, params, checkpoint_every=4, checkpoints=store, callbacks=[_CrashAfter(crash_at)]
        )
    assert store.latest().rounds > uninterrupted.best_iteration
    resumed = _train(splits, params, checkpoint_every=4, checkpoints=store)
    assert resumed.booster.get_dump() == uninterrupted.booster.get_dump()
    assert resumed.best_iteration == uninterrupted.best_iteration
    assert resumed.evals_result == uninterrupted.evals_result
    assert resumed.early_stopped


def test_a_finished_run_keeps_only_its_last_checkpoint_and_is_not_trained_again(splits, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "rounds-000003.ubj").write_bytes(b"killed before its JSON was written")
    (folder / ".rounds-000003.json.5d1e").write_bytes(b"{")
    store = CheckpointStore(str(folder))
    assert store.latest() is None
    first = _train(splits, SAMPLED, checkpoint_every=7, checkpoints=store)
    latest = store.latest()
    assert latest.finished and latest.rounds == 40
    assert sorted(p.name for p in folder.iterdir()) == ["rounds-000040.json", "rounds-000040.ubj"]
    rounds = _Rounds()
    again = _train(splits, SAMPLED, checkpoint_every=7, checkpoints=store, callbacks=[rounds])
    assert (again.resumed_rounds, rounds.seen) == (40, [])
    assert again.booster.get_dump() == first.booster.get_dump()
    assert again.evals_result == first.evals_result


def test_without_sampling_checkpoints_change_nothing(splits, tmp_path):
    exact = SAMPLED.replace("}", ', "subsample": 1, "colsample_bytree": 1}')
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    kept = _train(splits, exact, checkpoint_every=7, checkpoints=store)
    assert kept.booster.get_dump() == _train(splits, exact).booster.get_dump()


def test_callbacks_see_the_whole_run_across_segments(splits, tmp_path):
    class Seen(xgb.callback.TrainingCallback):
        def __init__(self):
            super().__init__()
            self.rounds, self.lengths, self.ends = [], [], []

        def before_training(self, model):
            self.ends.append(("before", model.num_boosted_rounds()))
            return model

        def after_training(self, model):
            self.ends.append(("after", model.num_boosted_rounds()))
            return model

        def after_iteration(self, model, epoch, evals_log):
            self.rounds.append(epoch)
            self.lengths.append(len(evals_log["validation"]["logloss"]))
            return False

    seen = Seen()
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    _train(splits, SAMPLED, checkpoint_every=3, checkpoints=store, callbacks=[seen])
    assert seen.rounds == list(range(40))
    assert seen.lengths == list(range(1, 41))
    assert seen.ends == [("before", 0), ("after", 40)]


def test_fingerprint_changes_with_data_and_hyperparameters(splits, tmp_path):
    params = parse_hyperparameters(SAMPLED, "binary")
    same = training_fingerprint(*splits, params, "cpu")
    assert same == training_fingerprint(*splits, dict(params), "cpu")
    assert same != training_fingerprint(*splits, {**params, "eta": 0.2}, "cpu")
    assert same != training_fingerprint(*splits, params, "cuda")
    other = _write(tmp_path / "other.parquet", 3000, 9)
    assert same != training_fingerprint(other, splits[1], params, "cpu")
