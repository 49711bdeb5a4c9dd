"""Decision records in MLflow: one run per decision, found again by its tags.

Each record becomes a run of the experiment `DECISIONS_EXPERIMENT`, tagged with what a search
needs (kind, record id, outcome, registered model, version, the model's MLflow run) and holding
the record whole as the artifact `decision.json`. MLflow is already where a model's versions,
runs and aliases live, so a model's history (`ctloop audit`) is read from one place, and a
decision is found by a filter on its tags, never by listing every run.

A run becomes FINISHED only once its record artifact is written, and searches read FINISHED
runs only: a logging step that died halfway leaves no record that looks whole. A record is
logged once: a retried step that logs a record with the id of one already FINISHED (the same
decision taken again, see `record.decision_id`) gets that run back, so a history shows it once.
A tracking server that refuses the connection or never answers is one `DecisionStoreError` (a
RuntimeError: exit 1) naming the server, not MLflow's traceback.

Longer than most modules on purpose: every MLflow read and write of a record is here, with the
failure mapping they share (`ask_mlflow`), so there is one MLflow access module for decisions.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from alembic.util.exc import CommandError
from mlflow.exceptions import MlflowException
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from sqlalchemy.exc import SQLAlchemyError

from ctloop.components.decisions.record import DecisionRecord, DecisionRecordError, read_record
from ctloop.components.registry import mlflow_registry

DECISIONS_EXPERIMENT = "ctloop-decisions"
RECORD_ARTIFACT = "decision.json"
KIND_TAG = "ctloop.decision.kind"
ID_TAG = "ctloop.decision.id"
OUTCOME_TAG = "ctloop.decision.outcome"
MODEL_TAG = "ctloop.registered_model"
VERSION_TAG = "ctloop.model_version"
RUN_TAG = "ctloop.run_id"
KFP_RUN_TAG = "ctloop.kfp_run_id"
_SUBJECT_TAGS = {
    "registered_model": MODEL_TAG,
    "model_version": VERSION_TAG,
    "run_id": RUN_TAG,
    "kfp_run_id": KFP_RUN_TAG,
}
_TAG_LIMIT = 5000
"""Characters MLflow keeps in a tag value on every store; the outcome tag is a summary (the
artifact holds the outcome whole)."""
_PAGE = 1000
_DATABASE_ERRORS = (SQLAlchemyError, CommandError)
"""What a database store (SQLite, PostgreSQL) raises past MLflow: its driver's and its schema
migrations' errors."""

T = TypeVar("T")


class DecisionStoreError(RuntimeError):
    """The tracking server refused, failed or never answered (a failing environment)."""


class TrackingUriError(ValueError):
    """A tracking URI of a scheme MLflow has no store for (bad input, not a failing server)."""


class DecisionNotFoundError(ValueError):
    """No decision record has the id or run id asked for."""


def log_record(tracking_uri: str, record: DecisionRecord) -> str:
    """Keep `record` in MLflow as a run of `DECISIONS_EXPERIMENT`; return the run's id.

    A record already logged (a FINISHED run with its id: a retried step that decided the same
    again, `record.decision_id`) is not logged twice: that run's id is returned. The run is
    FINISHED only after `decision.json` is written; when writing fails the run is marked
    FAILED, which every search here skips, and a run a killed try left RUNNING is marked
    KILLED when its record is logged again (`_logged_run`).

    Raises:
        DecisionStoreError: the tracking server failed or did not answer.
    """

    def log() -> str:
        mlflow_client = mlflow_registry.client(tracking_uri)
        experiment_id = _decisions_experiment(tracking_uri)
        logged = _logged_run(mlflow_client, experiment_id, record.id)
        if logged is not None:
            return logged
        run = mlflow_client.create_run(experiment_id, tags=_tags(record))
        run_id = run.info.run_id
        try:
            mlflow_client.log_text(run_id, record.to_json() + "\n", RECORD_ARTIFACT)
        except BaseException:
            mlflow_client.set_terminated(run_id, "FAILED")
            raise
        mlflow_client.set_terminated(run_id, "FINISHED")
        return run_id

    return ask_mlflow(tracking_uri, f"log the {record.kind} decision {record.id}", log)


def _logged_run(mlflow_client, experiment_id: str, record_id: str) -> str | None:
    """The FINISHED run that holds the record `record_id`, or None.

    A run still RUNNING with that id was left by a try that was killed while logging (KFP
    retries a step only once its try has ended): its record may be half-written, so it does
    not count as logged; it is marked KILLED, as MLflow marks a run whose process died, and
    the caller logs the record whole in a new run."""
    by_id = f"tags.`{ID_TAG}` = {_quoted(record_id)}"
    runs = mlflow_client.search_runs([experiment_id], filter_string=by_id, max_results=_PAGE)
    for run in runs:
        if run.info.status == "FINISHED":
            return run.info.run_id
    for run in runs:
        if run.info.status == "RUNNING":
            mlflow_client.set_terminated(run.info.run_id, "KILLED")
    return None


def records_for(
    tracking_uri: str, registered_model: str, version: str | None = None
) -> list[DecisionRecord]:
    """The decisions about a registered model, oldest first.

    Without `version`: every record naming the model, and those naming the MLflow run of any of
    its versions (a gate record is written before its candidate has a name or a version). With
    `version`: the records naming that version, or the run it was registered from.

    Raises:
        DecisionStoreError: the tracking server failed or did not answer.
        DecisionRecordError: a stored record is not a valid record (names the run).
    """
    return [record for _, record in logged_records_for(tracking_uri, registered_model, version)]


def logged_records_for(
    tracking_uri: str, registered_model: str, version: str | None = None
) -> list[tuple[int, DecisionRecord]]:
    """`records_for`, each with when it was logged (MLflow's run start, in milliseconds): a
    record's own time has whole seconds, too coarse to order it among the registry's events of
    the same second (a gate and the registration it allowed)."""

    def search() -> list[tuple[int, DecisionRecord]]:
        mlflow_client = mlflow_registry.client(tracking_uri)
        experiment = mlflow_client.get_experiment_by_name(DECISIONS_EXPERIMENT)
        if experiment is None:
            return []
        model = f"tags.`{MODEL_TAG}` = {_quoted(registered_model)}"
        if version is None:
            filters = [model]
            run_ids = _version_run_ids(mlflow_client, registered_model)
        else:
            filters = [f"{model} and tags.`{VERSION_TAG}` = {_quoted(str(version))}"]
            run_ids = _version_run_ids(mlflow_client, registered_model, str(version))
        filters += [f"tags.`{RUN_TAG}` = {_quoted(run_id)}" for run_id in sorted(run_ids)]
        runs = {}
        for filter_string in filters:
            for run in _finished_runs(mlflow_client, experiment.experiment_id, filter_string):
                runs[run.info.run_id] = run
        ordered = sorted(runs.values(), key=lambda run: (run.info.start_time, run.info.run_id))
        return [
            (run.info.start_time, _download_record(mlflow_client, tracking_uri, run.info.run_id))
            for run in ordered
        ]

    where = registered_model if version is None else f"{registered_model} version {version}"
    logged = ask_mlflow(tracking_uri, f"read the decisions about {where}", search)
    # By decision time, then as logged: one step's records, taken within a second, keep their
    # order, and a record logged later than it was taken still sorts by when it was taken.
    return sorted(logged, key=lambda pair: pair[1].time)


def decisions_of_kfp_run(tracking_uri: str, kfp_run_id: str) -> list[dict[str, object]]:
    """What a KFP run decided, oldest first, from the records' tags alone (no downloads): each
    {"kind", "registered_model", "model_version", "outcome"}. For the word at a run's end,
    which may read no task's output, only the run's id.

    Raises:
        DecisionStoreError: the tracking server failed or did not answer.
    """

    def search() -> list[dict[str, object]]:
        mlflow_client = mlflow_registry.client(tracking_uri)
        experiment = mlflow_client.get_experiment_by_name(DECISIONS_EXPERIMENT)
        if experiment is None or not kfp_run_id:
            return []
        by_run = f"tags.`{KFP_RUN_TAG}` = {_quoted(kfp_run_id)}"
        return [
            {
                "kind": run.data.tags.get(KIND_TAG),
                "registered_model": run.data.tags.get(MODEL_TAG),
                "model_version": run.data.tags.get(VERSION_TAG),
                "outcome": _outcome(run.data.tags.get(OUTCOME_TAG, "")),
            }
            for run in _finished_runs(mlflow_client, experiment.experiment_id, by_run)
        ]

    return ask_mlflow(tracking_uri, f"read the decisions of KFP run {kfp_run_id}", search)


def logged_decision(
    tracking_uri: str, kind: str, subject: Mapping[str, str]
) -> DecisionRecord | None:
    """The record of `kind` logged last whose subject has every value in `subject`, or None:
    how a retried step finds the decision its first try logged and cannot take again (the
    canary analysis of a version the first try promoted).

    Raises:
        DecisionStoreError: the tracking server failed or did not answer.
        DecisionRecordError: the stored record is not a valid record (names the run).
    """

    def find() -> DecisionRecord | None:
        mlflow_client = mlflow_registry.client(tracking_uri)
        experiment = mlflow_client.get_experiment_by_name(DECISIONS_EXPERIMENT)
        if experiment is None:
            return None
        matches = [f"tags.`{KIND_TAG}` = {_quoted(kind)}"]
        matches += [
            f"tags.`{_SUBJECT_TAGS[key]}` = {_quoted(value)}" for key, value in subject.items()
        ]
        runs = list(_finished_runs(mlflow_client, experiment.experiment_id, " and ".join(matches)))
        return _download_record(mlflow_client, tracking_uri, runs[-1].info.run_id) if runs else None

    about = ", ".join(f"{key} {value}" for key, value in subject.items())
    return ask_mlflow(tracking_uri, f"read the {kind} decision of {about}", find)


def _outcome(tag: str) -> object:
    """The outcome tag as JSON, or its text when it was cut at MLflow's tag limit."""
    try:
        return json.loads(tag)
    except json.JSONDecodeError:
        return tag


def load_record(tracking_uri: str, run_or_record_id: str) -> DecisionRecord:
    """The record whose id, or whose MLflow run's id, is `run_or_record_id`.

    Raises:
        DecisionNotFoundError: no decision record has that id.
        DecisionStoreError: the tracking server failed or did not answer.
    """
    wanted = run_or_record_id.strip()

    def find() -> DecisionRecord:
        mlflow_client = mlflow_registry.client(tracking_uri)
        experiment = mlflow_client.get_experiment_by_name(DECISIONS_EXPERIMENT)
        if experiment is not None and wanted:
            by_id = f"tags.`{ID_TAG}` = {_quoted(wanted)}"
            for run in _finished_runs(mlflow_client, experiment.experiment_id, by_id):
                return _download_record(mlflow_client, tracking_uri, run.info.run_id)
            run = _run_or_none(mlflow_client, wanted)
            if run is not None and run.info.experiment_id == experiment.experiment_id:
                return _download_record(mlflow_client, tracking_uri, wanted)
        raise DecisionNotFoundError(
            f"no decision record with id or run id {wanted!r} in experiment "
            f"{DECISIONS_EXPERIMENT!r} at {without_password(tracking_uri)}"
        )

    return ask_mlflow(tracking_uri, f"read the decision {wanted}", find)


def _decisions_experiment(tracking_uri: str) -> str:
    """The id of `DECISIONS_EXPERIMENT`, created on first use. Two steps that decide at once
    on a new server may both try to create it: the one that loses uses the winner's."""
    location = _artifact_location(tracking_uri)
    try:
        return mlflow_registry.ensure_experiment(tracking_uri, DECISIONS_EXPERIMENT, location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return mlflow_registry.ensure_experiment(tracking_uri, DECISIONS_EXPERIMENT, location)


def _tags(record: DecisionRecord) -> dict[str, str]:
    subject = record.subject
    name = " ".join(
        part
        for part in (
            record.kind,
            subject.get("registered_model"),
            subject.get("model_version") and f"v{subject['model_version']}",
        )
        if part
    )
    tags = {
        KIND_TAG: record.kind,
        ID_TAG: record.id,
        OUTCOME_TAG: json.dumps(record.outcome, sort_keys=True)[:_TAG_LIMIT],
        MLFLOW_RUN_NAME: name,
    }
    tags.update({tag: subject[key] for key, tag in _SUBJECT_TAGS.items() if subject.get(key)})
    return tags


def _artifact_location(tracking_uri: str) -> str:
    """For a SQLite store: `mlartifacts` beside the database, as a local run lays out its work
    directory (MLflow's default is relative to whichever directory the step runs in); for a
    server, its own default."""
    if not tracking_uri.startswith("sqlite:///"):
        return ""
    database = Path(tracking_uri.removeprefix("sqlite:///"))  # sqlite:////abs -> /abs
    return (database.resolve().parent / "mlartifacts").as_uri()


def _quoted(value: str) -> str:
    """`value` as a string literal of MLflow's filter language: in single quotes, or in double
    quotes when it holds a single one (`O'Brien`); one holding both is refused, since the
    language has no escape for a quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for {value!r}: it contains both kinds of quote")


def _version_run_ids(mlflow_client, name: str, version: str | None = None) -> set[str]:
    """The MLflow runs the model's versions (or that one version) were registered from."""
    if version is not None:
        try:
            return {mlflow_client.get_model_version(name, version).run_id} - {None, ""}
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return set()
            raise
    runs, token = set(), None
    while True:
        page = mlflow_client.search_model_versions(
            f"name = {_quoted(name)}", max_results=_PAGE, page_token=token
        )
        runs.update(v.run_id for v in page if v.run_id)
        token = page.token
        if not token:
            return runs


def _finished_runs(mlflow_client, experiment_id: str, filter_string: str) -> Iterator:
    token = None
    while True:
        page = mlflow_client.search_runs(
            [experiment_id],
            filter_string=f"{filter_string} and attributes.status = 'FINISHED'",
            max_results=_PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _run_or_none(mlflow_client, run_id: str):
    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _download_record(mlflow_client, tracking_uri: str, run_id: str) -> DecisionRecord:
    where = (
        f"decision record {RECORD_ARTIFACT} of MLflow run {run_id} "
        f"at {without_password(tracking_uri)}"
    )
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow_client.download_artifacts(run_id, RECORD_ARTIFACT, folder)
        except (MlflowException, OSError) as error:
            raise DecisionRecordError(f"cannot read {where}: {error}") from None
        return read_record(path, where)


def ask_mlflow(tracking_uri: str, what: str, call: Callable[[], T]) -> T:
    """`call()`, with MLflow's failures (refused, timed out, an error answer, a database store's
    error) as one DecisionStoreError that says what was being done and where; other errors pass
    through. Shared by the readers of a model's history, so every MLflow failure reads alike.
    MLflow's messages repeat the URI, so a password in it is masked in the whole message.

    A database error reaches here past MLflow, e.g. when two processes open a new SQLite store
    at once and both run its schema migrations (`duplicate column name`, `table ... already
    exists`): one line naming the store, not SQLAlchemy's traceback."""
    try:
        return call()
    except UnsupportedModelRegistryStoreURIException as error:
        raise TrackingUriError(
            f"MLflow tracking URI {without_password(tracking_uri)!r}: MLflow has no store for "
            f"its scheme: {error.message.strip()}"
        ) from error
    except MlflowException as error:
        message = error.message.splitlines()[0] if error.message else str(error)
        failure = error
    except OSError as error:  # requests' connection errors are OSErrors too
        message, failure = str(error), error
    except _DATABASE_ERRORS as error:
        message, failure = str(error).splitlines()[0], error
    text = f"MLflow at {tracking_uri}: cannot {what}: {message}"
    raise DecisionStoreError(_masked(text, tracking_uri)) from failure


def require_existing_store(tracking_uri: str) -> str:
    """`tracking_uri`, unless it names a local SQLite store whose file does not exist: MLflow
    would create an empty database there, and a mistyped path would read as a model with no
    history instead of the error it is.

    Raises:
        TrackingUriError: the SQLite file is missing.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path and parsed.path != "/:memory:":
        path = Path(parsed.path[1:])  # sqlite:///rel.db is relative, sqlite:////abs.db not
        if not path.is_file():
            raise TrackingUriError(f"no MLflow store at {tracking_uri}: {path} does not exist")
    return tracking_uri


def without_password(tracking_uri: str) -> str:
    """The URI as messages show it: a password in it (`https://user:secret@host`) masked."""
    return _masked(tracking_uri, tracking_uri)


def _masked(text: str, tracking_uri: str) -> str:
    password = urlparse(tracking_uri).password
    return text.replace(f":{password}@", ":***@") if password else text
