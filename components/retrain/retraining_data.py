"""The table a retrained model learns from, written where the training pipeline can read it.

When the production window has drifted, the next model should see it. Three choices:

- `reference+current` (default): everything the champion saw plus the new window, so the new
  model learns the new population without forgetting the old one;
- `current`: the window alone, when the old data no longer describes production;
- `sliding`: reference then window, keeping only the newest `max_rows` rows (the window's rows
  count as newest), so the training set tracks production at a bounded size.

The window must carry the label (retraining needs outcomes) and every reference column; its
columns are cast to the reference's types so one file has one schema. The result is written to
a URI (local path or any pyarrow filesystem) because the training pipeline takes its data as
a URI: the retraining run then records exactly which file it learned from.
"""

from __future__ import annotations

import pyarrow as pa

MODES = ("reference+current", "current", "sliding")


class RetrainingDataError(ValueError):
    """A window that cannot be appended to the reference data, or a bad mode."""


def retraining_table(
    reference: pa.Table, current: pa.Table, *, target: str, mode: str, max_rows: int = 0
) -> pa.Table:
    """Combine reference and window rows for retraining (see the module docstring).

    Args:
        reference: The data the champion was trained on.
        current: The drifted production window, with labels.
        target: The label column; the window must have it.
        mode: One of `MODES`.
        max_rows: With `sliding`, the most rows kept (the newest); must be > 0 there.

    Raises:
        RetrainingDataError: unknown mode, missing label or column, a column whose values
            cannot take the reference's type, or no `max_rows` for `sliding`.
    """
    if mode not in MODES:
        raise RetrainingDataError(f"retraining data mode {mode!r}: expected one of {MODES}")
    if mode == "sliding" and max_rows <= 0:
        raise RetrainingDataError("retraining data mode 'sliding' needs max_rows > 0")
    if target not in current.column_names:
        raise RetrainingDataError(
            f"current window has no label column {target!r}: retraining needs outcomes; "
            f"its columns are {current.column_names}"
        )
    if mode == "current":
        return current
    reference = reference.replace_schema_metadata(None)
    combined = pa.concat_tables([reference, _as_reference_schema(current, reference.schema)])
    if mode == "sliding" and combined.num_rows > max_rows:
        combined = combined.slice(combined.num_rows - max_rows)
    return combined


def retraining_data_uri(output_uri: str, reference_uri: str, run_id: str) -> str:
    """`output_uri`, or by default `<reference folder>/retraining/<run id>.parquet`.

    One file per monitoring run, beside the data it extends, so reruns never overwrite
    the table an earlier retrained model was trained on.
    """
    if output_uri:
        return output_uri
    if reference_uri.startswith("dvc://"):
        raise RetrainingDataError(
            f"reference {reference_uri!r} is DVC data, and the retraining table cannot be "
            "written into its Git repository: give retraining_data_uri (a path or URI)"
        )
    folder = reference_uri.rstrip("/").rsplit("/", 1)[0] if "/" in reference_uri else "."
    return f"{folder}/retraining/{run_id or 'latest'}.parquet"


def _as_reference_schema(current: pa.Table, schema: pa.Schema) -> pa.Table:
    missing = [name for name in schema.names if name not in current.column_names]
    if missing:
        raise RetrainingDataError(
            f"current window lacks reference column(s) {missing}; it cannot be appended"
        )
    columns = []
    for field in schema:
        column = current.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise RetrainingDataError(
                f"current window column {field.name!r} ({column.type}) cannot be read as the "
                f"reference's {field.type}: {error}"
            ) from error
    return pa.Table.from_arrays(columns, schema=schema)
