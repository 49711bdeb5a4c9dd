"""The model folder: the files a trained model is made of, written once, loaded everywhere.

A model folder is self-describing: `model.json` (XGBoost) with `reference_profile.json` beside
it, whose `feature_order` and category lists are exactly what training used, so scoring and
serving need no call to MLflow. An MLflow model directory (`MLmodel` with an `xgboost` flavor)
loads too; its profile is looked for in the directory and in its parent, where a run's
artifacts keep it. So does what KServe's xgbserver loads: a folder holding one booster file of
another name (`.json`, `.ubj`, `.bst`), or the booster file itself.

Without a profile the booster's own feature names, types and stored categories are used, and a
log line says so; a booster that records no names either (trained on a bare matrix) gets
XGBoost's positional names f0, f1, ... and `named_features` false, for callers that can take
rows by position. A profile that disagrees with the booster fails at load, not at the first
request.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xgboost as xgb
import yaml

from ctloop.components.contract.model_input import FeatureSchema, iteration_range
from ctloop.components.contract.profile import (
    ReferenceProfile,
    check_profile,
    feature_schema,
    write_profile,
)

MODEL_FILE = "model.json"
"""The booster: the name KServe's xgboost runtimes and ctloop's predictor load."""
PROFILE_FILE = "reference_profile.json"
"""The reference profile, beside the booster and among the training run's MLflow artifacts."""
VERSION_FILE = "version.txt"
"""The registered version, when the folder was downloaded from the registry."""
UNKNOWN_VERSION = "unknown"
"""`LoadedModel.version` when none was given or recorded: a placeholder that reports show as
such, which a server must not present as a version."""
MLFLOW_MODEL_FILE = "MLmodel"
BOOSTER_SUFFIXES = (".json", ".ubj", ".bst")
"""Booster files KServe's xgbserver loads from a model folder (XGBoost's JSON, UBJSON, legacy)."""

logger = logging.getLogger(__name__)


class ModelLoadingError(ValueError):
    """A model URI or folder that cannot be loaded: missing files, or a profile that disagrees
    with the booster."""


@dataclass(frozen=True)
class LoadedModel:
    """A booster ready to score, and the schema that turns rows into its input."""

    booster: xgb.Booster
    schema: FeatureSchema
    version: str
    objective: str
    """The booster's objective, e.g. "binary:logistic" (labels make sense only for that)."""
    iteration_range: tuple[int, int]
    """Trees to use: up to `best_iteration` when training stopped early, else all (0, 0)."""
    model_path: Path
    profile_path: Path | None
    profile: ReferenceProfile | None
    """The reference profile, or None for a bare booster folder."""
    named_features: bool = True
    """False when neither a profile nor the booster names the features: `schema.features`
    are then XGBoost's positional names (f0, f1, ...) and rows can only be matched by
    position."""


def write_model_folder(booster: xgb.Booster, profile: ReferenceProfile, folder: str) -> None:
    """Save the booster and its profile as a model folder (the KFP Model artifact)."""
    os.makedirs(folder, exist_ok=True)
    booster.save_model(os.path.join(folder, MODEL_FILE))
    write_profile(profile, os.path.join(folder, PROFILE_FILE))


def folder_booster(folder: str | Path) -> xgb.Booster:
    """The booster of a ctloop model folder (no profile needed)."""
    return _read_booster(Path(folder) / MODEL_FILE)


def load_model(model_dir: str | Path, version: str | None = None) -> LoadedModel:
    """Load the booster and its input schema from a ctloop or MLflow model folder.

    Args:
        model_dir: Folder with `model.json`, an MLflow model directory, a folder holding one
            booster file, or a booster file.
        version: The version to report; default: the first line of `version.txt` in the
            folder, else `UNKNOWN_VERSION`.

    Raises:
        ModelLoadingError: no model file, an unreadable booster or profile, or a profile whose
            features or categories differ from the booster's.
    """
    model_path, profile_candidates = _model_file(Path(model_dir))
    folder = model_path.parent if Path(model_dir).is_file() else Path(model_dir)
    booster = _read_booster(model_path)
    profile_path = next((path for path in profile_candidates if path.is_file()), None)
    profile = None
    named_features = True
    if profile_path is None:
        schema = _schema_from_booster(booster, model_path)
        named_features = bool(booster.feature_names)
        logger.warning(
            "no %s next to %s: using the booster's own feature %s and types %s",
            PROFILE_FILE,
            model_path,
            "names" if named_features else "count (no names: by position)",
            schema.features,
        )
    else:
        profile, schema = _profile_and_schema(profile_path)
        _check_agreement(booster, schema, model_path, profile_path)
    return LoadedModel(
        booster=booster,
        schema=schema,
        version=version or _recorded_version(folder),
        objective=json.loads(booster.save_config())["learner"]["objective"]["name"],
        iteration_range=iteration_range(booster),
        model_path=model_path,
        profile_path=profile_path,
        profile=profile,
        named_features=named_features,
    )


def _model_file(folder: Path) -> tuple[Path, list[Path]]:
    """The booster file and where its profile may be, for a ctloop or an MLflow folder, a
    folder with one booster file, or a booster file."""
    if folder.is_file():
        return folder, [folder.parent / PROFILE_FILE]
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
    boosters = [
        name for name in contents if name.endswith(BOOSTER_SUFFIXES) and name != PROFILE_FILE
    ]
    if len(boosters) == 1:
        return folder / boosters[0], [folder / PROFILE_FILE]
    if boosters:
        raise ModelLoadingError(
            f"{folder}: holds several booster files {boosters} and no {MODEL_FILE}; keep one, "
            f"or name the file to serve"
        )
    raise ModelLoadingError(
        f"{folder}: holds neither {MODEL_FILE} nor an MLflow {MLFLOW_MODEL_FILE} nor a booster "
        f"file ({', '.join(BOOSTER_SUFFIXES)}); it has {contents}"
    )


def _read_booster(model_path: Path) -> xgb.Booster:
    try:
        return xgb.Booster(model_file=str(model_path))
    except xgb.core.XGBoostError as error:
        raise ModelLoadingError(f"{model_path}: not a loadable XGBoost model: {error}") from error


def _profile_and_schema(profile_path: Path) -> tuple[ReferenceProfile, FeatureSchema]:
    try:
        profile = check_profile(json.loads(profile_path.read_text()))
        return profile, feature_schema(profile)
    except (OSError, ValueError) as error:  # JSON, profile and schema errors are ValueErrors
        raise ModelLoadingError(
            f"{profile_path}: not a usable reference profile: {error}"
        ) from error


def _schema_from_booster(booster: xgb.Booster, model_path: Path) -> FeatureSchema:
    names = booster.feature_names or [f"f{index}" for index in range(booster.num_features())]
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
    return UNKNOWN_VERSION


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
