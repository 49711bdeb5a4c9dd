"""The command line's KFP API access: a `kfp.Client` with the right credentials for where it runs.

(A running pipeline step cannot import `kfp.Client`; the retraining step reaches the same API
through `ctloop.components.retrain.kfp_runs`, with the same credentials.)

Inside a cluster (a pipeline step, a CI job in a pod) the client must send the projected
service-account token, or a multi-user Kubeflow rejects it; `kfp.Client(host=...)` alone
sends none. Outside, no token is sent unless `KF_PIPELINES_SA_TOKEN_PATH` names one.

Every request, the health check `kfp.Client()` makes before it returns included, has a timeout
(`CTLOOP_KFP_TIMEOUT_S`, 30 s by default) and fails with one line naming the endpoint.
"""

import subprocess
import time
import warnings
from pathlib import Path

import kfp
import yaml
from kfp.client import ServiceAccountTokenVolumeCredentials

from ctloop.components.retrain.kfp_runs import (
    KfpConnectionError,
    bound_requests,
    name_filter,
    request_timeout_s,
    service_account_token_path,
)


class _BoundedClient(kfp.Client):
    """`kfp.Client` whose requests are bounded (`bound_requests`) from the first one on.

    The constructor asks the health endpoint before it returns, and that call is the first
    moment the client's API connection exists, so the bound is put on there.
    """

    def get_kfp_healthz(self, sleep_duration: int = 5):
        api = bound_requests(self._healthz_api.api_client)
        try:
            return super().get_kfp_healthz(sleep_duration)
        except TimeoutError as error:  # kfp gave up after five error answers
            raise KfpConnectionError(f"KFP API at {api.configuration.host}: {error}") from error


def kfp_client(host: str) -> kfp.Client:
    """A client for the KFP API at `host`, authenticated by a service-account token if any."""
    request_timeout_s()  # a bad setting is refused before anything is sent
    token_path = service_account_token_path()
    credentials = ServiceAccountTokenVolumeCredentials(path=token_path) if token_path else None
    with warnings.catch_warnings():  # said on every construction, of every server version
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        client = _BoundedClient(host=host, credentials=credentials)
    # The constructor skips the health check when a kfp context file names a namespace.
    bound_requests(client._healthz_api.api_client)
    return client


RUN_END_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
"""States a KFP run never leaves. (`kfp.Client.wait_for_run_completion` does not count CANCELED
among them and would wait out its whole timeout on a cancelled run.)"""

RUN_POLL_S = 15
"""Seconds between two looks at a run being waited for: a training run takes minutes."""


class RunDidNotSucceed(RuntimeError):
    """The run ended in another state than SUCCEEDED, or did not end in time."""


def wait_for_run(client: kfp.Client, run_id: str, timeout_s: float) -> str:
    """Wait until run `run_id` ends and return SUCCEEDED; raise `RunDidNotSucceed` naming the
    run and its state when it ended otherwise or was still going after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.get_run(run_id).state or "RUNTIME_STATE_UNSPECIFIED"
        if state == "SUCCEEDED":
            return state
        if state in RUN_END_STATES:
            raise RunDidNotSucceed(f"KFP run {run_id} ended {state}")
        if time.monotonic() + RUN_POLL_S > deadline:
            raise RunDidNotSucceed(f"KFP run {run_id} still {state} after {timeout_s:g} s")
        time.sleep(RUN_POLL_S)


def default_version_name() -> str:
    """`v<package version>-<git commit>`: names exactly the source a version was built from."""
    from ctloop import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"v{__version__}"
    return f"v{__version__}-{commit}"


def _version_id(client: kfp.Client, pipeline_id: str, version_name: str) -> str | None:
    listing = client.list_pipeline_versions(
        pipeline_id, page_size=1, filter=name_filter(version_name)
    )
    versions = listing.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def publish_pipeline(client: kfp.Client, package: Path, version_name: str) -> dict:
    """Create the pipeline from `package`, or add it as version `version_name`; idempotent.

    The pipeline's name is the one compiled into the package (`pipelineInfo.name`), so
    the same YAML always lands on the same pipeline. A version that already exists under
    that name is left alone: publishing the same commit twice changes nothing.
    """
    name = yaml.safe_load(package.read_text().split("\n---", 1)[0])["pipelineInfo"]["name"]
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        created = client.upload_pipeline(str(package), pipeline_name=name)
        return {"pipeline": name, "pipeline_id": created.pipeline_id, "action": "created"}
    existing = _version_id(client, pipeline_id, version_name)
    if existing is not None:
        return {
            "pipeline": name,
            "pipeline_id": pipeline_id,
            "version": version_name,
            "pipeline_version_id": existing,
            "action": "unchanged",
        }
    version = client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id
    )
    return {
        "pipeline": name,
        "pipeline_id": pipeline_id,
        "version": version_name,
        "pipeline_version_id": version.pipeline_version_id,
        "action": "version-added",
    }


def publish_compiled(host: str, build_dir: str | Path, version_name: str) -> list[dict]:
    """Publish every compiled pipeline under `build_dir/pipelines/`."""
    packages = sorted(Path(build_dir, "pipelines").glob("*.yaml"))
    if not packages:
        raise ValueError(
            f"no compiled pipelines in {Path(build_dir, 'pipelines')}: run `ctloop compile` first"
        )
    client = kfp_client(host)
    return [publish_pipeline(client, package, version_name) for package in packages]
