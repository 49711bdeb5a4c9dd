"""The notify step's one entry: build the run's end message, post it, say in one line what
became of it (never the URL)."""

from __future__ import annotations

import json

from ctloop.components.notify.message import RunEnd, run_end_message
from ctloop.components.notify.webhook import (
    DEFAULT_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    Delivery,
    post_message,
    webhook_url,
)


def run_notification(
    run: RunEnd,
    *,
    url: str = "",
    summary: str = "",
    kfp_ui_url: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = 0.5,
) -> Delivery:
    """Post `run`'s end to the webhook `url` (else the environment's; none: nothing is sent).

    A delivery that failed is logged, not raised (see `webhook`): the run's status stays the
    body's.
    """
    message = run_end_message(run, summary, kfp_ui_url)
    delivery = post_message(
        webhook_url(url), message, timeout_s=timeout_s, attempts=attempts, backoff_s=backoff_s
    )
    what = f"run-end notification ({run.pipeline or 'pipeline'} {run.outcome})"
    if delivery.sent:
        print(f"{what} sent: {delivery.detail}")
    else:
        print(f"{what} not sent: {delivery.detail}; the run's status is not affected")
    return delivery


def with_decisions(summary: str, tracking_uri: str, kfp_run_id: str) -> str:
    """`summary` followed by one line per decision the KFP run recorded in MLflow (kind, model,
    version, outcome), as the JSON list the message shows line by line; `summary` alone when
    there is no tracking URI, or the tracking server cannot say (printed, never raised: the
    word still goes out)."""
    if not tracking_uri or not kfp_run_id:
        return summary
    from ctloop.components.decisions.store import DecisionStoreError, decisions_of_kfp_run

    try:
        decisions = decisions_of_kfp_run(tracking_uri, kfp_run_id)
    except (DecisionStoreError, ValueError) as error:
        print(f"the run's decisions are left out of the notification: {error}")
        return summary
    if not decisions:
        return summary
    lines = [summary] if summary else []
    for decision in decisions:
        about = " ".join(
            part
            for part in (
                decision["registered_model"],
                decision["model_version"] and f"v{decision['model_version']}",
            )
            if part
        )
        outcome = json.dumps(decision["outcome"], sort_keys=True)
        lines.append(f"{decision['kind']}{f' ({about})' if about else ''}: {outcome}")
    return json.dumps(lines)
