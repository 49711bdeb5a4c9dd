"""What a Dataset artifact's metadata records about a table: its content hash and shape.

The hash is what lineage keys on (the training run's `ctloop.dataset.content_hash` tag, the
profile's `dataset`), so it must not change with how the table was chunked or read.
"""

import hashlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa


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


SOURCE_LINEAGE_PREFIXES = ("dvc_", "feature_service")
"""Metadata keys a table's source adds to its Dataset artifact that the model's lineage carries:
DVC data's repository, revision, commit and hash (`dvc_source`), and the Feast feature service
and its version a training table was joined through (`ctloop.components.features`)."""


def source_lineage(metadata: Mapping[str, object]) -> dict[str, str]:
    """The `SOURCE_LINEAGE_PREFIXES` keys of a Dataset artifact's metadata, as text (none for a
    table read from a plain path or URI)."""
    return {
        key: str(value)
        for key, value in sorted(metadata.items())
        if key.startswith(SOURCE_LINEAGE_PREFIXES)
    }
