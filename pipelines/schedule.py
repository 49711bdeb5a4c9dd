"""The recurring run of the monitoring pipeline: create or update it, pause, resume, delete.

KFP keeps schedules as recurring runs (`/apis/v2beta1/recurringruns`). They have no update
call, so "update" is delete and create — but only when something changed: running
`ctloop schedule` again with the same arguments leaves the schedule alone, which keeps its
run history and next fire time. A schedule is found by its display name inside the
experiment, so there is exactly one per (experiment, name).

KFP's cron has six fields, seconds first, evaluated in UTC (robfig/cron). A five-field
expression written for Unix cron is *accepted* by KFP, read as seconds-minutes-hours-day-
month, and fires at the wrong times ("0 2 * * *" runs at second 0 of minute 2 of every
hour), so it is rejected here before anything is sent.
"""

from __future__ import annotations

import re

import kfp

from ctloop.pipelines.kfp_api import name_filter
from ctloop.pipelines.parameters import (
    check_json_arguments,
    compiled_parameter_types,
    parse_typed_params,
)

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_FIELDS = (
    ("seconds", 0, 59, ""),
    ("minutes", 0, 59, ""),
    ("hours", 0, 23, ""),
    ("day of month", 1, 31, ""),
    ("month", 1, 12, "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC"),
    ("day of week", 0, 6, "SUN MON TUE WED THU FRI SAT"),
)
"""Six KFP cron fields: name, lowest and highest number, and the names it accepts."""
_EVERY = re.compile(r"^@every\s+(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class ScheduleError(ValueError):
    """A cron expression or schedule request KFP would misread or cannot satisfy."""


def check_cron(expression: str) -> str:
    """Return `expression` if KFP reads it as meant; otherwise raise with the reason.

    Accepts six fields (seconds minutes hours day-of-month month day-of-week; numbers,
    names, `*`, `?`, ranges, lists and steps) or a descriptor (`@daily`, `@every 6h`).
    """
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text in DESCRIPTORS or _EVERY.match(text):
            return text
        raise ScheduleError(
            f"cron {expression!r}: unknown descriptor; use one of {', '.join(DESCRIPTORS)} "
            "or '@every <duration>' (e.g. '@every 6h')"
        )
    fields = text.split(" ")
    if len(fields) == 5:
        raise ScheduleError(
            f"cron {expression!r} has five fields: KFP cron has six, seconds first, in UTC, "
            f"and would read this one as seconds-minutes-hours-day-month; for the Unix "
            f"meaning write '0 {text}'"
        )
    if len(fields) != 6:
        raise ScheduleError(
            f"cron {expression!r} has {len(fields)} fields; KFP cron has six: seconds "
            "minutes hours day-of-month month day-of-week (UTC), e.g. '0 0 2 * * *'"
        )
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        _check_field(expression, field, name, low, high, names.split())
    return text


def _check_field(
    expression: str, field: str, name: str, low: int, high: int, names: list[str]
) -> None:
    def fail(why: str) -> ScheduleError:
        return ScheduleError(f"cron {expression!r}: {name} field {field!r}: {why}")

    for part in field.split(","):
        span, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            raise fail(f"step {step!r} must be a positive integer")
        if span in ("*", "?"):
            if span == "?" and name not in ("day of month", "day of week"):
                raise fail("'?' is allowed only in the day fields")
            continue
        for bound in span.split("-", 1):
            if bound.upper() in names:
                value = low + names.index(bound.upper())
            elif bound.isdigit():
                value = int(bound)
            else:
                raise fail(f"{bound!r} is not a number{' or name' if names else ''}")
            if not low <= value <= high:
                raise fail(f"{value} is outside {low}-{high}")


def find_schedule(client: kfp.Client, experiment_id: str, name: str):
    """The recurring run called `name` in the experiment, or None."""
    listing = client.list_recurring_runs(
        experiment_id=experiment_id, page_size=2, filter=name_filter(name)
    )
    runs = listing.recurring_runs or []
    if len(runs) > 1:
        raise ScheduleError(
            f"experiment {experiment_id} has several recurring runs named {name!r}; "
            "delete the extra ones in the KFP UI"
        )
    return runs[0] if runs else None


def latest_version(client: kfp.Client, pipeline_name: str):
    """The newest uploaded version of `pipeline_name` (a `V2beta1PipelineVersion`)."""
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        raise ScheduleError(
            f"pipeline {pipeline_name!r} is not on the server: run `ctloop compile` and "
            "`ctloop upload --host ...` first"
        )
    listing = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
    versions = listing.pipeline_versions or []
    if not versions:
        raise ScheduleError(f"pipeline {pipeline_name!r} has no versions to schedule")
    # Listings may omit the spec; the single-version GET carries it.
    return client.get_pipeline_version(pipeline_id, versions[0].pipeline_version_id)


def _same(existing, *, cron: str, version_id: str, params: dict) -> bool:
    reference = existing.pipeline_version_reference
    runtime = existing.runtime_config
    return (
        existing.trigger is not None
        and existing.trigger.cron_schedule is not None
        and existing.trigger.cron_schedule.cron == cron
        and reference is not None
        and reference.pipeline_version_id == version_id
        and (runtime.parameters if runtime and runtime.parameters else {}) == params
        and existing.max_concurrency in (1, "1")
        and bool(existing.no_catchup)
    )


def upsert_schedule(
    client: kfp.Client,
    *,
    name: str,
    pipeline_name: str,
    experiment: str,
    cron: str,
    param_pairs: list[str],
) -> dict:
    """Create the recurring run, or replace it when cron, version or parameters changed.

    The run is enabled, at most one at a time (`max_concurrency` 1) and does not catch up
    on missed fire times. It runs the newest uploaded version of `pipeline_name`, and
    `param_pairs` (`key=value`) are typed by that version's compiled parameters and the JSON
    ones (policies, hyperparameters, serving_capacity) parsed, so a typo is caught here rather
    than at 2 a.m. in the first scheduled run.
    """
    cron = check_cron(cron)
    version = latest_version(client, pipeline_name)
    pipeline_id, version_id = version.pipeline_id, version.pipeline_version_id
    params = parse_typed_params(compiled_parameter_types(version.pipeline_spec or {}), param_pairs)
    check_json_arguments(params)
    experiment_id = client.create_experiment(experiment).experiment_id  # get or create
    existing = find_schedule(client, experiment_id, name)
    outcome = {"schedule": name, "experiment": experiment, "cron": cron}
    if existing is not None:
        if _same(existing, cron=cron, version_id=version_id, params=params):
            if existing.status != "ENABLED":
                client.enable_recurring_run(existing.recurring_run_id)
                return {
                    **outcome,
                    "recurring_run_id": existing.recurring_run_id,
                    "action": "resumed",
                }
            return {**outcome, "recurring_run_id": existing.recurring_run_id, "action": "unchanged"}
        client.delete_recurring_run(existing.recurring_run_id)
    created = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=name,
        description=f"ctloop: {pipeline_name} on cron '{cron}' (UTC)",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enabled=True,
    )
    return {
        **outcome,
        "recurring_run_id": created.recurring_run_id,
        "pipeline_version_id": version_id,
        "action": "updated" if existing is not None else "created",
    }


def change_schedule(client: kfp.Client, *, name: str, experiment: str, action: str) -> dict:
    """Pause, resume or delete the named schedule; idempotent (absent + delete is a no-op)."""
    experiment_id = client.create_experiment(experiment).experiment_id
    existing = find_schedule(client, experiment_id, name)
    outcome = {"schedule": name, "experiment": experiment}
    if existing is None:
        if action == "delete":
            return {**outcome, "action": "absent"}
        raise ScheduleError(
            f"no recurring run named {name!r} in experiment {experiment!r}: create it with "
            "`ctloop schedule --host ... --cron ...` first"
        )
    run_id = existing.recurring_run_id
    if action == "delete":
        client.delete_recurring_run(run_id)
        return {**outcome, "recurring_run_id": run_id, "action": "deleted"}
    enabled = existing.status == "ENABLED"
    if action == "pause":
        if enabled:
            client.disable_recurring_run(run_id)
        return {
            **outcome,
            "recurring_run_id": run_id,
            "action": "paused" if enabled else "unchanged",
        }
    if not enabled:
        client.enable_recurring_run(run_id)
    return {
        **outcome,
        "recurring_run_id": run_id,
        "action": "resumed" if not enabled else "unchanged",
    }
