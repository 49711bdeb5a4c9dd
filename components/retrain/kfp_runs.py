"""Start a run of the uploaded training pipeline from inside a pipeline, with a cooldown.

On a cluster the monitoring pipeline can retrain by asking the KFP API for a new run of the
training pipeline's newest uploaded version (instead of nesting it), so retraining runs with
the training pipeline's own placement and shows up as its own run in the UI.

Two guards keep a drifting feature from launching a run every hour: no new run while one of
the training pipeline's runs in the experiment is still going (pending, running, paused or
cancelling), and none if one was created less than `cooldown_hours` ago.

The KFP API is reached through `ctloop.components.kfp_api_client` (a v2beta1 client
with the service-account token and bounded requests), as every step that asks it something.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import kfp_server_api

from ctloop.components.kfp_api_client import (  # noqa: F401 (also imported from here)
    KfpConnectionError,
    api_client,
    bound_requests,
    request_timeout_s,
    service_account_token_path,
)

ACTIVE_STATES = ("PENDING", "RUNNING", "PAUSED", "CANCELING", "RUNTIME_STATE_UNSPECIFIED")
RECENT_RUNS_CHECKED = 20


class RetrainingTriggerError(RuntimeError):
    """The KFP API refused or lacks what the trigger needs (pipeline, version)."""


class TrainingArgumentsError(ValueError):
    """`training_arguments` that are not a JSON object."""


@dataclass(frozen=True)
class TriggerOutcome:
    """What the trigger did: `started` with the run id, or `skipped` with the reason."""

    action: str
    reason: str
    run_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"action": self.action, "reason": self.reason, "run_id": self.run_id})


def start_training_run(
    host: str,
    *,
    pipeline_name: str,
    experiment: str,
    arguments: dict,
    cooldown_hours: float,
    run_name: str,
    now: dt.datetime | None = None,
) -> TriggerOutcome:
    """Create a run of `pipeline_name`'s newest version, unless the cooldown says no.

    Args:
        host: KFP API endpoint (in cluster: `http://ml-pipeline.kubeflow:8888`).
        pipeline_name: The uploaded training pipeline (`ctloop upload` names it).
        experiment: Experiment to run in; created when absent.
        arguments: The training pipeline's parameters.
        cooldown_hours: No new run if one was created this recently.
        run_name: Display name of the new run.
        now: The current time (UTC); for tests.
    """
    now = now or dt.datetime.now(dt.UTC)
    with api_client(host) as client:
        pipeline_id, version_id = _newest_version(client, pipeline_name)
        experiment_id = _experiment_id(client, experiment)
        blocker = _cooldown_blocker(client, experiment_id, pipeline_id, cooldown_hours, now)
        if blocker:
            return TriggerOutcome("skipped", blocker)
        run = kfp_server_api.V2beta1Run(
            display_name=run_name,
            experiment_id=experiment_id,
            pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=version_id
            ),
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=arguments),
        )
        created = _call(
            "create the run",
            kfp_server_api.RunServiceApi(client).run_service_create_run,
            run=run,
        )
    return TriggerOutcome("started", f"{pipeline_name} version {version_id}", created.run_id)


def _newest_version(client: kfp_server_api.ApiClient, pipeline_name: str) -> tuple[str, str]:
    pipelines = kfp_server_api.PipelineServiceApi(client)
    listing = _call(
        f"find pipeline {pipeline_name!r}",
        pipelines.pipeline_service_list_pipelines,
        filter=name_filter(pipeline_name),
        page_size=1,
    )
    if not listing.pipelines:
        raise RetrainingTriggerError(
            f"pipeline {pipeline_name!r} is not uploaded: run `ctloop upload` first"
        )
    pipeline_id = listing.pipelines[0].pipeline_id
    versions = _call(
        f"list versions of {pipeline_name!r}",
        pipelines.pipeline_service_list_pipeline_versions,
        pipeline_id,
        page_size=1,
        sort_by="created_at desc",
    )
    if not versions.pipeline_versions:
        raise RetrainingTriggerError(f"pipeline {pipeline_name!r} has no versions")
    return pipeline_id, versions.pipeline_versions[0].pipeline_version_id


def _experiment_id(client: kfp_server_api.ApiClient, name: str) -> str:
    experiments = kfp_server_api.ExperimentServiceApi(client)
    listing = _call(
        f"find experiment {name!r}",
        experiments.experiment_service_list_experiments,
        filter=name_filter(name),
        page_size=1,
    )
    if listing.experiments:
        return listing.experiments[0].experiment_id
    created = _call(
        f"create experiment {name!r}",
        experiments.experiment_service_create_experiment,
        experiment=kfp_server_api.V2beta1Experiment(display_name=name),
    )
    return created.experiment_id


def _cooldown_blocker(
    client: kfp_server_api.ApiClient,
    experiment_id: str,
    pipeline_id: str,
    cooldown_hours: float,
    now: dt.datetime,
) -> str:
    """Why no run may start now ("" when one may), from the experiment's newest runs."""
    listing = _call(
        "list recent runs",
        kfp_server_api.RunServiceApi(client).run_service_list_runs,
        experiment_id=experiment_id,
        page_size=RECENT_RUNS_CHECKED,
        sort_by="created_at desc",
    )
    since = now - dt.timedelta(hours=cooldown_hours)
    for run in listing.runs or []:
        reference = run.pipeline_version_reference
        if reference is None or reference.pipeline_id != pipeline_id:
            continue
        if str(run.state) in ACTIVE_STATES:
            return f"run {run.run_id} of the training pipeline is still {run.state}"
        created = run.created_at
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        if cooldown_hours > 0 and created is not None and created > since:
            return (
                f"run {run.run_id} started at {created.isoformat()}, within the "
                f"{cooldown_hours:g} h cooldown"
            )
    return ""


def name_filter(name: str) -> str:
    """A v2beta1 list filter on `display_name` equal to `name`."""
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def _call(what: str, method, *args, **kwargs):
    try:
        return method(*args, **kwargs)
    except kfp_server_api.ApiException as error:
        raise RetrainingTriggerError(
            f"KFP API: could not {what}: HTTP {error.status} {error.reason}: {error.body}"
        ) from error
