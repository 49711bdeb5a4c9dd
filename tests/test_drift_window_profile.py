import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctloop.components.data.profile import (
    bin_index,
    reference_profile,
    with_prediction_distribution,
)
from ctloop.components.drift.window_profile import (
    UNSEEN_EXAMPLES,
    WindowProfile,
    WindowProfileError,
    prediction_counts,
    window_profile,
)
from ctloop.components.table_io import DatasetError, ParquetBatches, iter_batches


def _table(rows: int, seed: int, extra_categories: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, rows)
    amount[rng.random(rows) < 0.05] = np.nan
    levels = np.array([f"level{i}" for i in range(5 + extra_categories)])
    plan = levels[rng.integers(0, len(levels), rows)].astype(object)
    plan[rng.random(rows) < 0.03] = None
    return pa.table(
        {
            "amount": amount,
            "plan": pa.array(plan, type=pa.string()),
            "score": rng.random(rows),
        }
    )


@pytest.fixture(scope="module")
def profile() -> dict:
    table = _table(5_000, seed=0)
    profile = reference_profile(table, "target", "binary", ["amount", "plan"], ["plan"], None)
    return with_prediction_distribution(profile, table.column("score").to_numpy())


def test_window_counts_match_reference_binning(profile):
    window = _table(3_000, seed=1, extra_categories=3)
    result = window_profile(window.to_batches(max_chunksize=700), profile, score_column="score")
    amount = window.column("amount").to_numpy()
    index = bin_index(profile["features"]["amount"]["bin_edges"], amount)
    expected = np.bincount(index[index >= 0], minlength=len(result.features["amount"].counts))
    assert result.rows == 3_000
    assert result.features["amount"].counts.tolist() == expected.tolist()
    assert result.features["amount"].missing == int(np.isnan(amount).sum())
    plan = result.features["plan"]
    labels = window.column("plan").to_pylist()
    assert plan.missing == labels.count(None)
    assert plan.counts.tolist() == [labels.count(f"level{i}") for i in range(5)]
    assert plan.unseen == sum(labels.count(f"level{i}") for i in range(5, 8))
    assert plan.unseen_examples == ("level5", "level6", "level7")
    assert result.prediction.values == 3_000
    assert result.prediction.counts.sum() == 3_000


def test_merging_three_parts_equals_profiling_the_whole_window(profile):
    window = _table(9_000, seed=2, extra_categories=20)
    whole = window_profile(window.to_batches(max_chunksize=1_000), profile, score_column="score")
    parts = [window.slice(0, 2_500), window.slice(2_500, 4_000), window.slice(6_500)]
    merged = [window_profile(part.to_batches(), profile, score_column="score") for part in parts]
    combined = merged[0].merge(merged[1]).merge(merged[2])
    assert combined.to_json() == whole.to_json()
    assert len(combined.features["plan"].unseen_examples) == UNSEEN_EXAMPLES


def test_window_profile_round_trips_through_json(profile):
    window = window_profile(_table(500, seed=3).to_batches(), profile, score_column="score")
    again = WindowProfile.from_json(window.to_json())
    assert again.to_json() == window.to_json()


def test_window_without_a_profiled_feature_is_rejected(profile):
    table = _table(100, seed=4).drop_columns(["plan"])
    with pytest.raises(WindowProfileError, match="no column 'plan'"):
        window_profile(table.to_batches(), profile)


def test_numeric_feature_holding_text_is_rejected(profile):
    table = pa.table({"amount": ["12.5", "lots"], "plan": ["level1", "level2"]})
    with pytest.raises(WindowProfileError, match="'amount' is numeric .* not numbers"):
        window_profile(table.to_batches(), profile)


def test_scores_need_prediction_bins_in_the_profile():
    table = _table(200, seed=5)
    bare = reference_profile(table, "target", "binary", ["amount"], [], None)
    with pytest.raises(WindowProfileError, match="no 'prediction' bins"):
        window_profile(table.to_batches(), bare, score_column="score")
    with pytest.raises(WindowProfileError, match="no 'prediction' bins"):
        prediction_counts(bare, np.array([0.5]))


def test_iter_batches_streams_parquet_and_gzipped_csv_alike(tmp_path, profile):
    table = _table(4_000, seed=6)
    pq.write_table(table, tmp_path / "window.parquet", row_group_size=1_000)
    csv_path = tmp_path / "window.csv.gz"
    with gzip.open(csv_path, "wt") as handle:
        handle.write("amount,plan,score\n")
        for amount, plan, score in zip(
            *(table.column(i).to_pylist() for i in range(3)), strict=True
        ):
            text = "" if amount is None or np.isnan(amount) else repr(amount)
            handle.write(f"{text},{plan or ''},{score!r}\n")
    from_parquet = window_profile(
        iter_batches(str(tmp_path / "window.parquet"), ["amount", "plan"], batch_rows=512),
        profile,
    )
    from_csv = window_profile(iter_batches(str(csv_path), batch_rows=512), profile)
    whole = window_profile(table.to_batches(), profile)
    assert from_parquet.to_json() == whole.to_json()
    assert from_csv.to_json() == whole.to_json()


def test_iter_batches_names_an_absent_column(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "w.parquet")
    with pytest.raises(DatasetError, match=r"no column\(s\) \['b'\]"):
        list(iter_batches(str(tmp_path / "w.parquet"), ["a", "b"]))
    with pytest.raises(DatasetError, match="cannot be opened"):
        list(iter_batches(str(tmp_path / "absent.parquet")))


def test_parquet_window_is_read_column_by_column_in_bounded_batches(tmp_path, profile):
    table = _table(20_000, seed=7, extra_categories=2)
    path = tmp_path / "one_row_group.parquet"
    pq.write_table(table, path, row_group_size=len(table))
    batches = iter_batches(str(path), ["amount", "plan", "score"], batch_rows=1_500)
    assert isinstance(batches, ParquetBatches)
    for name in ("amount", "plan"):
        lengths = [len(array) for array in batches.column(name, as_dictionary=True)]
        assert max(lengths) == 1_500 and sum(lengths) == 20_000
    plan = next(iter(batches.column("plan", as_dictionary=True)))
    assert pa.types.is_dictionary(plan.type)
    by_column = window_profile(batches, profile, score_column="score")
    by_batch = window_profile(table.to_batches(max_chunksize=777), profile, score_column="score")
    assert by_column.to_json() == by_batch.to_json()
    assert [batch.num_rows for batch in batches][:2] == [1_500, 1_500]
    assert sum(batch.num_rows for batch in batches) == 20_000  # iterable again


def test_parquet_folder_window_equals_its_files_together(tmp_path, profile):
    table = _table(6_000, seed=8, extra_categories=4)
    (tmp_path / "window").mkdir()
    pq.write_table(table.slice(0, 2_500), tmp_path / "window" / "part-0.parquet")
    pq.write_table(table.slice(2_500), tmp_path / "window" / "part-1.parquet")
    folder = window_profile(iter_batches(str(tmp_path / "window")), profile)
    assert folder.to_json() == window_profile(table.to_batches(), profile).to_json()
    assert folder.rows == 6_000


def test_parquet_window_without_a_profiled_feature_is_rejected(tmp_path, profile):
    pq.write_table(_table(100, seed=9).drop_columns(["plan"]), tmp_path / "w.parquet")
    with pytest.raises(WindowProfileError, match="no column 'plan' \\(profiled feature\\)"):
        window_profile(iter_batches(str(tmp_path / "w.parquet")), profile)


def test_dictionary_columns_count_only_the_values_they_hold(profile):
    dictionary = pa.array(["level0", "never_used", "level1", "new_one", None])
    plan = pa.DictionaryArray.from_arrays(
        pa.array([0, 2, None, 3, 4, 0, 2, 2], pa.int32()), dictionary
    ).slice(1)
    table = pa.table({"amount": np.arange(7, dtype=float), "plan": plan})
    counted = window_profile(table.to_batches(), profile).features["plan"]
    assert counted.counts.tolist() == [1, 3, 0, 0, 0]
    assert (counted.missing, counted.values, counted.unseen) == (2, 5, 1)
    assert counted.unseen_examples == ("new_one",)


def test_csv_batches_hold_at_most_batch_rows_and_only_the_columns_asked(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("a,b,c\n" + "".join(f"{i},{i % 3},x{i}\n" for i in range(2_000)))
    batches = list(iter_batches(str(path), ["c", "a"], batch_rows=300))
    assert max(batch.num_rows for batch in batches) == 300
    assert sum(batch.num_rows for batch in batches) == 2_000
    assert batches[0].schema.names == ["c", "a"]
    with pytest.raises(DatasetError, match=r"no column\(s\) \['d'\]"):
        iter_batches(str(path), ["a", "d"])
