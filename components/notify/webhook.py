"""Post a run's end message to a webhook: bounded in time, retried a little, never fatal.

A notification must not turn a good run red: the exit task that posts it runs after the
pipeline's body, and a failed exit task marks the whole run failed in KFP. So a webhook that
refuses the connection, answers an error, or never answers is one log line (what happened, the
URL masked) and a `Delivery` saying so; only the step's own bugs can fail it. The price is that a
broken webhook is noticed in the logs rather than on the run's status.

Bounded: each attempt waits `timeout_s` to connect and `timeout_s` for the answer. A refused or
failed connection, and an answer of 429 or 5xx, are tried again up to `attempts` in all, with
exponential backoff (urllib3's `Retry`); a `Retry-After` header is not followed (Slack can ask
for minutes). A request sent and never answered is not resent: the chat may have shown it, and
a second copy only doubles the wait.

The URL is a secret (a Slack incoming-webhook URL is its own credential): it is never printed,
and no error text or urllib3 log record that could hold it reaches the log; `masked` keeps the
scheme and host. It comes from the step's `webhook_url` parameter or, so that it need not
appear among a run's parameters in the KFP UI, from the environment (`WEBHOOK_ENV`, e.g. set
from a Kubernetes Secret).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

WEBHOOK_ENV = "CTLOOP_NOTIFY_WEBHOOK_URL"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPTS = 3
RETRIED_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Delivery:
    """What became of a message: sent (and the answer's status), or why not."""

    sent: bool
    detail: str
    status: int | None = None

    def to_json(self) -> str:
        return json.dumps({"sent": self.sent, "detail": self.detail, "status": self.status})


def webhook_url(configured: str) -> str:
    """The URL to post to: `configured`, else `WEBHOOK_ENV`, else "" (nothing is sent)."""
    return configured.strip() or os.environ.get(WEBHOOK_ENV, "").strip()


def masked(url: str) -> str:
    """`url` with everything after the host hidden: `https://hooks.slack.com/***` (`?` for a
    host that does not parse)."""
    scheme, host = _scheme_and_host(url)
    return f"{scheme or '?'}://{host or '?'}/***"


def _scheme_and_host(url: str) -> tuple[str, str]:
    """The URL's scheme and `host[:port]`; neither when it does not parse (an unclosed `[`, a
    port over 65535: urllib raises ValueError, the latter only once the port is read)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "", ""
    host = parts.hostname or ""
    return parts.scheme, f"{host}:{port}" if host and port else host


def post_message(
    url: str,
    message: dict[str, Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = 0.5,
) -> Delivery:
    """POST `message` as JSON to `url`; never raises for what the network or the server does.

    Args:
        url: The webhook ("" sends nothing).
        message: The JSON body (`run_end_message`).
        timeout_s: Seconds to connect, and then to wait for the answer, per attempt.
        attempts: Attempts in all for a refused connection or a 429/5xx answer.
        backoff_s: urllib3's backoff factor: the waits between attempts are 0, 2x, 4x, ...
    """
    if not url:
        return Delivery(False, f"no webhook URL configured (webhook_url or {WEBHOOK_ENV})")
    scheme, host = _scheme_and_host(url)
    if scheme not in ("http", "https") or not host:
        return Delivery(False, "the webhook URL is not an http(s) URL with a host: nothing sent")
    shown = masked(url)
    retries = urllib3.Retry(
        total=attempts - 1,
        connect=attempts - 1,
        read=0,
        status=attempts - 1,
        other=0,
        redirect=False,
        allowed_methods=None,  # POST too: a refused connection or a 5xx delivered nothing
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=backoff_s,
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    body = json.dumps(message).encode()
    try:
        with _urllib3_quiet(), urllib3.PoolManager() as pool:
            response = pool.request(
                "POST",
                url,
                body=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
                retries=retries,
            )
    except urllib3.exceptions.HTTPError as error:
        return Delivery(False, f"webhook {shown}: {_failure(error, timeout_s, attempts)}")
    tried = len(response.retries.history) + 1 if response.retries else 1
    if 200 <= response.status < 300:
        return Delivery(True, f"webhook {shown} answered HTTP {response.status}", response.status)
    after = f" after {tried} attempts" if tried > 1 else ""
    return Delivery(
        False, f"webhook {shown} answered HTTP {response.status}{after}", response.status
    )


@contextlib.contextmanager
def _urllib3_quiet() -> Iterator[None]:
    """Keep urllib3's own log records (its retry warnings, its debug lines) out of the log while
    posting: they carry the request's path, which is the webhook's secret."""
    logger = logging.getLogger("urllib3")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _failure(error: urllib3.exceptions.HTTPError, timeout_s: float, attempts: int) -> str:
    """What went wrong, in words that cannot carry the URL (urllib3's messages name its path)."""
    reason = getattr(error, "reason", None) or error
    exceptions = urllib3.exceptions
    if isinstance(reason, exceptions.NewConnectionError):  # refused, unreachable, no such host
        return f"cannot connect ({attempts} attempts)"
    if isinstance(reason, exceptions.TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"request failed ({type(reason).__name__})"
