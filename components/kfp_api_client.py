"""The KFP API as a running step reaches it: a v2beta1 client with a token and bounded requests.

Inside a running component kfp 2.17 cannot import `kfp.Client` (its import chain needs kfp's
authoring API, which `_KFP_RUNTIME=true` leaves out), so steps use `kfp_server_api`, the
generated v2beta1 client that `kfp.Client` wraps. Authentication is the same as `kfp.Client`
with `ServiceAccountTokenVolumeCredentials`: the projected token as a bearer token, re-read on
every call because the kubelet rotates it. Requests are bounded (`bound_requests`) here and in
the command line's `kfp.Client`. Shared by every step that asks the KFP API something (the
retraining trigger, the lineage of a registered version), so none holds a copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import kfp_server_api
import urllib3

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")
TIMEOUT_ENV = "CTLOOP_KFP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0
RETRIES = urllib3.Retry(total=2, read=0, backoff_factor=0.5)
"""A refused or failed connection is tried twice more; a request sent and never answered is not
resent (it may have been acted on, and resending would only multiply the wait)."""


class KfpConnectionError(RuntimeError):
    """The KFP API could not be reached or did not answer in time; names the endpoint."""


class KfpHostError(ValueError):
    """No KFP API endpoint to talk to (an empty `kfp_host`, as local runs set it)."""


class KfpTimeoutSettingError(ValueError):
    """`CTLOOP_KFP_TIMEOUT_S` that is not a positive number of seconds."""


def request_timeout_s() -> float:
    """Seconds a KFP API request may wait to connect, and then for the answer:
    `CTLOOP_KFP_TIMEOUT_S`, else 30."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise KfpTimeoutSettingError(
            f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds"
        )
    return value


def bound_requests(client: kfp_server_api.ApiClient) -> kfp_server_api.ApiClient:
    """Give every request of `client` a timeout, bounded retries and one-line transport errors.

    kfp_server_api sends a request without a timeout unless the call passes `_request_timeout`,
    which `kfp.Client` never does: an endpoint that accepts the connection and never answers
    blocks the caller forever, and a refused one surfaces as urllib3's MaxRetryError and its
    traceback. Here each request gets (connect, read) timeouts of `request_timeout_s()` and a
    transport failure becomes KfpConnectionError naming the endpoint. Idempotent.
    """
    rest = client.rest_client
    if "request" in vars(rest):  # bounded already
        return client
    timeout_s = request_timeout_s()
    host = client.configuration.host
    send = rest.request
    rest.pool_manager.connection_pool_kw["retries"] = RETRIES
    rest.pool_manager.clear()  # pools made before this would keep urllib3's default retries

    def request(method, url, *args, _request_timeout=None, **kwargs):
        try:
            return send(
                method, url, *args, _request_timeout=_request_timeout or (timeout_s,) * 2, **kwargs
            )
        except urllib3.exceptions.HTTPError as error:
            raise KfpConnectionError(_transport_failure(host, timeout_s, error)) from error

    rest.request = request
    return client


def _transport_failure(host: str, timeout_s: float, error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    exceptions = urllib3.exceptions
    # A refused connection is a NewConnectionError, which urllib3 derives from its TimeoutError.
    if isinstance(reason, exceptions.TimeoutError) and not isinstance(
        reason, exceptions.NewConnectionError
    ):
        return f"KFP API at {host}: no answer within {timeout_s:g} s ({TIMEOUT_ENV} sets the limit)"
    return f"KFP API at {host}: cannot connect: {reason}"


def service_account_token_path() -> str | None:
    """`KF_PIPELINES_SA_TOKEN_PATH`, else the token KFP mounts in its pods, else None."""
    configured = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if configured:
        return configured
    return str(IN_CLUSTER_TOKEN) if IN_CLUSTER_TOKEN.exists() else None


def api_client(host: str) -> kfp_server_api.ApiClient:
    """A v2beta1 API client for `host`, sending the service-account token when there is one.

    Raises:
        KfpHostError: `host` is empty.
    """
    if not host.strip():
        raise KfpHostError(
            "no KFP API endpoint: kfp_host is empty (local runs set it so); give the KFP API's "
            "address, e.g. kfp_host=http://ml-pipeline.kubeflow:8888"
        )
    configuration = kfp_server_api.Configuration(host=host.rstrip("/"))
    token_path = service_account_token_path()
    if token_path:
        configuration.api_key_prefix["authorization"] = "Bearer"
        configuration.refresh_api_key_hook = lambda config: config.api_key.update(
            authorization=Path(token_path).read_text().strip()
        )
        configuration.api_key["authorization"] = Path(token_path).read_text().strip()
    return bound_requests(kfp_server_api.ApiClient(configuration))
