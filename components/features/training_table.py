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

from ctloop.components.contract.feast_repo import entity_keys
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
            other than those and the label.
        FeatureRepoError: no repository at `repo_dir`, or no feature service `service_name`.
    """
    if not target:
        raise EntityTableError(
            f"no label column named for the entity table (columns "
            f"{entity_table.column_names}): give the target"
        )
    store = open_store(repo_dir)
    service = feature_service(store, service_name)
    keys = entity_keys(store, service)
    _check_entity_table(entity_table, keys, target)
    frame = entity_table.to_pandas()
    frame[ROW] = range(len(frame))
    joined = store.get_historical_features(entity_df=frame, features=service).to_df()
    joined = joined.sort_values(ROW, kind="stable")
    lineage = feature_service_lineage(store, service_name)
    columns = [reference.split(":", 1)[1] for reference in lineage["features"]]
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


def _check_entity_table(table: pa.Table, keys: list[str], target: str) -> None:
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
