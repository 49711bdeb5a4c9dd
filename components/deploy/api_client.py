"""How ctloop talks to the Kubernetes API: the client, a timeout on every request, one-line errors.

Every request waits at most `REQUEST_TIMEOUT_S` (connect, read): an API server (or a proxy in
front of one) that accepts the connection and never answers fails the step with a message
naming the endpoint, instead of hanging the pipeline until KFP's own timeout. Every failure
(refused, timed out, or answered with an error status) is one `KubernetesApiError` line:
method, URL, and what went wrong — the client's own exception is a multi-line dump of
headers and body that names no URL.
"""

from __future__ import annotations

import json
import os

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT_S = (10.0, 30.0)
"""(connect, read) seconds for each Kubernetes API request."""
CONNECT_RETRIES = 2


class KubernetesApiError(RuntimeError):
    """A Kubernetes API request was refused or got no answer.

    `status` is the HTTP status of the answer, None when none came.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def kube_api(in_cluster: bool | None = None) -> client.CustomObjectsApi:
    """A CustomObjectsApi for the pod's service account, or the local kubeconfig.

    `in_cluster=None` decides by `KUBERNETES_SERVICE_HOST`, which Kubernetes sets in every
    pod. The configuration is private to the returned client (no global default changed).
    Only connections that could not be made are retried: a request that reached a server
    which does not answer is not sent again (that would multiply the wait, and a POST or
    PATCH is not idempotent).
    """
    if in_cluster is None:
        in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:  # KUBECONFIG read now, not when the kubernetes package was imported
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.retries = urllib3.Retry(
        total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=0, status=0, redirect=0
    )
    return client.CustomObjectsApi(client.ApiClient(configuration))


def send(api: client.CustomObjectsApi, method: str, path: str, call, *args, **kwargs):
    """`call(*args, **kwargs)` (one request, `method` on `path`) with the request timeout.

    Raises:
        KubernetesApiError: any failure, naming `method` and the URL.
    """
    endpoint = f"Kubernetes API {method} {api.api_client.configuration.host}{path}"
    try:
        return call(*args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
    except ApiException as error:
        raise KubernetesApiError(f"{endpoint}: {_refusal(error)}", error.status) from error
    except urllib3.exceptions.HTTPError as error:
        raise KubernetesApiError(f"{endpoint}: {_no_answer(error)}") from error


def custom_object_path(group: str, version: str, namespace: str, plural: str, name: str) -> str:
    """The URL path of a namespaced custom object (of all of them when `name` is empty)."""
    return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def get_custom_object(
    api: client.CustomObjectsApi, group: str, version: str, namespace: str, plural: str, name: str
) -> dict | None:
    """The custom object as it is now, or None when there is none (404).

    Raises:
        KubernetesApiError: any other failure, naming the URL.
    """
    path = custom_object_path(group, version, namespace, plural, name)
    call = api.get_namespaced_custom_object
    try:
        return send(api, "GET", path, call, group, version, namespace, plural, name)
    except KubernetesApiError as error:
        if error.status == 404:
            return None
        raise


def _refusal(error: ApiException) -> str:
    """'403 Forbidden: <the Status message>' from an error answer (a Kubernetes Status)."""
    try:
        message = json.loads(error.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = error.body or ""
    return _one_line(f"{error.status} {error.reason}: {message}".rstrip(": "))


def _no_answer(error: urllib3.exceptions.HTTPError) -> str:
    reason = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
    connect_s, read_s = REQUEST_TIMEOUT_S
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # before its base class
        return _one_line(f"cannot connect: {str(reason).split(': ', 1)[-1]}")
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {connect_s:g} s"
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {read_s:g} s"
    return _one_line(str(reason or error))


def _one_line(text: str) -> str:
    return " ".join(text.split())
