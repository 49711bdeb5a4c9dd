"""KFP component of the notify family: the exit task that posts a word when a run ends."""

from kfp import dsl

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def notify_run_end(
    status: dsl.PipelineTaskFinalStatus,
    pipeline_name: str = "",
    webhook_url: str = "",
    summary: str = "",
    kfp_ui_url: str = "",
    run_id: str = "",
    run_name: str = "",
    timeout_s: float = 10.0,
    mlflow_tracking_uri: str = "",
) -> str:
    """Post a Slack-compatible summary of the run (succeeded or failed, what was decided, a
    link) to a webhook. Use it as the exit task of a `dsl.ExitHandler` around the pipeline.

    A webhook that fails or never answers is logged, never raised: a notification does not
    turn a good run red. No webhook configured: nothing is sent, and the log says so.

    Args:
        status: The final status of the ExitHandler's tasks (KFP fills it in).
        pipeline_name: The pipeline's name, for the message.
        webhook_url: Incoming-webhook URL (Slack or compatible); empty: the environment's
            CTLOOP_NOTIFY_WEBHOOK_URL (e.g. from a Kubernetes Secret), else nothing is sent.
            Never printed.
        summary: What the run decided: a JSON object or array, or text; empty for none.
        kfp_ui_url: Base URL of the KFP UI (e.g. https://kubeflow.example.com/_/pipeline),
            for a link to the run; empty for none.
        run_id: The KFP run id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`).
        run_name: The KFP run name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`).
        timeout_s: Seconds to connect, and then to wait for the answer, per attempt (three
            attempts at most).
        mlflow_tracking_uri: MLflow tracking server holding the run's decision records; each
            one the run recorded is listed under "Decided". Empty: `summary` only.

    Returns:
        JSON: sent (bool), detail (what happened, the URL masked) and the HTTP status.
    """
    from ctloop.components.notify.message import RunEnd
    from ctloop.components.notify.run_end import run_notification, with_decisions

    run = RunEnd(
        pipeline=pipeline_name,
        state=status.state or "",
        run_id=run_id,
        run_name=run_name,
        failed_task=status.pipeline_task_name or "",
        error_message=status.error_message or "",
    )
    decided = with_decisions(summary, mlflow_tracking_uri, run_id)
    return run_notification(
        run, url=webhook_url, summary=decided, kfp_ui_url=kfp_ui_url, timeout_s=timeout_s
    ).to_json()
