"""A pipeline that ends with a word: the body pipeline inside a `dsl.ExitHandler` whose exit task
posts the run's outcome to a webhook.

KFP runs an ExitHandler's exit task after the tasks inside it, whether they succeeded or not,
and hands it their final status (`dsl.PipelineTaskFinalStatus`). It also sets three limits that
shape this module (kfp 2.17's compiler enforces each):

- a pipeline may return no output of a task inside an ExitHandler, and no task outside may read
  one: so the notified pipeline returns nothing, and the body pipeline (with its outputs) stays
  what local runs and a parent pipeline call (the monitoring pipeline nests the training body,
  which therefore sends no word of its own);
- the exit task may read no task's output ("exit_task cannot depend on any other tasks"): what
  it reports comes from pipeline parameters and run placeholders only;
- an ExitHandler must sit at the top of the pipeline function: one group around the whole body.

`with_run_end_word` builds that pipeline for any body without restating its parameters: the
notified pipeline takes the body's parameters (same defaults, types and descriptions) plus
`webhook_url` and `kfp_ui_url`, and keeps the body's name, so uploads and schedules of the
pipeline name carry on. The exit task is never cached (each run's end is news) and, with
`webhook_secret`, reads the webhook from that Kubernetes Secret's key `url` (optional: a missing
Secret sends nothing rather than failing the run), so the URL need not be a run parameter that
the KFP UI shows.
"""

from __future__ import annotations

import inspect

from kfp import dsl, kubernetes
from kfp.dsl.base_component import BaseComponent
from kfp.dsl.graph_component import GraphComponent

from ctloop.components.notify.webhook import WEBHOOK_ENV

WORD_PARAMETERS = {
    "webhook_url": "Incoming-webhook URL (Slack or compatible) told when the run ends, "
    "succeeded or failed; empty: the webhook Secret's, if the pipeline was compiled with "
    "one, else no word is sent. Never printed.",
    "kfp_ui_url": "Base URL of the KFP UI (e.g. https://kubeflow.example.com/_/pipeline), for "
    "a link to the run in the word; empty for none.",
}


def with_run_end_word(
    body: GraphComponent,
    notify: BaseComponent,
    *,
    summary: str = "",
    webhook_secret: str = "",
) -> GraphComponent:
    """`body` inside an ExitHandler whose exit task is `notify` (`notify_run_end`).

    Args:
        body: The pipeline to run (its outputs are not returned: see the module docstring).
        notify: The `notify_run_end` component, as the catalog binds it to the image.
        summary: The word's "Decided" text, fixed at compile time (e.g. what the run checks).
        webhook_secret: Kubernetes Secret whose key `url` holds the webhook; "" for none.
    """
    func = body.pipeline_func
    signature = inspect.signature(func)
    clashes = sorted(set(WORD_PARAMETERS) & set(signature.parameters))
    if clashes:
        raise ValueError(f"pipeline {body.name} already has parameter(s) {clashes}")
    added = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default="", annotation=str)
        for name in WORD_PARAMETERS
    ]
    notified_signature = signature.replace(
        parameters=[*signature.parameters.values(), *added],
        return_annotation=inspect.Signature.empty,
    )

    def notified(*args, **kwargs):
        arguments = dict(notified_signature.bind(*args, **kwargs).arguments)
        word = notify(
            pipeline_name=body.name,
            webhook_url=arguments.pop("webhook_url"),
            kfp_ui_url=arguments.pop("kfp_ui_url"),
            summary=summary,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            # The exit task may read no task's output: what the run decided comes from the
            # decision records its steps kept in MLflow, found by the run's id.
            mlflow_tracking_uri=arguments.get("mlflow_tracking_uri", ""),
        ).set_display_name("word when the run ends")
        word.set_caching_options(False)
        if webhook_secret:
            kubernetes.use_secret_as_env(word, webhook_secret, {"url": WEBHOOK_ENV}, optional=True)
        with dsl.ExitHandler(word, name="run"):
            body(**arguments).set_display_name(body.name)

    notified.__signature__ = notified_signature
    notified.__name__ = func.__name__
    notified.__doc__ = _with_arguments(func.__doc__ or "", WORD_PARAMETERS)
    return dsl.pipeline(name=body.name, description=body.description)(notified)


def _with_arguments(docstring: str, arguments: dict[str, str]) -> str:
    """`docstring` with `arguments` added at the end of its Google-style `Args:` section (KFP
    reads each parameter's description from there), or a new `Args:` section."""
    lines = inspect.cleandoc(docstring).splitlines()
    entries = [f"    {name}: {text}" for name, text in arguments.items()]
    if "Args:" not in lines:
        return "\n".join([*lines, "", "Args:", *entries])
    end = lines.index("Args:") + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return "\n".join([*lines[:end], *entries, *lines[end:]])
