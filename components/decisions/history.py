"""A registered model's history: its versions from the registry and every decision on record,
in one timeline, oldest first (what `ctloop audit` prints).

The registry says what exists now (versions, the runs they came from, the aliases they hold,
the replaced/rolled-back tags); the decision records say why: which gate let a version through,
which analysis promoted or rolled it back, with the reasons and the code that decided. Both live
in the same MLflow, so the history is read from there alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from ctloop.components.decisions.record import DecisionRecord
from ctloop.components.decisions.store import (
    ask_mlflow,
    logged_records_for,
    without_password,
)
from ctloop.components.registry import mlflow_registry

DECISION_EVENTS = {
    "gate": "gated",
    "drift": "drift checked",
    "retraining_route": "retraining routed",
    "canary": "canary analysed",
    "shadow": "shadowed",
    "ab": "A/B analysed",
    "promotion": "promoted",
    "rollback": "rolled back",
}
"""How each kind of decision reads in a history (the outcome says what was decided)."""

_LISTED_MODELS = 20


class UnknownModelError(ValueError):
    """No registered model (or version) of that name."""


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as the registry shows it now."""

    version: str
    run_id: str | None
    created: str
    aliases: list[str]
    tags: dict[str, str]


@dataclass(frozen=True)
class Event:
    """One line of a history: when, which version, what happened, and the record if it was a
    decision. `at_ms` orders events of the same second (when MLflow knows it to the
    millisecond: a gate and the registration it allowed are often a second apart at most)."""

    time: str
    version: str | None
    event: str
    detail: str
    notes: tuple[str, ...] = ()
    record: DecisionRecord | None = field(default=None, compare=False)
    at_ms: int = field(default=0, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        document = {
            key: value for key, value in asdict(self).items() if key not in ("record", "at_ms")
        }
        document["record"] = None if self.record is None else asdict(self.record)
        return document


@dataclass(frozen=True)
class ModelHistory:
    registered_model: str
    versions: list[VersionInfo]
    events: list[Event]

    def to_json(self) -> dict[str, Any]:
        return {
            "registered_model": self.registered_model,
            "versions": [asdict(version) for version in self.versions],
            "events": [event.to_json() for event in self.events],
        }


def model_history(tracking_uri: str, name: str, version: str | None = None) -> ModelHistory:
    """The history of registered model `name` (of one version with `version`), oldest first.

    Raises:
        UnknownModelError: no such model (naming the models there are, the first 20) or no
            such version (naming the versions there are).
        DecisionStoreError: the tracking server failed or did not answer.
    """
    versions, times = ask_mlflow(
        tracking_uri, f"read the versions of {name!r}", lambda: _versions(tracking_uri, name)
    )
    if version is not None:
        chosen = [info for info in versions if info.version == str(version)]
        if not chosen:
            known = ", ".join(info.version for info in versions) or "none"
            raise UnknownModelError(
                f"registered model {name!r} has no version {version!r}; its versions: {known}"
            )
        versions = chosen
    events = [event for info in versions for event in _registry_events(info, *times[info.version])]
    by_run = {info.run_id: info.version for info in versions if info.run_id}
    for logged_ms, record in logged_records_for(tracking_uri, name, version):
        events.append(_decision_event(record, by_run, logged_ms))
    events.sort(key=lambda event: (event.time, event.at_ms))
    return ModelHistory(name, versions, events)


def _versions(tracking_uri: str, name: str) -> tuple[list[VersionInfo], dict[str, tuple]]:
    """The model's versions (oldest first), and for each version when (in milliseconds) its run
    started (None: the run is gone) and it was registered."""
    mlflow_client = mlflow_registry.client(tracking_uri)
    model = _registered_model(mlflow_client, tracking_uri, name)
    aliases: dict[str, list[str]] = {}
    for alias, number in model.aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    found, token = [], None
    while True:
        page = mlflow_client.search_model_versions(
            f"name = {json.dumps(name)}", max_results=1000, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    found.sort(key=lambda v: int(v.version))
    versions = [
        VersionInfo(
            version=str(v.version),
            run_id=v.run_id or None,
            created=_iso(v.creation_timestamp),
            aliases=sorted(aliases.get(str(v.version), [])),
            tags=dict(v.tags),
        )
        for v in found
    ]
    times = {}
    for info, v in zip(versions, found, strict=True):
        run = _run_or_none(mlflow_client, info.run_id)
        times[info.version] = (None if run is None else run.info.start_time, v.creation_timestamp)
    return versions, times


def _registered_model(mlflow_client, tracking_uri: str, name: str):
    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = [m.name for m in mlflow_client.search_registered_models(max_results=_LISTED_MODELS)]
    there = (
        f"registered models (first {_LISTED_MODELS}): {', '.join(names)}"
        if names
        else "it has no registered models"
    )
    raise UnknownModelError(
        f"registered model {name!r} does not exist at {without_password(tracking_uri)}; {there}"
    )


def _run_or_none(mlflow_client, run_id: str | None):
    if not run_id:
        return None
    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # a deleted run: the version is still history
        raise


def _registry_events(info: VersionInfo, started_ms: int | None, created_ms: int) -> list[Event]:
    """Trained (the run's start), registered, and what the registry's tags say happened later."""
    events = []
    if started_ms is not None:
        trained = f"run {info.run_id}"
        events.append(Event(_iso(started_ms), info.version, "trained", trained, at_ms=started_ms))
    registered = f"from run {info.run_id}; aliases now: {', '.join(info.aliases) or 'none'}"
    events.append(
        Event(
            info.created,
            info.version,
            "registered",
            registered,
            notes=_version_notes(info.tags),
            at_ms=created_ms,
        )
    )
    tags = info.tags
    if mlflow_registry.REPLACED_AT_TAG in tags:
        replaced = f"champion moved to version {tags.get(mlflow_registry.REPLACED_BY_TAG, '?')}"
        events.append(_tagged(tags[mlflow_registry.REPLACED_AT_TAG], info, "replaced", replaced))
    for key in sorted(tags):
        if key.startswith(mlflow_registry.DEPLOYED_TAG):
            events.append(
                _deployed(info, key.removeprefix(mlflow_registry.DEPLOYED_TAG), tags[key])
            )
    if mlflow_registry.ROLLED_BACK_AT_TAG in tags:
        why = tags.get(mlflow_registry.ROLLED_BACK_TAG, "")
        events.append(
            _tagged(tags[mlflow_registry.ROLLED_BACK_AT_TAG], info, "rollback tagged", why)
        )
    return events


def _version_notes(tags: dict[str, str]) -> tuple[str, ...]:
    """What the registry's tags say about where a version came from and where it went: the
    code and image that built it, its model card, the storageUri it was served from."""
    lineage = {
        part: tags[f"{mlflow_registry.LINEAGE_TAG}{part}"]
        for part in mlflow_registry.LINEAGE_PARTS
        if tags.get(f"{mlflow_registry.LINEAGE_TAG}{part}") not in (None, "", "null")
    }
    notes = []
    if lineage:
        notes.append("built by " + ", ".join(f"{key} {value}" for key, value in lineage.items()))
    if tags.get(mlflow_registry.MODEL_CARD_TAG):
        notes.append(f"model card {tags[mlflow_registry.MODEL_CARD_TAG]}")
    if tags.get(mlflow_registry.STORAGE_URI_TAG):
        notes.append(f"served from {tags[mlflow_registry.STORAGE_URI_TAG]}")
    return tuple(notes)


def _deployed(info: VersionInfo, stage: str, tag: str) -> Event:
    """The deploy step's tag of one stage (`mlflow_registry.record_deployment`) as an event; a
    tag that is not its JSON is shown as written."""
    try:
        deployed = json.loads(tag)
        share = deployed["traffic_percent"]
        how = [deployed["action"]] if share is None else [f"{share} %", deployed["action"]]
        detail = (
            f"{stage}: {deployed['serves_as']} in {deployed['inference_service']}"
            f" ({', '.join(how)})"
        )
        return _tagged(deployed["at"], info, "deployed", detail)
    except (ValueError, KeyError, TypeError):
        return _tagged("", info, "deployed", f"{stage}: {tag}")


def _tagged(time: str, info: VersionInfo, event: str, detail: str) -> Event:
    """An event the registry tagged to the second: ordered after the events MLflow timed to the
    millisecond within that second (the decision that set the tag is often logged then)."""
    try:
        at_ms = int(datetime.fromisoformat(time).timestamp() + 1) * 1000
    except ValueError:  # a tag set by hand: shown as written, ordered by its text
        at_ms = 0
    return Event(time, info.version, event, detail, at_ms=at_ms)


def _decision_event(record: DecisionRecord, by_run: dict[str, str], logged_ms: int) -> Event:
    version = record.subject.get("model_version") or by_run.get(record.subject.get("run_id"))
    event = DECISION_EVENTS.get(record.kind, record.kind)
    detail = outcome_text(record.outcome)
    return Event(record.time, version, event, detail, record=record, at_ms=logged_ms)


def outcome_text(outcome: dict[str, Any]) -> str:
    """An outcome on one line: `passed=true action="promote"` (JSON values, keys sorted)."""
    return " ".join(f"{key}={json.dumps(outcome[key])}" for key in sorted(outcome)) or "(none)"


def code_text(code: dict[str, Any]) -> str:
    """The code that decided, as a person reads it: `ctloop 0.1.0 at 7d694f9 (dirty)`."""
    commit = code.get("git_commit")
    text = f"ctloop {code.get('ctloop_version', '?')}"
    text += f" at {commit[:12]}" if commit else " (commit unknown)"
    return text + (" (dirty)" if code.get("dirty") else "")


def _iso(milliseconds: int | None) -> str:
    if milliseconds is None:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")
