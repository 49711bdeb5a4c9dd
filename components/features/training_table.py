"""The training table through Feast: entity rows with timestamps and labels, joined point in time.

Each entity row (the feature service's entity keys, e.g. `customer_id`, then `event_timestamp`,
the label, nothing else) gets the service's feature values as they were at its timestamp: the
latest value at or before it, no older than the feature view's TTL (Feast's
`get_historical_features`), so no row sees its own future. The result keeps the entity rows'
order and holds the features, in the service's order, and the label, and nothing else: the keys
and the timestamp are not features, and the validate step treats every other column as one.
The label may be missing (a monitoring window whose outcomes are not known yet): the features
alone come back, and a training run's validate step refuses the table, naming the label.

Feast's file offline store leaves out an entity row that has no feature value within the TTL
(checked with Feast 0.67), rather than giving it missing values: such a row has nothing to train
on. The result says how many were left out, and the dataset's metadata records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ctloop.components.contract.feast_repo import entity_key_types
from ctloop.components.features.repo import (
    TIMESTAMP,
    feature_service,
    feature_service_lineage,
    open_store,
)

LINEAGE_KEYS = ("feature_service", "feature_service_version")
"""The Dataset metadata keys (strings) that the model's lineage carries: which features, as
defined where, the model was trained on."""

ROW = "__ctloop_row"
"""A column carried through the join so the result comes back in the entity rows' order."""
INSTANT = "__ctloop_instant"
"""One id per distinct (entity keys, timestamp): Feast's file offline store keeps only one row of
each such pair (checked with Feast 0.67), so the join runs on the distinct pairs and their
features go back to every entity row holding one, duplicates included."""
KEY_TYPES = {
    "Int64": pa.types.is_integer,
    "Int32": pa.types.is_integer,
    "String": lambda kind: pa.types.is_string(kind) or pa.types.is_large_string(kind),
}
"""The entity table column types that each Feast entity key type joins on exactly."""


class EntityTableError(ValueError):
    """An entity table that cannot drive the point-in-time join."""


@dataclass(frozen=True)
class FeastTrainingTable:
    table: pa.Table
    """The features, in the feature service's order, then the label."""
    feature_service: dict[str, Any]
    """Name, version and feature references of the feature service."""
    rows_without_features: int
    """Entity rows left out: no feature value at or before their timestamp within the TTL."""


def build_training_table(
    entity_table: pa.Table,
    repo_dir: str,
    service_name: str,
    target: str,
    keep_entity_columns: bool = False,
) -> FeastTrainingTable:
    """Join the feature service's features onto `entity_table` as of each row's timestamp.

    `keep_entity_columns` puts the entity keys and the timestamp first, before the features: a
    monitoring window keeps them, so its predictions can name each entity (drift compares only
    the profile's features); a training table does not, since every column there is a feature.

    Raises:
        EntityTableError: no label named, a missing key or timestamp column, or a column
            other than those and the label; a key of another type than the entity's, a
            timestamp without a time zone, a missing key or timestamp; no rows, or no row with
            a feature value (nothing to train on).
        FeatureRepoError: no repository at `repo_dir`, or no feature service `service_name`.
    """
    if not target:
        raise EntityTableError(
            f"no label column named for the entity table (columns "
            f"{entity_table.column_names}): give the target"
        )
    store = open_store(repo_dir)
    service = feature_service(store, service_name)
    key_types = entity_key_types(store, service)
    keys = sorted(key_types)
    _check_entity_table(entity_table, key_types, target)
    frame = entity_table.to_pandas()
    frame[ROW] = range(len(frame))
    frame[INSTANT] = frame.groupby([*keys, TIMESTAMP], sort=False).ngroup()
    instants = frame.drop_duplicates(INSTANT)[[*keys, TIMESTAMP, INSTANT]]
    found = store.get_historical_features(entity_df=instants, features=service).to_df()
    lineage = feature_service_lineage(store, service_name)
    columns = [reference.split(":", 1)[1] for reference in lineage["features"]]
    joined = frame.merge(found[[INSTANT, *columns]], on=INSTANT).sort_values(ROW, kind="stable")
    if joined.empty:
        raise EntityTableError(
            f"none of the entity table's {len(frame)} rows has a value of feature service "
            f"{service_name!r} at or before its {TIMESTAMP} within the feature views' TTL "
            "(every row precedes the features' data, or is older than the TTL, or names keys "
            "it lacks): nothing to join"
        )
    labelled = [target] if target in entity_table.column_names else []
    entity = [*keys, TIMESTAMP] if keep_entity_columns else []
    table = pa.Table.from_pandas(joined[[*entity, *columns, *labelled]], preserve_index=False)
    return FeastTrainingTable(
        table=table.replace_schema_metadata(None),
        feature_service=lineage,
        rows_without_features=len(frame) - len(joined),
    )


def dataset_metadata(built: FeastTrainingTable) -> dict[str, Any]:
    """What the Dataset artifact records about the join: `LINEAGE_KEYS`, the features and how
    many entity rows were left out."""
    return {
        "feature_service": built.feature_service["name"],
        "feature_service_version": built.feature_service["version"],
        "feature_references": built.feature_service["features"],
        "rows_without_features": built.rows_without_features,
    }


def _check_entity_table(table: pa.Table, key_types: dict[str, str], target: str) -> None:
    keys = sorted(key_types)
    expected = [*keys, TIMESTAMP, target]
    missing = [name for name in [*keys, TIMESTAMP] if name not in table.column_names]
    if missing:
        raise EntityTableError(
            f"entity table lacks column(s) {missing}; it needs {expected} (the feature "
            f"service's entity keys, the time each label was observed, the label), and has "
            f"{table.column_names}"
        )
    extra = [name for name in table.column_names if name not in expected]
    if extra:
        raise EntityTableError(
            f"entity table has column(s) {extra} besides {expected}: features come from the "
            "feature service only, so that training and serving use the same definitions"
        )
    if not pa.types.is_timestamp(table.schema.field(TIMESTAMP).type):
        raise EntityTableError(
            f"entity table column {TIMESTAMP!r} is {table.schema.field(TIMESTAMP).type}; "
            "it must be a timestamp"
        )
    if table.schema.field(TIMESTAMP).type.tz is None:
        raise EntityTableError(
            f"entity table column {TIMESTAMP!r} has no time zone; Feast would read it as UTC: "
            "give times with a zone (UTC)"
        )
    for key, kind in key_types.items():
        actual = table.schema.field(key).type
        if kind in KEY_TYPES and not KEY_TYPES[kind](actual):
            raise EntityTableError(
                f"entity table column {key!r} is {actual}; the feature service's entity key "
                f"is {kind}, which it would not join on exactly"
            )
    missing_values = [name for name in [*keys, TIMESTAMP] if table.column(name).null_count]
    if missing_values:
        raise EntityTableError(f"entity table column(s) {missing_values} have missing values")
    if table.num_rows == 0:
        raise EntityTableError("entity table has no rows: nothing to join features onto")
