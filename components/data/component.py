"""KFP components of the data family: load, validate (with the reference profile), split.

Thin wrappers: each body imports the library module beside it and writes the outputs.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def load_dataset(
    uri: str,
    dataset: Output[Dataset],
    feature_repo: str = "",
    feature_service: str = "",
    target: str = "",
    keep_entity_columns: bool = False,
):
    """Load a Parquet or CSV table from a URI into a Parquet dataset artifact, or build it
    with Feast's point-in-time join from an entity table.

    The artifact's metadata records rows, columns, schema, source URI and a content hash,
    so every later step (and the MLflow run) can name exactly which data it saw. A table built
    through Feast has the features in the feature service's order, then the label; its metadata
    also names the feature service and its version (the model's lineage carries them), the
    feature references, and how many entity rows had no feature values within the TTL (left
    out).

    Args:
        uri: Local path or pyarrow filesystem URI (file://, s3://, gs://, hdfs://) of a Parquet
            or CSV file, or of a folder of Parquet files; or DVC-versioned data,
            dvc://<repo>?path=<path>&rev=<rev> (needs the dvc extra), whose resolved commit
            and DVC content hash the metadata records too. With `feature_repo`: the entity
            table, its key, `event_timestamp` (when each label was observed) and the label.
        dataset: The table as Parquet.
        feature_repo: Feast repository, a folder or a URI (s3://, gs://) holding
            feature_store.yaml (which then names its registry absolutely): the features come
            from there, joined onto `uri`'s entity rows as of each row's time. Needs Feast in
            the step's image (`ctloop compile --feast-image`); empty: `uri` is the table.
        feature_service: The Feast feature service whose features the model trains on.
        target: The entity table's label column (with `feature_repo`).
        keep_entity_columns: With `feature_repo`, keep the entity keys and event_timestamp
            before the features (a monitoring window, whose predictions name each entity);
            a training table has none, since every column there is a feature.
    """
    from ctloop.components.data.dataset_metadata import content_hash, describe_table
    from ctloop.components.data.dvc_source import read_source
    from ctloop.components.table_io import write_parquet

    table, source = read_source(uri)
    if feature_repo:
        from ctloop.components.features.training_table import (
            build_training_table,
            dataset_metadata,
        )

        built = build_training_table(
            table, feature_repo, feature_service, target, keep_entity_columns
        )
        table, source = built.table, {**source, **dataset_metadata(built)}
    write_parquet(table, dataset.path)
    dataset.metadata.update(describe_table(table))
    dataset.metadata.update({"source_uri": uri, **source, "content_hash": content_hash(table)})


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def resolve_window(uri_template: str, offset_days: int = 0) -> str:
    """Fill a window URI template from the run's clock, e.g. s3://lake/dt={date}/ (UTC).

    Args:
        uri_template: URI with optional {date} (YYYY-MM-DD), {year}, {month}, {day}, {hour}
            fields; a URI without fields is returned as it is.
        offset_days: Days back from now (1 = yesterday's partition).

    Returns:
        The window's URI.
    """
    import datetime as dt

    from ctloop.components.data.window import window_uri

    uri = window_uri(uri_template, dt.datetime.now(dt.UTC), offset_days)
    print(f"window: {uri}")
    return uri


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def validate_dataset(
    dataset: Input[Dataset],
    target: str,
    validated: Output[Dataset],
    reference_profile: Output[Artifact],
    report: Output[Markdown],
    task: str = "binary",
    min_rows: int = 100,
    drop_columns: list = [],  # noqa: B006 - KFP reads defaults from the signature
    time_column: str = "",
):
    """Check the table is fit to train on and profile it as the reference for drift.

    Fails with one message naming the column, value and rule when the target is missing,
    not binary (or not numeric for regression), or the table is too small. Unusable
    features (all-null, constant, unsupported types) are dropped and listed in the report,
    never used silently.

    Args:
        dataset: The loaded table.
        target: Name of the label column.
        validated: The table with the label mapped to 0/1 and unusable columns removed.
        reference_profile: JSON profile (bins, category and missing rates) that drift
            monitoring compares production data with; it is logged with the model.
        report: What was checked and decided, for the Kubeflow UI.
        task: "binary" (0/1, bool or two string labels) or "regression".
        min_rows: Fewest rows accepted.
        drop_columns: Columns never used as features (ids, timestamps).
        time_column: Column a time split orders by: kept in the table, never a feature.
    """
    from ctloop.components.contract.profile import write_profile
    from ctloop.components.data.dataset_metadata import source_lineage
    from ctloop.components.data.profile import reference_profile as build_profile
    from ctloop.components.data.validation import validate_training_table
    from ctloop.components.table_io import read_table, write_parquet

    result = validate_training_table(
        read_table(dataset.path),
        target,
        task=task,
        min_rows=min_rows,
        drop_columns=drop_columns,
        time_column=time_column or None,
    )
    profile = build_profile(
        result.table,
        target=target,
        task=task,
        features=result.features,
        categorical_features=result.categorical_features,
        label_mapping=result.label_mapping,
    )
    profile["dataset"] = {
        "uri": dataset.metadata.get("source_uri", dataset.uri),
        "content_hash": dataset.metadata.get("content_hash", ""),
        **source_lineage(dataset.metadata),
    }
    write_parquet(result.table, validated.path)
    validated.metadata.update(dataset.metadata)
    write_profile(profile, reference_profile.path)
    for name, warning in result.warnings.items():
        print(f"warning: feature {name!r}: {warning}")
    with open(report.path, "w") as handle:
        handle.write(result.report_markdown)
    report.metadata["display_name"] = "Data validation"
    reference_profile.metadata["display_name"] = "Reference profile"


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def split_dataset(
    dataset: Input[Dataset],
    target: str,
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    time_column: str = "",
):
    """Split into train, validation (early stopping) and test (evaluation and the gate).

    Args:
        dataset: The validated table.
        target: Label column; the random split is stratified on it for binary tasks.
        train: Rows to fit on, in Parquet row groups of 131,072 rows: whole groups are what
            the distributed train step shares out among its workers.
        validation: Rows for early stopping.
        test: Held-out rows for evaluation and the quality gate.
        validation_fraction: Share of rows for validation.
        test_fraction: Share of rows for test.
        seed: Seed of the random split (same seed, same split).
        time_column: When set, split by time instead: oldest rows train, newest test.
    """
    from ctloop.components.data.split import ROW_GROUP_ROWS, split_table
    from ctloop.components.table_io import read_table, write_parquet

    parts = split_table(
        read_table(dataset.path),
        target,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
        time_column=time_column or None,
    )
    for artifact, part in zip((train, validation, test), parts, strict=True):
        write_parquet(part, artifact.path, row_group_rows=ROW_GROUP_ROWS)
        artifact.metadata.update({"rows": part.num_rows})
