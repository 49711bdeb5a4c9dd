"""KFP components of the retraining family: build the retraining table, start a training run."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare_retraining_data(
    reference_uri: str,
    current: Input[Dataset],
    target: str,
    output_uri: str = "",
    mode: str = "reference+current",
    max_rows: int = 0,
    run_id: str = "",
    feature_repo: str = "",
) -> str:
    """Write the table a retrained model learns from, and return its URI.

    With `feature_repo` the champion was trained through Feast: the reference is its entity
    table, and the retraining table is made of entity rows too (the window's own, read from
    the source its load step recorded), which the retraining's load step joins again, each row
    as of its time, so the retrained model's features come from the same definitions.

    Args:
        reference_uri: The champion's training data (Parquet/CSV path, pyarrow URI, or DVC
            data: dvc://<repo>?path=<path>&rev=<rev>).
        current: The drifted production window; it must carry the label.
        target: Label column.
        output_uri: Parquet file to write (local path or s3://, gs://, ...); empty:
            `<reference folder>/retraining/<run_id>.parquet` (needed for DVC reference data).
        mode: "reference+current" (all of both), "current" (the window alone) or "sliding"
            (both, keeping the newest `max_rows` rows).
        max_rows: Rows kept by "sliding".
        run_id: The KFP run, naming the default output file.
        feature_repo: The Feast repository the window was joined through; empty: none.

    Returns:
        The URI written, for the training pipeline's `data_uri`.
    """
    from ctloop.components.data.dvc_source import read_source
    from ctloop.components.retrain.retraining_data import retraining_data_uri, retraining_table
    from ctloop.components.table_io import read_table, write_parquet_uri

    uri = retraining_data_uri(output_uri, reference_uri, run_id)
    reference, _pinned = read_source(reference_uri)  # a path, a URI or DVC data (dvc://)
    if feature_repo:
        window, _pinned = read_source(current.metadata["source_uri"])
    else:
        window = read_table(current.path)
    table = retraining_table(
        reference,
        window,
        target=target,
        mode=mode,
        max_rows=max_rows,
    )
    print(f"retraining data: {table.num_rows} rows ({mode}) -> {uri}")
    return write_parquet_uri(table, uri)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def start_retraining_run(
    kfp_host: str,
    training_pipeline: str,
    experiment: str,
    data_uri: str,
    training_arguments: str = "{}",
    cooldown_hours: float = 24.0,
    run_name: str = "ctloop retraining after drift",
    feature_repo: str = "",
    feature_service: str = "",
) -> str:
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
        feature_repo: The Feast repository `data_uri`'s entity rows are joined through (the
            training run gets it and `feature_service`); empty: `data_uri` is a table.
        feature_service: The Feast feature service (with `feature_repo`).

    Returns:
        JSON: action ("started" or "skipped"), reason, and the new run's id ("" when skipped).
    """
    from ctloop.components.json_parameter import parse_json_object
    from ctloop.components.retrain.kfp_runs import TrainingArgumentsError, start_training_run

    arguments = parse_json_object(training_arguments, "training_arguments", TrainingArgumentsError)
    arguments["data_uri"] = data_uri
    if feature_repo:
        arguments.update(feature_repo=feature_repo, feature_service=feature_service)
    outcome = start_training_run(
        kfp_host,
        pipeline_name=training_pipeline,
        experiment=experiment,
        arguments=arguments,
        cooldown_hours=cooldown_hours,
        run_name=run_name,
    )
    print(f"retraining {outcome.action}: {outcome.reason} {outcome.run_id}".rstrip())
    return outcome.to_json()


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def route_retraining(
    drift_detected: bool,
    record: Output[Artifact],
    retrain_mode: str = "nested",
    performance_alert: bool = False,
    labelled_rows: int = 0,
    min_new_labelled_rows: int = 0,
    registered_model_name: str = "",
    mlflow_tracking_uri: str = "",
    kfp_run_id: str = "",
) -> str:
    """Decide whether and how to retrain: "nested" or "api" when a trigger fired, else "none".

    Triggers: the window drifted, the champion's estimated performance crossed the drift
    policy's bound, or the window holds at least `min_new_labelled_rows` labelled rows (rows
    the champion was not trained on). The decision, with what each trigger found, is written
    as a decision record.

    Args:
        drift_detected: The drift step's decision.
        record: The decision record (JSON): the figures read, the route and why.
        retrain_mode: "nested" (train inside this run) or "api" (start a training run).
        performance_alert: The drift step's performance-estimate alert.
        labelled_rows: The window's rows with a label (the drift step's `labelled_rows`).
        min_new_labelled_rows: Retrain once the window holds this many labelled rows; 0: no
            data-volume trigger.
        registered_model_name: The registered model whose champion was monitored (the
            record's subject).
        mlflow_tracking_uri: MLflow tracking server the record is logged to; empty: the
            record is only the artifact.
        kfp_run_id: The KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), for the record.

    Returns:
        The branch the monitoring pipeline takes.
    """
    from ctloop.components.retrain.decision import retraining_route, run_retraining_route

    route = retraining_route(
        drift_detected,
        retrain_mode,
        performance_alert=performance_alert,
        labelled_rows=labelled_rows,
        min_new_labelled_rows=min_new_labelled_rows,
    )
    record.metadata["display_name"] = "Retraining decision"
    return run_retraining_route(
        route,
        record.path,
        registered_model=registered_model_name,
        kfp_run_id=kfp_run_id,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def summarize_retraining(
    gate_passed: bool, gate_failures: str, metrics: str, deployment: str
) -> str:
    """Pack a nested training run's outputs into the monitoring run's `retraining` JSON.

    Args:
        gate_passed: The retrained model's gate decision.
        gate_failures: JSON list of gate failures.
        metrics: JSON object of the retrained model's test metrics.
        deployment: JSON deployment summary of the training run.

    Returns:
        JSON with action "retrained" and the four inputs.
    """
    from ctloop.components.retrain.decision import retrained_summary

    return retrained_summary(gate_passed, gate_failures, metrics, deployment)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def keep_champion(
    drift_share: float,
    performance_alert: bool = False,
    labelled_rows: int = 0,
    min_new_labelled_rows: int = 0,
) -> str:
    """Report that no retraining trigger fired and the champion stays, saying what was checked.

    Args:
        drift_share: The drift step's (weighted) share of drifted features.
        performance_alert: The drift step's performance-estimate alert.
        labelled_rows: The window's rows with a label.
        min_new_labelled_rows: The data-volume trigger's threshold (0: none).

    Returns:
        JSON with action "none" and the reason: each trigger and what it found.
    """
    from ctloop.components.retrain.decision import not_retrained_summary

    return not_retrained_summary(
        drift_share,
        performance_alert=performance_alert,
        labelled_rows=labelled_rows,
        min_new_labelled_rows=min_new_labelled_rows,
    )
