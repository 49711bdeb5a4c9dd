"""KFP component of the batch scoring family: a dataset scored with a model."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def score_dataset(
    dataset: Input[Dataset],
    model_uri: str,
    predictions: Output[Dataset],
    reference_profile: Output[Artifact],
    mlflow_tracking_uri: str = "",
    key_columns: list = [],  # noqa: B006 - KFP reads defaults from the signature
    batch_rows: int = 65536,
    log_every_rows: int = 100000,
):
    """Score every row of a dataset with a model, streaming it in record batches.

    Memory is bounded by a few batches however many rows there are, and a progress line is
    logged every `log_every_rows` rows. Categorical values are coded with the model's own
    reference profile, exactly as in training.

    Args:
        dataset: Rows holding the model's feature columns (Parquet).
        model_uri: A model folder (model.json with reference_profile.json beside it) or an
            MLflow model, e.g. models:/ctloop-model@champion, models:/ctloop-model/3.
        predictions: Parquet with the key columns, `score` and `model_version`, row for row.
        reference_profile: The model's reference profile (JSON), what drift compares with.
        mlflow_tracking_uri: MLflow tracking server for models:/ and runs:/ URIs (empty:
            $MLFLOW_TRACKING_URI).
        key_columns: Input columns copied into the predictions (ids to join on).
        batch_rows: Most rows per record batch.
        log_every_rows: Rows between two progress lines in the log.
    """
    from ctloop.components.batch_scoring.scoring import run_scoring
    from ctloop.components.contract.model_uri import load_model_uri
    from ctloop.components.contract.profile import write_profile

    model = load_model_uri(model_uri, mlflow_tracking_uri)
    summary = run_scoring(
        dataset.path,
        model,
        predictions.path,
        key_columns=key_columns,
        batch_rows=batch_rows,
        log_every_rows=log_every_rows,
    )
    write_profile(model.profile or {}, reference_profile.path)
    predictions.metadata.update({**summary.to_json(), "model_uri": model_uri})
    predictions.metadata["display_name"] = "Predictions"
    reference_profile.metadata.update({"model_uri": model_uri, "model_version": model.version})
    reference_profile.metadata["display_name"] = "Model reference profile"
