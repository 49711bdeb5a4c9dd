"""The one MLflow access module: runs, logged models, registered versions and aliases.

Every step that touches MLflow goes through here, so the tracking URI, the artifact
location and the alias conventions (`champion` serves production, `challenger` is the
canary) are decided in one place. Locally the tracking URI is an embedded SQLite store;
on a cluster it is the MLflow server's HTTP URI; nothing else changes. It is one module,
longer than most, for that reason: a second place calling MLflow would be a second place
deciding those conventions. (The model contract's `model_uri` downloads `models:/` URIs itself,
for scoring and serving, which must not depend on this module; it only reads.)
"""

from __future__ import annotations

import fcntl
import json
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from ctloop.components.contract.model_folder import PROFILE_FILE
from ctloop.components.lineage import lineage

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
STORAGE_URI_TAG = "ctloop.storage_uri"
"""Version tag: the storageUri KServe served the version from (what a rollback restores)."""
PREDICTOR_ARGS_TAG, PREDICTOR_RUNTIME_TAG = "ctloop.predictor_args", "ctloop.predictor_runtime"
"""Version tags: the predictor's model args (JSON list) and ServingRuntime ('' for none named) it
served with as champion, which a Serverless rollback restores with its storageUri."""
REPLACED_AT_TAG, REPLACED_BY_TAG = "ctloop.replaced_at", "ctloop.replaced_by"
ROLLED_BACK_TAG, ROLLED_BACK_AT_TAG = "ctloop.rolled_back", "ctloop.rolled_back_at"
LINEAGE_TAG = "ctloop.lineage."
"""Prefix of the version tags naming what made the version (`lineage_tags`)."""
LINEAGE_PARTS = (
    "ctloop_version",
    "git_commit",
    "git_dirty",
    "image",
    "compile_options",
    "kfp_pipeline_version",
)
DEPLOYED_TAG = "ctloop.deployed."
"""Prefix of the version tags saying where the version was last deployed in each rollout stage
(`record_deployment`): `ctloop.deployed.canary`, `.shadow`, `.ab`, ..."""
MODEL_CARD_ARTIFACT = "model_card/model_card.json"
MODEL_CARD_TAG = "ctloop.model_card"
"""Version tag: the `runs:/` URI of the version's model card (JSON)."""


class RegistryError(ValueError):
    """A registry request that cannot be honoured (bad name, missing run)."""


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version with what scoring it needs: the booster and its profile."""

    name: str
    version: str
    run_id: str
    model_uri: str
    profile: dict


def client(tracking_uri: str) -> MlflowClient:
    """A client bound to `tracking_uri` (registry on the same store), also set as the default.

    The client opens its store as it is made; a new SQLite store is created then, under the
    store's creation lock (`_sqlite_store_created_once`), so that processes opening one new
    store at once do not break each other's schema migrations.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with _sqlite_store_created_once(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


_OPENED_SQLITE_STORES: set[str] = set()
"""The SQLite URIs this process has opened under their store's lock. MLflow keeps one store per
URI for the life of the process and never creates or migrates it again, so the lock is taken
once per URI and process."""


@contextmanager
def _sqlite_store_created_once(tracking_uri: str) -> Iterator[None]:
    """Meanwhile, the first time this process opens a SQLite store: hold `<database>.lock` beside
    it, exclusively when the store is still to be created, shared when it is whole.

    MLflow creates a SQLite store's tables and runs its alembic migrations when a process first
    opens it, checking only that its tables are not all there yet; two processes doing so at
    once (two `ctloop` commands, two kfp.local steps on a new work directory) break each other
    (`table experiments already exists`, `duplicate column name`). Whoever creates the store
    holds the lock exclusively, so a process holding it shared never sees one mid-migration and
    can trust MLflow's own test of whether the tables are all there; processes opening a whole
    store then wait for nobody. The lock file stays (a process waiting on a removed file would
    not exclude one that locks a new file of the same name). A folder that is missing or
    read-only gets no lock file and no lock: no store can be created there, and MLflow's own
    error says why. Other URIs (servers, other databases) pass through.
    """
    database = None if tracking_uri in _OPENED_SQLITE_STORES else _sqlite_database(tracking_uri)
    if database is None:
        yield
        return
    try:
        lock = open(database.with_name(f"{database.name}.lock"), "a")  # noqa: SIM115
    except OSError:
        yield
        return
    with lock:  # closing the file releases the lock
        fcntl.flock(lock, fcntl.LOCK_SH)
        if not _all_tables_exist(database):
            fcntl.flock(lock, fcntl.LOCK_EX)  # another may create it first: MLflow checks again
        yield
    _OPENED_SQLITE_STORES.add(tracking_uri)


def _all_tables_exist(database: Path) -> bool:
    """MLflow's own test of whether opening the store creates or migrates tables (MLflow 3.17:
    `mlflow.store.db.utils._all_tables_exist`, which both of its SQL stores call first)."""
    if not database.is_file():
        return False
    from mlflow.store.db.utils import _all_tables_exist as all_mlflow_tables_exist

    engine = create_engine(f"sqlite:///{database}")
    try:
        return all_mlflow_tables_exist(engine)
    finally:
        engine.dispose()


def _sqlite_database(tracking_uri: str) -> Path | None:
    """The absolute path of the file a `sqlite:` URI names; None for an in-memory database, a
    `file:` URI, or another scheme."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    database = make_url(tracking_uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str = "") -> str:
    """Return the id of experiment `name`, creating it (with `artifact_location`) if absent.

    An explicit artifact location matters with a SQLite store: MLflow's default would be
    `./mlruns` relative to whichever directory a pipeline step happens to run in.
    """
    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=artifact_location or None)


@contextmanager
def training_run(
    tracking_uri: str,
    experiment: str,
    *,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, object],
    artifact_location: str = "",
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one training step, with its parameters logged; failed steps leave
    the run marked FAILED, stopped ones (SIGTERM, SIGINT) KILLED."""
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as run,
        _killed_when_stopped(),
    ):
        mlflow.log_params(dict(params))
        yield run


@contextmanager
def _killed_when_stopped() -> Iterator[None]:
    """SIGTERM or SIGINT (a stopped local run, a deleted pod) end the active run as KILLED and
    exit with the shell's code for the signal; without this a SIGTERM left the run RUNNING."""
    if threading.current_thread() is not threading.main_thread():  # no signals there
        yield
        return

    def stop(signum, frame):
        mlflow.end_run("KILLED")
        raise SystemExit(128 + signum)

    stopping = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.signal(number, stop) for number in stopping}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def log_metrics(metrics: Mapping[str, float]) -> None:
    """Log a step's final figures (best iteration, row counts) to the active run."""
    mlflow.log_metrics(dict(metrics))


def log_iteration_metrics(
    run_id: str, history: Mapping[str, list[float]], prefix: str = "validation"
) -> None:
    """Log a per-iteration metric history (`{"auc": [...]}`) as `<prefix>_<metric>` by step."""
    from mlflow.entities import Metric

    timestamp = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [
        Metric(key=f"{prefix}_{metric}", value=float(value), timestamp=timestamp, step=step)
        for metric, values in history.items()
        for step, value in enumerate(values)
    ]
    mlflow_client = MlflowClient(mlflow.get_tracking_uri())
    for start in range(0, len(metrics), 1000):  # MLflow accepts at most 1000 metrics a call
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])


def log_model_with_profile(booster: xgb.Booster, profile: dict, input_example) -> str:
    """Log the booster (signature, input example) and its reference profile; return the model URI.

    The profile travels with the model: monitoring compares production data with it and
    never re-reads the training set.
    """
    from mlflow.models import infer_signature

    scores = booster.inplace_predict(input_example)
    signature = infer_signature(input_example, scores)
    info = mlflow.xgboost.log_model(
        booster,
        name=MODEL_ARTIFACT,
        signature=signature,
        input_example=input_example,
        # Stated, not inferred: inference reloads the model in a subprocess (seconds a run).
        pip_requirements=[f"xgboost=={xgb.__version__}", f"pandas=={pd.__version__}"],
    )
    mlflow.log_dict(profile, PROFILE_FILE)
    return info.model_uri


def _missing(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


def _version_by_alias(mlflow_client: MlflowClient, name: str, alias: str):
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # A missing model is RESOURCE_DOES_NOT_EXIST; a missing alias on an existing model
        # comes back from MLflow 3 as INVALID_PARAMETER_VALUE "... alias X not found".
        if _missing(error) or f"alias {alias} not found" in error.message:
            return None
        raise


def model_by_alias(tracking_uri: str, name: str, alias: str = CHAMPION) -> RegisteredModel | None:
    """The version that holds `alias`, with its reference profile; None when there is none."""
    mlflow_client = client(tracking_uri)
    version = _version_by_alias(mlflow_client, name, alias)
    if version is None:
        return None
    profile = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{PROFILE_FILE}")
    return RegisteredModel(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        model_uri=f"models:/{name}/{version.version}",
        profile=profile,
    )


def load_booster(model_uri: str) -> xgb.Booster:
    """Load a logged or registered model as the raw XGBoost booster."""
    return mlflow.xgboost.load_model(model_uri)


def register_version(
    tracking_uri: str,
    name: str,
    run_id: str,
    model_uri: str,
    tags: Mapping[str, str],
    *,
    compared_champion: str | None,
) -> tuple[str, str]:
    """Register the run's logged model and give it an alias; return (version, alias).

    The first version of a model becomes `champion` (it is deployed at 100 %); later ones
    become `challenger` while they serve as a canary, until promotion moves `champion`.
    Registering the same run twice returns the existing version (a retried step must not
    create a second version).

    `compared_champion` is the version the quality gate compared the candidate with (None:
    there was no champion). The alias is a compare-and-set on `champion`: when another run
    registered or promoted a model since the evaluation, registering now would deploy a model
    judged against nothing or against a champion that no longer serves, so this refuses and
    registers nothing. The champion is read before the version is created and again just
    before the alias is written; a version created here is deleted when the second read
    refuses.

    What remains: MLflow has no conditional alias write, so a run that moves `champion` in
    the one round trip between the second read and `set_registered_model_alias` still wins
    unseen (two first runs can then both write `champion`, the later one keeping it). Closing
    that needs runs of one model serialised (a recurring run's `max_concurrency` 1 does so
    for scheduled runs, not for runs started by hand).

    Raises:
        RegistryError: the run does not exist.
        ChampionChangedError: `champion` no longer names `compared_champion`.
    """
    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_run(run_id)
    except MlflowException as error:
        if not _missing(error):
            raise
        raise RegistryError(f"MLflow run {run_id!r} does not exist: {error}") from error
    existing = next(
        (
            v
            for v in mlflow_client.search_model_versions(f"name = {json.dumps(name)}")
            if v.run_id == run_id
        ),
        None,
    )
    own = None if existing is None else str(existing.version)
    _champion_as_compared(mlflow_client, name, compared_champion, own)
    version = existing or mlflow.register_model(model_uri, name, tags=dict(tags))
    try:
        champion = _champion_as_compared(
            mlflow_client, name, compared_champion, str(version.version)
        )
    except ChampionChangedError:
        if existing is None:
            mlflow_client.delete_model_version(name, version.version)
        raise
    alias = CHAMPION if champion in (None, str(version.version)) else CHALLENGER
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return str(version.version), alias


class ChampionChangedError(RuntimeError):
    """The champion moved between the evaluation and the registration (a concurrent run)."""


def _champion_as_compared(
    mlflow_client: MlflowClient, name: str, compared: str | None, own: str | None
) -> str | None:
    """The version holding `champion` now, when it is still `compared` (or the candidate's own
    version: a retried step that already won); else ChampionChangedError."""
    current = _version_by_alias(mlflow_client, name, CHAMPION)
    current = None if current is None else str(current.version)
    if current == compared or (current is not None and current == own):
        return current
    now = "no version" if current is None else f"version {current}"
    then = "no champion" if compared is None else f"version {compared}"
    raise ChampionChangedError(
        f"{CHAMPION} of {name!r} is now {now}, but the quality gate compared this candidate "
        f"with {then} (another run registered or promoted a model meanwhile); nothing was "
        "registered: run the training pipeline again to judge the candidate against the "
        f"{CHAMPION} as it is now"
    )


def tag_run(tracking_uri: str, run_id: str, tags: Mapping[str, object]) -> None:
    """Set tags on a run; non-string values are stored as JSON."""
    mlflow_client = client(tracking_uri)
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value if isinstance(value, str) else json.dumps(value))


def aliases_of(tracking_uri: str, name: str, version: str) -> list[str]:
    """Aliases held by a version (search_model_versions does not return them, get does)."""
    return list(client(tracking_uri).get_model_version(name, version).aliases)


def version_with_alias(tracking_uri: str, name: str, alias: str = CHAMPION) -> str | None:
    """The version number holding `alias`, None when no version holds it."""
    version = _version_by_alias(client(tracking_uri), name, alias)
    return None if version is None else str(version.version)


def record_deployment(
    tracking_uri: str, name: str, version: str, stage: str, deployment: Mapping[str, object]
) -> None:
    """Tag the version with where its deploy step put it in `stage` (`DEPLOYED_TAG` + stage):
    when, the service, what it serves as and its traffic share, as JSON. The registry is where
    a version's history is read (`ctloop audit`), and a deploy is no decision with a record."""
    where = f"{deployment.get('namespace')}/{deployment.get('name')}"
    detail = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inference_service": where,
        "serves_as": deployment.get("serves_as"),
        "traffic_percent": deployment.get("canary_traffic_percent"),
        "action": deployment.get("action"),
    }
    _model_version(client(tracking_uri), name, version)  # a missing version: RegistryError
    client(tracking_uri).set_model_version_tag(
        name, version, f"{DEPLOYED_TAG}{stage}", json.dumps(detail, sort_keys=True)
    )


def version_tags(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    """The tags of a registered version.

    Raises:
        RegistryError: the model or the version does not exist.
    """
    return dict(_model_version(client(tracking_uri), name, version).tags)


def _model_version(mlflow_client: MlflowClient, name: str, version: str):
    try:
        return mlflow_client.get_model_version(name, version)
    except MlflowException as error:
        if not _missing(error):
            raise
        raise RegistryError(f"registered model {name!r} has no version {version!r}") from error


def promote_to_champion(
    tracking_uri: str,
    name: str,
    version: str,
    *,
    storage_uri: str = "",
    predictor_args: list[str] | None = None,
    predictor_runtime: str = "",
) -> list[str]:
    """Make `version` the champion after its canary passed; returns what changed (empty: nothing).

    The version that held `champion` is tagged with when it was replaced and by which version;
    `challenger` is removed when `version` holds it; `storage_uri` (what KServe serves it
    from) and, when `predictor_args` is given, those args and `predictor_runtime` (how it
    serves: a Feast lookup is a candidate's own) are recorded on the version for a later
    rollback to it. A second call changes nothing.
    """
    mlflow_client = client(tracking_uri)
    promoted = _model_version(mlflow_client, name, version)
    changes = []
    previous = _version_by_alias(mlflow_client, name, CHAMPION)
    if previous is None or str(previous.version) != str(version):
        if previous is not None:
            replaced = {
                REPLACED_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds"),
                REPLACED_BY_TAG: str(version),
            }
            for key, value in replaced.items():
                mlflow_client.set_model_version_tag(name, str(previous.version), key, value)
            changes.append(f"version {previous.version} tagged as replaced by version {version}")
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        changes.append(f"alias {CHAMPION} moved to version {version}")
    changes += _drop_challenger(mlflow_client, name, version)
    if storage_uri and promoted.tags.get(STORAGE_URI_TAG) != storage_uri:
        mlflow_client.set_model_version_tag(name, version, STORAGE_URI_TAG, storage_uri)
        changes.append(f"version {version} tagged {STORAGE_URI_TAG}={storage_uri}")
    if predictor_args is not None:
        served = {
            PREDICTOR_ARGS_TAG: json.dumps(predictor_args),
            PREDICTOR_RUNTIME_TAG: predictor_runtime,
        }
        for key, value in served.items():
            if promoted.tags.get(key) != value:
                mlflow_client.set_model_version_tag(name, version, key, value)
                changes.append(f"version {version} tagged {key}={value}")
    return changes


def record_rollback(tracking_uri: str, name: str, version: str, reasons: list[str]) -> list[str]:
    """Tag a canary that was rolled back with why and when, and drop its `challenger` alias;
    returns what changed (empty on a second call).

    Raises:
        RegistryError: `version` is the champion (a promoted model is replaced by deploying
            another version, not rolled back).
    """
    mlflow_client = client(tracking_uri)
    candidate = _model_version(mlflow_client, name, version)
    champion = _version_by_alias(mlflow_client, name, CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        raise RegistryError(
            f"version {version} of {name!r} is the {CHAMPION}: it was promoted, so there is "
            "no canary to roll back; deploy the version that should serve instead"
        )
    changes = []
    if ROLLED_BACK_TAG not in candidate.tags:
        tags = {
            ROLLED_BACK_TAG: "; ".join(reasons) or "rolled back",
            ROLLED_BACK_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
        changes.append(f"version {version} tagged {ROLLED_BACK_TAG}")
    return changes + _drop_challenger(mlflow_client, name, version)


def _drop_challenger(mlflow_client: MlflowClient, name: str, version: str) -> list[str]:
    challenger = _version_by_alias(mlflow_client, name, CHALLENGER)
    if challenger is None or str(challenger.version) != str(version):
        return []
    mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    return [f"alias {CHALLENGER} removed from version {version}"]


def log_evaluation(tracking_uri: str, run_id: str, evaluation: dict, profile: dict) -> None:
    """Record the test metrics (`test_*`) and the scored profile on the candidate's run."""
    mlflow_client = client(tracking_uri)
    for name, value in evaluation["candidate"].items():
        mlflow_client.log_metric(run_id, f"test_{name}", value)
    mlflow_client.log_dict(run_id, evaluation, "evaluation.json")
    mlflow_client.log_dict(run_id, profile, PROFILE_FILE)


def run_registration(
    tracking_uri: str,
    name: str,
    *,
    run_id: str,
    model_uri: str,
    evaluation: dict,
    kfp_run: Mapping[str, str],
    kfp_host: str = "",
) -> tuple[str, str]:
    """Register a candidate the gate passed, tagged with why it exists and what made it
    (`lineage_tags`; `kfp_host` is where to ask for the KFP pipeline version); (version, alias).

    Registration is refused, with nothing registered, when `champion` has moved since the
    evaluation recorded `champion_version` (see `register_version`), rather than evaluated
    again here: the gate's decision artifact would otherwise describe a comparison that the
    registered version never had, and a rerun of the pipeline judges and reports it afresh.

    Raises:
        RegistryError: the evaluation does not say which champion it compared with.
        ChampionChangedError: the champion is no longer the one the gate compared with.
    """
    if "champion_version" not in evaluation:
        raise RegistryError(
            "evaluation has no 'champion_version' (the champion version the gate compared "
            "the candidate with, null when there was none): registering it could deploy a "
            "model never compared with the champion; use the evaluate step's evaluation"
        )
    compared = evaluation["champion_version"]
    compared_champion = None if compared is None else str(compared)
    run_tags = client(tracking_uri).get_run(run_id).data.tags
    # The data the version was trained on, as the train step tagged it on the run: its URI and
    # content hash, and what its source pinned (DVC's commit and hash, Feast's feature service).
    dataset = {key: value for key, value in run_tags.items() if key.startswith("ctloop.dataset.")}
    tags = {
        "ctloop.gate": "passed",
        "ctloop.test_metrics": json.dumps(evaluation["candidate"], sort_keys=True),
        "ctloop.champion_compared": compared_champion or "none",
        "ctloop.dataset.content_hash": "",
        **dataset,
        "kfp.run_id": kfp_run.get("id", ""),
        "kfp.run_name": kfp_run.get("name", ""),
        **lineage_tags(lineage(kfp_run, kfp_host)),
    }
    tag_run(tracking_uri, run_id, {"ctloop.gate": "passed"})
    return register_version(
        tracking_uri, name, run_id, model_uri, tags, compared_champion=compared_champion
    )


def lineage_tags(made_by: Mapping[str, object]) -> dict[str, str]:
    """`ctloop.lineage.<part>` version tags from a `ctloop.components.lineage.lineage` dict:
    text as it is, anything else (None, booleans, objects) as JSON, so `null` says unknown."""
    return {
        f"{LINEAGE_TAG}{part}": value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True)
        for part in LINEAGE_PARTS
        for value in [made_by.get(part)]
    }


def log_model_card(
    tracking_uri: str, name: str, version: str, card: Mapping, run_id: str = ""
) -> str:
    """Log `card` on the version's run as `model_card/model_card.json` and point the version's
    `ctloop.model_card` tag at it; returns that `runs:/` URI. Logging again replaces both.

    Raises:
        RegistryError: the model or the version does not exist, or `run_id` (when given) is
            not the run the version was registered from.
    """
    mlflow_client = client(tracking_uri)
    registered = _model_version(mlflow_client, name, version)
    if run_id and run_id != registered.run_id:
        raise RegistryError(
            f"version {version} of {name!r} was registered from run {registered.run_id}, "
            f"not from run {run_id!r}: its model card belongs on its own run"
        )
    mlflow_client.log_dict(registered.run_id, dict(card), MODEL_CARD_ARTIFACT)
    uri = f"runs:/{registered.run_id}/{MODEL_CARD_ARTIFACT}"
    mlflow_client.set_model_version_tag(name, str(version), MODEL_CARD_TAG, uri)
    return uri
