"""The notify step's one entry: build the run's end message, post it, say in one line what
became of it (never the URL)."""

from __future__ import annotations

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
