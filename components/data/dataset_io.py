"""The one way this project reads and writes tables: Parquet or CSV, local or remote.

Every step reads its dataset artifact through `read_table`, so a bad URI or a file that is not a
table fails at the load step with one message naming the URI, rather than deep inside training.
"""

import codecs
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_dataset
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
SNIFF_BYTES = 64 * 1024


class DatasetError(ValueError):
    """A dataset URI that cannot be read as a non-empty table."""


def read_table(uri: str) -> pa.Table:
    """Read a Parquet file, a folder of Parquet files, or a CSV file (optionally gzipped).

    Args:
        uri: A local path or any URI pyarrow has a filesystem for (file://, s3://, gs://,
            hdfs://...). The format comes from the extension (.parquet/.pq, .csv/.csv.gz);
            without one, a Parquet magic number means Parquet and readable text means CSV.

    Raises:
        DatasetError: the URI does not exist, is empty (0 bytes or no rows), or is neither
            Parquet nor CSV.
    """
    filesystem, path = _filesystem(uri)
    info = filesystem.get_file_info(path)
    if info.type == pa_fs.FileType.NotFound:
        raise DatasetError(f"dataset {uri!r} does not exist")
    if info.type == pa_fs.FileType.Directory:
        table = _read_parquet_folder(uri, filesystem, path)
    elif info.size == 0:
        raise DatasetError(f"dataset {uri!r} is empty (0 bytes)")
    else:
        table = _read_file(uri, filesystem, path)
    if table.num_rows == 0:
        raise DatasetError(f"dataset {uri!r} has no rows (columns: {table.column_names})")
    return table


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write `table` as one Parquet file at a local `path`, atomically.

    The file appears only once complete (written beside it, then renamed), so a failed step
    never leaves a half-written artifact that a later step would read as good data.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        pq.write_table(table, partial)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_parquet_uri(table: pa.Table, uri: str) -> str:
    """Write `table` as one Parquet file at a local path or pyarrow filesystem URI.

    Local paths go through `write_parquet` (atomic rename). Object stores (s3://, gs://)
    publish an object only when its upload completes, so a failed write leaves nothing.
    Returns `uri`.
    """
    if not uri.lower().endswith(PARQUET_SUFFIXES):
        raise DatasetError(f"output {uri!r} must name a Parquet file ({PARQUET_SUFFIXES})")
    filesystem, path = _filesystem(uri)
    if isinstance(filesystem, pa_fs.LocalFileSystem):
        write_parquet(table, path)
        return uri
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        pq.write_table(table, stream)
    return uri


def content_hash(table: pa.Table) -> str:
    """A sha256 hex digest of the table's logical content: column names, types and values.

    Hashed column by column, in order: name and Arrow type, the validity mask, then the
    non-null values serialised with Arrow IPC. Working from the logical values (chunks
    combined, dictionaries decoded, nulls filtered out) rather than the raw buffers is why
    the same data hashes the same however it was chunked or read: bytes hidden under null
    slots, slice offsets and dictionary order differ between readers but are not data.
    Schema metadata (e.g. pandas' index notes) and nullability flags are not data either, and
    are left out. Row order is data: reordered rows hash differently.
    """
    digest = hashlib.sha256()
    for field, column in zip(table.schema, table.columns, strict=True):
        digest.update(f"{len(field.name)}:{field.name}:{field.type}\n".encode())
        values = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        valid = values.is_valid()
        digest.update(np.packbits(valid.to_numpy(zero_copy_only=False)).tobytes())
        digest.update(_ipc_bytes(values.filter(valid)))
    return digest.hexdigest()


def describe_table(table: pa.Table) -> dict:
    """Rows, columns and {column: Arrow type} for a Dataset artifact's metadata."""
    return {
        "rows": table.num_rows,
        "columns": table.num_columns,
        "schema": {field.name: str(field.type) for field in table.schema},
    }


def _ipc_bytes(values: pa.Array) -> bytes:
    batch = pa.record_batch([values], names=["values"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _filesystem(uri: str) -> tuple[pa_fs.FileSystem, str]:
    if "://" not in uri:
        return pa_fs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pa_fs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"dataset {uri!r}: no filesystem can open this URI: {error}") from error


def _read_parquet_folder(uri: str, filesystem: pa_fs.FileSystem, path: str) -> pa.Table:
    try:
        return pa_dataset.dataset(path, filesystem=filesystem, format="parquet").to_table()
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(
            f"dataset {uri!r} is a folder, and a folder must hold only Parquet files: {error}"
        ) from error


def _read_file(uri: str, filesystem: pa_fs.FileSystem, path: str) -> pa.Table:
    name = path.lower()
    with filesystem.open_input_stream(path, compression=None) as stream:
        head = stream.read(SNIFF_BYTES)
    if name.endswith(PARQUET_SUFFIXES) or (
        not name.endswith(CSV_SUFFIXES) and head.startswith(PARQUET_MAGIC)
    ):
        return _read_parquet(uri, filesystem, path)
    compression = "gzip" if head.startswith(GZIP_MAGIC) else None
    if compression:
        with filesystem.open_input_stream(path, compression=compression) as stream:
            head = stream.read(SNIFF_BYTES)
    if not _looks_like_text(head):
        raise DatasetError(
            f"dataset {uri!r} is neither Parquet (no PAR1 magic number) nor CSV "
            f"(its first bytes are binary, not UTF-8 text: {head[:8]!r})"
        )
    return _read_csv(uri, filesystem, path, compression)


def _read_parquet(uri: str, filesystem: pa_fs.FileSystem, path: str) -> pa.Table:
    try:
        return pq.read_table(path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"dataset {uri!r} is not a readable Parquet file: {error}") from error


def _read_csv(
    uri: str, filesystem: pa_fs.FileSystem, path: str, compression: str | None
) -> pa.Table:
    # Empty cells in text columns are missing values, as they are in numeric columns.
    options = pa_csv.ConvertOptions(strings_can_be_null=True)
    try:
        with filesystem.open_input_stream(path, compression=compression) as stream:
            return pa_csv.read_csv(stream, convert_options=options)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"dataset {uri!r} is not a readable CSV file: {error}") from error


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        # Incremental decoding tolerates a multi-byte character cut at the sniff boundary.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True
