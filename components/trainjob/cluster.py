"""Create a TrainJob, follow it to the end, and say why it failed: the Kubernetes API side.

Every request goes through `ctloop.components.deploy.api_client` (a timeout on each, a failure
as one line naming the endpoint). The verbs, which the step's Role must grant: get, create and
delete on `trainer.kubeflow.org/trainjobs` (delete only to free the nodes of a job that ran out
of time or whose step was stopped), list on `pods` and get on `pods/log` (the workers' state
and last log lines, for the failure message). The job is followed by polling GETs, as the
deploy step follows an InferenceService, so no watch is needed.

What Kubeflow Trainer writes, read here: `status.conditions` of type `Complete` or `Failed`
with status "True" end the job (reason and message say why); `status.jobsStatus` counts the
JobSet's child Jobs (active, ready, succeeded, failed), shown as progress. The worker pods are
the JobSet's: labelled `jobset.sigs.k8s.io/jobset-name=<TrainJob name>` and
`jobset.sigs.k8s.io/replicatedjob-name=node`, container `node`, their rank in
`batch.kubernetes.io/job-completion-index`.

A stopped step stops its job (`deleted_when_stopped`): cancelling a KFP run deletes the step's
pod, whose process gets SIGTERM, and the TrainJob, which nothing else owns, would otherwise
keep its GPU nodes to the end of training.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kubernetes import client

from ctloop.components.deploy.api_client import (
    KubernetesApiError,
    custom_object_path,
    get_custom_object,
    send,
)
from ctloop.components.trainjob.trainjob import (
    GROUP,
    NODE_JOB,
    PLURAL,
    VERSION,
    TrainJobError,
)

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LOG_TAIL_LINES = 30
FIELD_MANAGER = "ctloop"


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed; the message has the reason and the workers' last log lines."""


class TrainJobTimeout(RuntimeError):
    """The TrainJob did not end in time; it was deleted so its nodes are free again."""


def _send(api, method: str, namespace: str, name: str, call, *args, **kwargs):
    path = custom_object_path(GROUP, VERSION, namespace, PLURAL, name)
    return send(api, method, path, call, GROUP, VERSION, namespace, PLURAL, *args, **kwargs)


def get_trainjob(api: client.CustomObjectsApi, name: str, namespace: str) -> dict | None:
    """The TrainJob as it is now, or None when there is none."""
    return get_custom_object(api, GROUP, VERSION, namespace, PLURAL, name)


def create_trainjob(api: client.CustomObjectsApi, manifest: dict) -> tuple[dict, str]:
    """Create `manifest`; returns (object, "created" | "existing").

    "existing": a TrainJob of that name with the same runtime and trainer is there already
    (the step was retried): it is followed rather than started twice.

    Raises:
        TrainJobError: a different TrainJob holds the name.
        KubernetesApiError: refused, e.g. 422 with the field the CRD's schema rejects.
    """
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    create = api.create_namespaced_custom_object
    try:
        return _send(api, "POST", namespace, "", create, manifest, field_manager=FIELD_MANAGER), (
            "created"
        )
    except KubernetesApiError as error:
        if error.status != 409:
            raise
    current = get_trainjob(api, name, namespace)
    if current is None or not _same_job(current, manifest):
        raise TrainJobError(
            f"TrainJob {namespace}/{name} exists and is not this step's (another runtime, image "
            "or arguments): delete it or name the job differently"
        )
    return current, "existing"


def _same_job(current: dict, manifest: dict) -> bool:
    """Same runtime, same trainer fields and the same runtime patches (service account,
    volumes) as `manifest`; the patches' `time`, which Trainer's webhook sets, aside."""
    spec, wanted = current.get("spec") or {}, manifest["spec"]
    trainer = spec.get("trainer") or {}
    patches = {
        patch.get("manager"): patch.get("trainingRuntimeSpec")
        for patch in spec.get("runtimePatches") or []
    }
    return (
        (spec.get("runtimeRef") or {}).get("name") == wanted["runtimeRef"]["name"]
        and all(trainer.get(key) == value for key, value in wanted["trainer"].items())
        and all(
            patches.get(patch["manager"]) == patch["trainingRuntimeSpec"]
            for patch in wanted.get("runtimePatches", [])
        )
    )


def delete_trainjob(api: client.CustomObjectsApi, name: str, namespace: str) -> bool:
    """Delete the TrainJob and, through owner references, its JobSet and pods; False when
    there was none."""
    body = client.V1DeleteOptions(propagation_policy="Background")
    delete = api.delete_namespaced_custom_object
    try:
        _send(api, "DELETE", namespace, name, delete, name, body=body)
    except KubernetesApiError as error:
        if error.status != 404:
            raise
        return False
    return True


class _Stopped(BaseException):
    """Raised by the signal handler, so that the job is deleted outside it (a BaseException:
    no `except Exception` on the way may swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def deleted_when_stopped(
    api: client.CustomObjectsApi,
    name: str,
    namespace: str,
    report: Callable[[str], None] = print,
) -> Iterator[None]:
    """Around creating and following the TrainJob: SIGTERM or SIGINT deletes it, says so in a
    line to `report`, then goes to the handler that was there before (the MLflow run's, which
    ends the run KILLED and exits), or exits with the shell's code for the signal.

    Further signals are ignored while the job is deleted, so the deletion is not cut short.
    Signals reach only the main thread: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Stopped(signum)

    stopping = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, stop) for number in stopping}
    try:
        yield
    except _Stopped as stopped:
        for number in stopping:
            signal.signal(number, signal.SIG_IGN)
        where, why = f"TrainJob {namespace}/{name}", signal.Signals(stopped.signum).name
        try:
            deleted = delete_trainjob(api, name, namespace)
            report(f"{where}: {'deleted' if deleted else 'not there'}, the step got {why}")
        except KubernetesApiError as error:
            report(f"{where}: the step got {why}, could not delete it, it may still run: {error}")
        handler = previous[stopped.signum]
        signal.signal(stopped.signum, handler)
        if callable(handler):
            handler(stopped.signum, None)
        raise SystemExit(128 + stopped.signum) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def ended(trainjob: dict) -> str | None:
    """ "Complete" or "Failed" once Kubeflow Trainer has said so, else None."""
    for condition in (trainjob.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def progress(trainjob: dict) -> str:
    """One line of where the job stands: its true conditions and its child Jobs' counts."""
    status = trainjob.get("status") or {}
    conditions = [
        f"{c.get('type')} ({c.get('reason')})"
        for c in status.get("conditions") or []
        if c.get("status") == "True"
    ]
    jobs = [
        f"{job.get('name')}: {job.get('active', 0)} active, {job.get('ready', 0)} ready, "
        f"{job.get('succeeded', 0)} succeeded, {job.get('failed', 0)} failed"
        for job in status.get("jobsStatus") or []
    ]
    return "; ".join(conditions + jobs) or "no status yet"


def wait_for_trainjob(
    api: client.CustomObjectsApi,
    name: str,
    namespace: str,
    *,
    timeout_s: float,
    poll_s: float = 5.0,
    report: Callable[[str], None] = print,
) -> dict:
    """Poll until the TrainJob is Complete; `report` gets a line each time its state changes.

    Raises:
        TrainJobFailed: it ended Failed (or was deleted): the reason, the message and each
            worker's state and last log lines.
        TrainJobTimeout: not ended after `timeout_s`; the job is deleted, and the message has
            its last state and the workers' log lines.
    """
    deadline = time.monotonic() + timeout_s
    where = f"TrainJob {namespace}/{name}"
    last = None
    while True:
        trainjob = get_trainjob(api, name, namespace)
        if trainjob is None:
            raise TrainJobFailed(f"{where} was deleted before it completed")
        state = progress(trainjob)
        if state != last:
            report(f"{where}: {state}")
            last = state
        end = ended(trainjob)
        if end == "Complete":
            return trainjob
        if end == "Failed":
            [failed] = [c for c in trainjob["status"]["conditions"] if c["type"] == "Failed"]
            raise TrainJobFailed(
                f"{where} failed: {failed.get('reason')}: {failed.get('message')}\n"
                + worker_logs(api, name, namespace)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logs = worker_logs(api, name, namespace)
            delete_trainjob(api, name, namespace)
            raise TrainJobTimeout(
                f"{where} did not end within {timeout_s:g} s (last: {state}); deleted it\n{logs}"
            )
        time.sleep(min(poll_s, remaining))


def worker_logs(api: client.CustomObjectsApi, name: str, namespace: str) -> str:
    """Each worker pod's state and last `LOG_TAIL_LINES` log lines, in rank order; what could
    not be read is said instead (the failure it explains must still be reported)."""
    core = client.CoreV1Api(api.api_client)
    selector = (
        f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={NODE_JOB}"
    )
    try:
        pods = send(
            api,
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        ).items
    except KubernetesApiError as error:
        return f"worker pods not listed: {error}"
    if not pods:
        return f"no worker pods ({selector})"
    pods.sort(key=lambda pod: int((pod.metadata.labels or {}).get(COMPLETION_INDEX, "0")))
    return "\n".join(_pod_log(api, core, pod) for pod in pods)


def _pod_log(api: client.CustomObjectsApi, core: client.CoreV1Api, pod) -> str:
    name, namespace = pod.metadata.name, pod.metadata.namespace
    heading = f"--- worker {(pod.metadata.labels or {}).get(COMPLETION_INDEX, '?')}: pod {name} "
    heading += f"{pod.status.phase if pod.status else 'Unknown'}{_container_state(pod)}"
    try:
        text = send(
            api,
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{name}/log",
            core.read_namespaced_pod_log,
            name,
            namespace,
            container=NODE_JOB,
            tail_lines=LOG_TAIL_LINES,
        )
    except KubernetesApiError as error:
        return f"{heading}\n(no log: {error})"
    return f"{heading}\n{text.rstrip()}" if text.strip() else f"{heading}\n(empty log)"


def _container_state(pod) -> str:
    """', node: terminated OOMKilled (exit 137)' and the like, from the pod's status."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    for status in statuses:
        if status.name != NODE_JOB or status.state is None:
            continue
        if status.state.terminated is not None:
            done = status.state.terminated
            return f", {NODE_JOB}: terminated {done.reason} (exit {done.exit_code})"
        if status.state.waiting is not None:
            waiting = status.state.waiting
            detail = f": {waiting.message}" if waiting.message else ""
            return f", {NODE_JOB}: waiting {waiting.reason}{detail}"
    return ""
