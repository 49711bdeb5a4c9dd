"""Find and load a ctloop model folder: the booster plus what it needs to read requests.

A model folder is self-describing: `model.json` (XGBoost) with `reference_profile.json`
beside it, whose `feature_order` and category lists are exactly what training used
(`feature_schema`), so serving needs no call to MLflow. An MLflow model directory (`MLmodel`
with an `xgboost` flavor) works too; its profile is looked for in the directory and in its
parent, where a run's artifacts keep it. Without a profile the booster's own feature names,
types and stored categories are used, and a log line says so.

MLflow model URIs (`models:/name@alias`, `models:/name/3`, `runs:/<run id>/model`) are
downloaded into a local folder first, with the run's reference profile and the registered
version beside the model. Only that path imports mlflow: the serving image has none, and in
KServe the storage initializer has already put the model in /mnt/models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import xgboost as xgb
import yaml

from ctloop.components.train.trainer import FeatureSchema, TrainingDataError, feature_schema

MODEL_FILE = "model.json"
PROFILE_FILE = "reference_profile.json"
VERSION_FILE = "version.txt"
MLFLOW_MODEL_FILE = "MLmodel"
MLFLOW_SCHEMES = ("models", "runs")
"""URI schemes resolved (and downloaded) with MLflow."""

logger = logging.getLogger(__name__)


class ModelLoadingError(ValueError):
    """A model URI or folder that cannot be served: missing files, or a profile that disagrees
    with the booster."""


@dataclass(frozen=True)
class LoadedModel:
    """A booster ready to score, and the schema that turns request rows into its input."""

    booster: xgb.Booster
    schema: FeatureSchema
    version: str
    objective: str
    """The booster's objective, e.g. "binary:logistic" (labels make sense only for that)."""
    iteration_range: tuple[int, int]
    """Trees to use: up to `best_iteration` when training stopped early, else all (0, 0)."""
    model_path: Path
    profile_path: Path | None


def local_model_dir(
    model_uri: str, download_dir: str | Path | None = None, tracking_uri: str | None = None
) -> Path:
    """The local folder behind `model_uri`: a path, a file:// URI, or an MLflow model URI.

    `models:/` and `runs:/` URIs are downloaded into `download_dir` (see
    `download_mlflow_model`). Other remote URIs (s3://, gs://, ...) are rejected: in a cluster
    KServe's storage initializer downloads the model to /mnt/models before the predictor starts.

    Raises:
        ModelLoadingError: an unsupported scheme, a path that is not a folder, or an MLflow
            URI that cannot be resolved.
    """
    parsed = urlparse(model_uri)
    if parsed.scheme in MLFLOW_SCHEMES:
        if download_dir is None:
            raise ModelLoadingError(
                f"model URI {model_uri!r}: an MLflow URI needs a folder to download the model to"
            )
        return download_mlflow_model(model_uri, Path(download_dir), tracking_uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "":
        path = Path(model_uri)
    else:
        raise ModelLoadingError(
            f"model URI {model_uri!r}: scheme {parsed.scheme!r} is not supported; give a local "
            "path, a file:// URI or an MLflow models:/ or runs:/ URI (in KServe, storageUri is "
            "downloaded to /mnt/models first)"
        )
    if not path.is_dir():
        raise ModelLoadingError(f"model URI {model_uri!r}: {path} is not a folder")
    return path


def download_mlflow_model(
    model_uri: str, destination: Path, tracking_uri: str | None = None
) -> Path:
    """Download an MLflow model into `destination`; return the MLflow model folder.

    A registry URI with an alias (`models:/churn@champion`) is first pinned to the version
    the alias names, so the files and the reported version cannot disagree; that version is
    written to `version.txt`. The reference profile of the model's run is downloaded beside
    it when the run has one.

    Args:
        model_uri: `models:/name@alias`, `models:/name/<version>` or `runs:/<run id>/<path>`.
        destination: Folder to download into (created when missing).
        tracking_uri: MLflow tracking (and registry) URI; default: MLflow's own
            (`$MLFLOW_TRACKING_URI`).

    Raises:
        ModelLoadingError: mlflow is not installed, or MLflow cannot resolve the URI.
    """
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError as error:
        raise ModelLoadingError(
            f"model URI {model_uri!r}: MLflow URIs need the mlflow package, which this "
            "environment lacks; give a local folder instead"
        ) from error
    with _process_wide_tracking_uri(mlflow, tracking_uri):
        try:
            pinned_uri, version = _pinned_registry_uri(mlflow.MlflowClient(), model_uri)
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=pinned_uri, dst_path=str(destination)
                )
            )
        except MlflowException as error:
            raise ModelLoadingError(f"model URI {model_uri!r}: {error.message}") from error
        if version is not None:
            (folder / VERSION_FILE).write_text(f"{version}\n")
        run_id = _mlflow_run_id(folder)
        if run_id and not (folder / PROFILE_FILE).exists():
            try:
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=PROFILE_FILE, dst_path=str(folder)
                )
            except (MlflowException, OSError) as error:
                logger.warning("run %s of %s has no %s: %s", run_id, model_uri, PROFILE_FILE, error)
    return folder


@contextmanager
def _process_wide_tracking_uri(mlflow: Any, tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `tracking_uri` meanwhile.

    MLflow 3.17 resolves `models:/` and `runs:/` URIs (and the logged model a run's URI names)
    with those, whatever `download_artifacts(tracking_uri=..., registry_uri=...)` is given.
    """
    if not tracking_uri:
        yield
        return
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _pinned_registry_uri(client: Any, model_uri: str) -> tuple[str, str | None]:
    """`models:/name@alias` -> (`models:/name/<version>`, version); `models:/name/<n>` ->
    (unchanged, n); anything else unchanged, with no known version."""
    if not model_uri.startswith("models:/"):
        return model_uri, None
    reference = model_uri.removeprefix("models:/")
    if "@" in reference:
        name, alias = reference.rsplit("@", 1)
        version = str(client.get_model_version_by_alias(name, alias).version)
        return f"models:/{name}/{version}", version
    name, _, version = reference.rpartition("/")
    return model_uri, version if name and version.isdigit() else None


def _mlflow_run_id(folder: Path) -> str | None:
    try:
        return yaml.safe_load((folder / MLFLOW_MODEL_FILE).read_text()).get("run_id")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def load_model(model_dir: str | Path, version: str | None = None) -> LoadedModel:
    """Load the booster and its input schema from a ctloop or MLflow model folder.

    Args:
        model_dir: Folder with `model.json`, or an MLflow model directory.
        version: The version to report; default: the first line of `version.txt` in the
            folder, else "unknown".

    Raises:
        ModelLoadingError: no model file, an unreadable booster or profile, or a profile whose
            features or categories differ from the booster's.
    """
    folder = Path(model_dir)
    model_path, profile_candidates = _model_file(folder)
    try:
        booster = xgb.Booster(model_file=str(model_path))
    except xgb.core.XGBoostError as error:
        raise ModelLoadingError(f"{model_path}: not a loadable XGBoost model: {error}") from error
    profile_path = next((path for path in profile_candidates if path.is_file()), None)
    if profile_path is None:
        schema = _schema_from_booster(booster, model_path)
        logger.warning(
            "no %s next to %s: using the booster's own feature names and types %s",
            PROFILE_FILE,
            model_path,
            schema.features,
        )
    else:
        schema = _schema_from_profile(profile_path)
        _check_agreement(booster, schema, model_path, profile_path)
    best = booster.attr("best_iteration")
    return LoadedModel(
        booster=booster,
        schema=schema,
        version=version or _recorded_version(folder),
        objective=json.loads(booster.save_config())["learner"]["objective"]["name"],
        iteration_range=(0, int(best) + 1) if best is not None else (0, 0),
        model_path=model_path,
        profile_path=profile_path,
    )


def _model_file(folder: Path) -> tuple[Path, list[Path]]:
    """The booster file and where its profile may be, for a ctloop or an MLflow folder."""
    if (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE, [folder / PROFILE_FILE]
    mlmodel = folder / MLFLOW_MODEL_FILE
    if mlmodel.is_file():
        try:
            flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
            data = flavors["xgboost"]["data"]
        except (yaml.YAMLError, AttributeError, KeyError, TypeError) as error:
            raise ModelLoadingError(
                f"{mlmodel}: has no 'flavors.xgboost.data' entry naming the booster file"
            ) from error
        return folder / data, [folder / PROFILE_FILE, folder.parent / PROFILE_FILE]
    contents = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    raise ModelLoadingError(
        f"{folder}: holds neither {MODEL_FILE} nor an MLflow {MLFLOW_MODEL_FILE}; it has {contents}"
    )


def _schema_from_profile(profile_path: Path) -> FeatureSchema:
    try:
        profile = json.loads(profile_path.read_text())
        if not isinstance(profile, Mapping):
            raise TrainingDataError(f"expected a JSON object, got {type(profile).__name__}")
        return feature_schema(profile)
    except (OSError, json.JSONDecodeError, TrainingDataError) as error:
        raise ModelLoadingError(
            f"{profile_path}: not a usable reference profile: {error}"
        ) from error


def _schema_from_booster(booster: xgb.Booster, model_path: Path) -> FeatureSchema:
    names = booster.feature_names
    if not names:
        raise ModelLoadingError(
            f"{model_path}: has no {PROFILE_FILE} beside it and the booster records no feature "
            "names, so request rows cannot be matched to its inputs"
        )
    categories = _booster_categories(booster)
    kinds = booster.feature_types or ["float"] * len(names)
    unknown = [
        name
        for name, kind in zip(names, kinds, strict=True)
        if kind == "c" and name not in categories
    ]
    if unknown:
        raise ModelLoadingError(
            f"{model_path}: categorical feature(s) {unknown} have no category list in the booster "
            f"and there is no {PROFILE_FILE} beside it"
        )
    return FeatureSchema(features=list(names), categories=categories)


def _booster_categories(booster: xgb.Booster) -> dict[str, list[str]]:
    """Category lists that XGBoost (>= 3.1) stores in a model trained on pandas categories."""
    stored = booster.get_categories(export_to_arrow=True)
    if stored.empty():
        return {}
    return {
        name: [str(value) for value in values.to_pylist()]
        for name, values in stored.to_arrow()
        if values is not None
    }


def _check_agreement(
    booster: xgb.Booster, schema: FeatureSchema, model_path: Path, profile_path: Path
) -> None:
    """Fail at load, not at the first request, when the profile is not this booster's."""
    where = f"{profile_path} does not match {model_path}"
    if booster.num_features() != len(schema.features):
        raise ModelLoadingError(
            f"{where}: the profile lists {len(schema.features)} features, the booster takes "
            f"{booster.num_features()}"
        )
    if booster.feature_names and list(booster.feature_names) != schema.features:
        raise ModelLoadingError(
            f"{where}: feature order {schema.features} != booster's {booster.feature_names}"
        )
    if booster.feature_types:
        categorical = [
            n for n, k in zip(schema.features, booster.feature_types, strict=True) if k == "c"
        ]
        if sorted(categorical) != sorted(schema.categories):
            raise ModelLoadingError(
                f"{where}: categorical features {sorted(schema.categories)} != booster's "
                f"{sorted(categorical)}"
            )
    for name, categories in _booster_categories(booster).items():
        if schema.categories.get(name) != categories:
            raise ModelLoadingError(
                f"{where}: categories of {name!r} are {schema.categories.get(name)} in the "
                f"profile, {categories} in the booster"
            )


def _recorded_version(folder: Path) -> str:
    version_file = folder / VERSION_FILE
    if version_file.is_file():
        lines = version_file.read_text().strip().splitlines()
        if lines and lines[0].strip():
            return lines[0].strip()
    return "unknown"


def describe(model: LoadedModel) -> dict[str, Any]:
    """What the server logs at start: where the model came from and what it takes."""
    return {
        "model": str(model.model_path),
        "profile": str(model.profile_path) if model.profile_path else None,
        "version": model.version,
        "objective": model.objective,
        "features": model.schema.features,
        "categorical": sorted(model.schema.categories),
    }
