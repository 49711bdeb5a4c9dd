"""The one way this project reads and writes tables: whole or streamed, written atomically.

Reading: `read_table` loads a Parquet file or folder, or a CSV file (gzipped or not), local or
behind any URI pyarrow has a filesystem for, so a bad URI or a file that is not a table fails at
the load step with one message naming the URI, rather than deep inside training. A folder is
read with Hive partitioning (`contract=One year/part-0.parquet`): the key of each `name=value`
folder below it is a column of the table, as Spark, Hive and `pyarrow.dataset.write_dataset`
mean it; the files themselves do not hold that column. Partitioning is never read from the
path of a single file, where a `name=value` folder above it would add a column by accident.
Repeated column names are refused here, naming the URI: no later step could tell them apart.
`iter_batches` streams the same sources with bounded memory: a Parquet window is read one
column at a time if the caller wants (drift counts column by column), in batches of a bounded
number of rows, never a whole column chunk at once; a CSV, which cannot be read by column, is
read in blocks of rows.

Writing: every file a step leaves behind appears only once complete (`partial_then_rename`,
`write_parquet`), so a failed step never leaves a half-written artifact that a later step
would read as good data.

One exception: the train step streams its Parquet splits into XGBoost itself
(`ctloop.components.train.trainer`), with read settings tuned for that. Reading and writing stay
in one module, a little over the size this project aims for, because both resolve URIs to
filesystems and name formats by the same rules.
"""

import codecs
import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

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

DEFAULT_BATCH_ROWS = 65_536

READ_BUFFER_BYTES = 1 << 20
"""Parquet is streamed through a buffer of this size, never a whole column chunk at once."""

CSV_BLOCK_BYTES = 1 << 18
"""CSV is parsed in blocks of this size; the streaming reader's memory grows with it."""


class DatasetError(ValueError):
    """A dataset URI that cannot be read as a non-empty table."""


def read_table(uri: str, filesystem: pa_fs.FileSystem | None = None) -> pa.Table:
    """Read a Parquet file, a folder of Parquet files, or a CSV file (optionally gzipped).

    Args:
        uri: A local path or any URI pyarrow has a filesystem for (file://, s3://, gs://,
            hdfs://...). The format comes from the extension (.parquet/.pq, .csv/.csv.gz);
            without one, a Parquet magic number means Parquet and readable text means CSV.
        filesystem: Read `uri` as a path on this filesystem instead (e.g. a DVC repository's,
            bridged from fsspec), by the same rules.

    Raises:
        DatasetError: the URI does not exist, is empty (0 bytes or no rows), is neither
            Parquet nor CSV, or repeats a column name.
    """
    filesystem, path = _filesystem(uri) if filesystem is None else (filesystem, uri)
    info = filesystem.get_file_info(path)
    if info.type == pa_fs.FileType.NotFound:
        raise DatasetError(f"dataset {uri!r} does not exist")
    if info.type == pa_fs.FileType.Directory:
        table = _read_parquet_folder(uri, filesystem, path)
    elif info.size == 0:
        raise DatasetError(f"dataset {uri!r} is empty (0 bytes)")
    else:
        table = _read_file(uri, filesystem, path)
    _require_unique_names(uri, table.column_names)
    if table.num_rows == 0:
        raise DatasetError(f"dataset {uri!r} has no rows (columns: {table.column_names})")
    return table


def write_parquet(table: pa.Table, path: str | Path, row_group_rows: int | None = None) -> None:
    """Write `table` as one Parquet file at a local `path`, atomically (`partial_then_rename`),
    in row groups of `row_group_rows` rows (None: pyarrow's default, about a million).

    With smaller row groups, floating-point columns are written without dictionary encoding:
    a group's distinct floats then fit under pyarrow's 1 MB dictionary page, so it never falls
    back to plain encoding, and continuous features come out about a quarter larger and slower
    to read (1.4M rows x 30 columns, 128k-row groups: 221 MB instead of 149 MB).
    """
    options = {}
    if row_group_rows is not None:
        options["row_group_size"] = row_group_rows
        options["use_dictionary"] = [
            field.name for field in table.schema if not pa.types.is_floating(field.type)
        ]
    with partial_then_rename(path) as partial:
        pq.write_table(table, partial, **options)


@contextlib.contextmanager
def partial_then_rename(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed to `path` only when the block succeeds.

    Readers never see a half-written file: on any error the partial file is removed and
    whatever was at `path` before is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
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


class ParquetBatches:
    """A Parquet file or folder read lazily with bounded memory (see `iter_batches`).

    Iterating gives record batches of every requested column, as `Dataset.to_batches` would
    (each file's batches cast to the dataset's schema, partition columns filled in from the
    file's folder); `column` reads one column alone, so counting columns one after the other
    holds one column's pages and one batch at a time. No read buffers the file or a whole
    column chunk: pages stream through a `READ_BUFFER_BYTES` buffer. Each iteration reads the
    files again from the start.
    """

    def __init__(
        self, dataset: pa_dataset.FileSystemDataset, columns: list[str], batch_rows: int
    ) -> None:
        self.schema = pa.schema([dataset.schema.field(name) for name in columns])
        self.batch_rows = batch_rows
        self._dataset = dataset
        self._files = [
            (fragment.path, pa_dataset.get_partition_keys(fragment.partition_expression))
            for fragment in dataset.get_fragments()
        ]
        partitioned = {name for _, keys in self._files for name in keys}
        self._stored = [name for name in columns if name not in partitioned]

    @property
    def num_rows(self) -> int:
        """Rows of all the files (from their footers)."""
        return sum(self._open(path).metadata.num_rows for path, _ in self._files)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for path, keys in self._files:
            parquet = self._open(path)
            for batch in parquet.iter_batches(self.batch_rows, columns=self._stored):
                arrays = dict(zip(batch.schema.names, batch.columns, strict=True))
                columns = [
                    arrays[field.name]
                    if field.name in arrays
                    else _repeated(keys, field, batch.num_rows)
                    for field in self.schema
                ]
                batch = pa.record_batch(columns, names=self.schema.names)
                yield batch if batch.schema == self.schema else batch.cast(self.schema)

    def column(self, name: str, *, as_dictionary: bool = False) -> Iterator[pa.Array]:
        """One column, batch by batch; text as dictionary arrays when `as_dictionary` (the
        values stay dictionary-encoded, as Parquet usually stores text)."""
        stored = name in self._stored
        for path, keys in self._files:
            parquet = self._open(path, read_dictionary=[name] if as_dictionary else None)
            columns = [name] if stored else []
            for batch in parquet.iter_batches(self.batch_rows, columns=columns, use_threads=False):
                if stored:
                    yield batch.column(0)
                else:
                    yield _repeated(keys, self.schema.field(name), batch.num_rows)

    def _open(self, path: str, read_dictionary: list[str] | None = None) -> pq.ParquetFile:
        return pq.ParquetFile(
            path,
            filesystem=self._dataset.filesystem,
            read_dictionary=read_dictionary,
            pre_buffer=False,
            buffer_size=READ_BUFFER_BYTES,
        )


def _repeated(keys: dict, field: pa.Field, rows: int) -> pa.Array:
    """A partition column for one batch: the file's folder value (null when absent), `rows`
    times."""
    return pa.repeat(pa.scalar(keys.get(field.name), field.type), rows)


def iter_batches(
    uri: str, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterable[pa.RecordBatch]:
    """Record batches of a Parquet file or folder, or a CSV file, without reading it whole.

    Args:
        uri: Local path or any URI pyarrow has a filesystem for; CSV when the name ends in
            .csv / .csv.gz (empty cells are nulls, as in `read_table`), Parquet otherwise.
        columns: Columns to read (all when None).
        batch_rows: Most rows per batch.

    Returns:
        Parquet: a `ParquetBatches` (iterable again, and by column; a folder's Hive partition
        keys are columns, as in `read_table`); CSV: the batches once, read in blocks of
        `CSV_BLOCK_BYTES`.

    Raises:
        DatasetError: the URI cannot be opened, lacks a requested column or repeats a column
            name.
    """
    location = uri if "://" in uri else os.path.abspath(uri)
    if uri.lower().endswith(CSV_SUFFIXES):
        return _csv_batches(uri, location, columns, batch_rows)
    filesystem, path = _filesystem(uri)
    try:
        folder = filesystem.get_file_info(path).type == pa_fs.FileType.Directory
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"dataset {uri!r} cannot be opened: {error}") from error
    dataset = _parquet_dataset(uri, filesystem, path, folder)
    _require_columns(uri, dataset.schema.names, columns)
    names = dataset.schema.names if columns is None else columns
    return ParquetBatches(dataset, names, batch_rows)


def _csv_batches(
    uri: str, location: str, columns: list[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    try:
        filesystem, path = pa_fs.FileSystem.from_uri(location)
        reader = _open_csv(filesystem, path, None)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"dataset {uri!r} cannot be opened: {error}") from error
    _require_columns(uri, reader.schema.names, columns)
    if columns is not None:  # read again, converting only those columns
        reader.close()
        reader = _open_csv(filesystem, path, columns)
    return _slices(reader, batch_rows)


def _open_csv(
    filesystem: pa_fs.FileSystem, path: str, columns: list[str] | None
) -> pa_csv.CSVStreamingReader:
    # open_input_stream decompresses by the file name's suffix (.gz).
    return pa_csv.open_csv(
        filesystem.open_input_stream(path),
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            strings_can_be_null=True, include_columns=columns or []
        ),
    )


def _slices(reader: pa_csv.CSVStreamingReader, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _require_unique_names(uri: str, names: list[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(
            f"dataset {uri!r} repeats column name(s) {repeated}; column names must be unique"
        )


def _require_columns(uri: str, names: list[str], columns: list[str] | None) -> None:
    absent = [name for name in columns or [] if name not in names]
    if absent:
        raise DatasetError(f"dataset {uri!r} has no column(s) {absent}; columns are {names}")


def _filesystem(uri: str) -> tuple[pa_fs.FileSystem, str]:
    if "://" not in uri:
        return pa_fs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pa_fs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"dataset {uri!r}: no filesystem can open this URI: {error}") from error


def _parquet_dataset(
    uri: str, filesystem: pa_fs.FileSystem, path: str, folder: bool
) -> pa_dataset.FileSystemDataset:
    """A Parquet file or folder; a folder's `name=value` subfolders are partition columns."""
    try:
        if not folder:  # a dataset refuses a repeated name without saying which
            _require_unique_names(uri, pq.read_schema(path, filesystem=filesystem).names)
        partitioning = "hive" if folder else None
        dataset = pa_dataset.dataset(
            path, filesystem=filesystem, format="parquet", partitioning=partitioning
        )
    except (pa.ArrowException, OSError) as error:
        what = "a folder of Parquet files (and nothing else)" if folder else "Parquet"
        raise DatasetError(f"dataset {uri!r} cannot be opened as {what}: {error}") from error
    _require_unique_names(uri, dataset.schema.names)
    return dataset


def _read_parquet_folder(uri: str, filesystem: pa_fs.FileSystem, path: str) -> pa.Table:
    dataset = _parquet_dataset(uri, filesystem, path, folder=True)
    try:
        return dataset.to_table()
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"dataset {uri!r}: its Parquet files cannot be read: {error}") from error


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
        # ParquetFile reads a file that repeats a column name, so read_table can name them.
        return pq.ParquetFile(path, filesystem=filesystem).read()
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
