"""The reference profile: the format training writes and every later step reads.

Computed once at training time (`ctloop.components.data.profile` builds it) and logged with the
model, it is all that drift needs of the training data, and its `feature_order` and category
lists are what turns rows into the model's input. It travels as JSON (a KFP artifact, an MLflow
artifact, a file beside the model), so its type is a `TypedDict` of that JSON: the shape is
checked by static typing where it is used, and at run time once, where it is read
(`load_profile`, `check_profile`, `feature_schema`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

from ctloop.components.contract.model_input import FeatureSchema, ModelInputError

PROFILE_FORMAT = "ctloop.reference_profile/v1"


class NumericFeatureProfile(TypedDict, total=False):
    """Bins and bin shares of a numeric feature (shares of its non-missing values)."""

    kind: Literal["numeric"]
    count: int
    """Rows profiled, missing values included (`count * missing_rate` are missing)."""
    missing_rate: float
    bin_edges: list[float]
    bin_frequencies: list[float]
    min: float | None
    max: float | None
    mean: float | None
    std: float | None


class CategoricalFeatureProfile(TypedDict, total=False):
    """Category shares of a categorical feature (shares of its non-missing values)."""

    kind: Literal["categorical"]
    count: int
    missing_rate: float
    categories: dict[str, float]


class ScoreDistribution(TypedDict, total=False):
    """The model's scores on the test split, added at evaluation."""

    bin_edges: list[float]
    bin_frequencies: list[float]
    count: int


class ScoreCalibration(TypedDict, total=False):
    """How a binary model's scores become probabilities, checked on the test split at
    evaluation (`ctloop.components.data.calibration`); absent from older profiles."""

    method: Literal["identity", "isotonic"]
    ece: float | None
    ece_noise: float | None
    ece_calibrated: float | None
    rows: int
    breakpoints: dict[str, list[float]] | None
    """For "isotonic": `scores` and the `probabilities` at them, interpolated linearly."""
    threshold: float
    """Scores at or above it are predicted positive (accuracy)."""
    test_metrics: dict[str, float | None]
    """roc_auc, accuracy and log_loss on the test split."""


class ReferenceProfile(TypedDict, total=False):
    """`ctloop.reference_profile/v1`, as written beside the model and logged with its run."""

    format: str
    target: str
    task: Literal["binary", "regression"]
    row_count: int
    label_mapping: dict[str, int] | None
    """Source label -> 0/1 when the labels were not 0/1 already."""
    feature_order: list[str]
    features: dict[str, NumericFeatureProfile | CategoricalFeatureProfile]
    prediction: ScoreDistribution
    calibration: ScoreCalibration
    dataset: dict[str, str]
    """The training data's `uri` and `content_hash`."""


class ProfileError(ValueError):
    """A reference profile that cannot be read or used."""


def check_profile(document: Any) -> ReferenceProfile:
    """`document` as a reference profile, once it is checked to have features to compare."""
    features = document.get("features") if isinstance(document, Mapping) else None
    if not isinstance(features, Mapping) or not features:
        raise ProfileError(
            "is not a ctloop reference profile: it needs a non-empty 'features' object"
        )
    return document


def load_profile(path: str | Path) -> ReferenceProfile:
    """A reference profile JSON file, checked to have features."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"reference profile {str(path)!r}: {error}") from error
    try:
        return check_profile(document)
    except ProfileError as error:
        raise ProfileError(f"reference profile {str(path)!r}: {error}") from error


def write_profile(profile: ReferenceProfile, path: str | Path) -> None:
    """Write the profile as the JSON every reader expects (sorted keys, stable bytes)."""
    with open(path, "w") as handle:
        json.dump(profile, handle, indent=1, sort_keys=True)


def feature_schema(profile: Mapping[str, Any]) -> FeatureSchema:
    """The model's input schema from the profile's `feature_order` and `features`."""
    order = profile.get("feature_order")
    features = profile.get("features")
    if not isinstance(order, list) or not order or not isinstance(features, Mapping):
        raise ModelInputError(
            "reference profile needs a non-empty 'feature_order' list and a 'features' mapping"
        )
    categories: dict[str, list[str]] = {}
    for name in order:
        entry = features.get(name)
        if not isinstance(entry, Mapping):
            raise ModelInputError(
                f"feature {name!r} is in the profile's 'feature_order' but not in its 'features'"
            )
        kind = entry.get("kind")
        if kind == "categorical":
            categories[name] = sorted(str(c) for c in entry.get("categories", {}))
        elif kind != "numeric":
            raise ModelInputError(
                f"feature {name!r} has kind {kind!r}; expected 'numeric' or 'categorical'"
            )
    return FeatureSchema(features=list(order), categories=categories)


def without_feature(profile: Mapping[str, Any], name: str) -> ReferenceProfile:
    """A copy of `profile` that does not treat column `name` (the label) as a feature."""
    trimmed = copy.deepcopy(dict(check_profile(profile)))
    if name and name in trimmed["features"]:
        del trimmed["features"][name]
        trimmed["feature_order"] = [f for f in trimmed.get("feature_order", []) if f != name]
    return trimmed
