"""KFP components of the features family: the training table through Feast, materialization.

Thin wrappers: each body imports the library module beside it (and, through it, Feast).
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def feast_training_table(
    entity_uri: str,
    feature_repo: str,
    dataset: Output[Dataset],
    feature_service: str = "churn_features",
    target: str = "churn",
):
    """Build the training table with Feast's point-in-time join, as a Parquet dataset.

    The output is what `load_dataset` gives (features and label, the same metadata), so the
    validate step takes it as any table; its metadata also names the feature service
    (`feature_service`, `feature_service_version`: the model's lineage records them), its
    `feature_references`, and how many entity rows had no feature values to join (left out).

    Args:
        entity_uri: Parquet or CSV table of `customer_id`, `event_timestamp` and the label.
        feature_repo: Folder of the Feast repository (the one holding feature_store.yaml).
        dataset: The training table as Parquet.
        feature_service: The feature service whose features the model trains on.
        target: The label column of the entity table.
    """
    from ctloop.components.data.dataset_metadata import content_hash, describe_table
    from ctloop.components.features.training_table import (
        build_training_table,
        dataset_metadata,
    )
    from ctloop.components.table_io import read_table, write_parquet

    built = build_training_table(read_table(entity_uri), feature_repo, feature_service, target)
    write_parquet(built.table, dataset.path)
    dataset.metadata.update(describe_table(built.table))
    dataset.metadata.update({"source_uri": entity_uri, "content_hash": content_hash(built.table)})
    dataset.metadata.update(dataset_metadata(built))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def materialize_features(feature_repo: str, end: str = "") -> str:
    """Load the feature values up to `end` into the online store the predictor reads.

    Args:
        feature_repo: Folder of the Feast repository (the one holding feature_store.yaml).
        end: ISO 8601 time with a zone; empty: now (UTC).

    Returns:
        JSON {feature view: materialized up to}.
    """
    import datetime as dt
    import json

    from ctloop.components.features.materialize import materialize

    until = dt.datetime.fromisoformat(end) if end else dt.datetime.now(dt.UTC)
    return json.dumps(materialize(feature_repo, until))
