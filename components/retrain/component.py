"""KFP components of the retraining family: build the retraining table, start a training run."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare_retraining_data(
    reference_uri: str,
    current: Input[Dataset],
    target: str,
    output_uri: str,
    mode: str = "reference+current",
    max_rows: int = 0,
) -> str:
    """Write the table a retrained model learns from, and return its URI.

    Args:
        reference_uri: The champion's training data (Parquet/CSV path or pyarrow URI).
        current: The drifted production window; it must carry the label.
        target: Label column.
        output_uri: Parquet file to write (local path or s3://, gs://, ...).
        mode: "reference+current" (all of both), "current" (the window alone) or "sliding"
            (both, keeping the newest `max_rows` rows).
        max_rows: Rows kept by "sliding".

    Returns:
        The URI written, for the training pipeline's `data_uri`.
    """
    import pyarrow.parquet as pq

    from ctloop.components.data.dataset_io import read_table, write_parquet_uri
    from ctloop.components.retrain.retraining_data import retraining_table

    table = retraining_table(
        read_table(reference_uri),
        pq.read_table(current.path),
        target=target,
        mode=mode,
        max_rows=max_rows,
    )
    print(f"retraining data: {table.num_rows} rows ({mode}) -> {output_uri}")
    return write_parquet_uri(table, output_uri)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def start_retraining_run(
    kfp_host: str,
    training_pipeline: str,
    experiment: str,
    data_uri: str,
    training_arguments: str = "{}",
    cooldown_hours: float = 24.0,
    run_name: str = "ctloop retraining after drift",
) -> NamedTuple("RetrainingRun", action=str, reason=str, run_id=str):
    """Start a run of the uploaded training pipeline through the KFP API, unless cooling down.

    No run starts while a run of the training pipeline in `experiment` is still going, or if
    one was created less than `cooldown_hours` ago. Uses the pod's KFP service-account token.

    Args:
        kfp_host: KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888.
        training_pipeline: Name of the uploaded training pipeline; its newest version runs.
        experiment: Experiment of the run (created when absent).
        data_uri: The retraining table, passed as the run's `data_uri`.
        training_arguments: JSON object of further training pipeline parameters.
        cooldown_hours: Hours after a retraining run during which no other starts.
        run_name: Display name of the run.

    Returns:
        action ("started" or "skipped"), reason, and the new run's id ("" when skipped).
    """
    from collections import namedtuple

    from ctloop.components.json_parameter import parse_json_object
    from ctloop.components.retrain.kfp_runs import TrainingArgumentsError, start_training_run

    arguments = parse_json_object(training_arguments, "training_arguments", TrainingArgumentsError)
    arguments["data_uri"] = data_uri
    outcome = start_training_run(
        kfp_host,
        pipeline_name=training_pipeline,
        experiment=experiment,
        arguments=arguments,
        cooldown_hours=cooldown_hours,
        run_name=run_name,
    )
    print(f"retraining {outcome.action}: {outcome.reason} {outcome.run_id}".rstrip())
    return namedtuple("RetrainingRun", ["action", "reason", "run_id"])(
        outcome.action, outcome.reason, outcome.run_id
    )
