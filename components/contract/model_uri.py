"""A model URI made local: a path, a file:// URI, or an MLflow `models:/` / `runs:/` URI.

MLflow model URIs (`models:/name@alias`, `models:/name/3`, `runs:/<run id>/model`) are
downloaded into a local folder first, with the run's reference profile and the registered
version beside the model. Only that path imports mlflow: the serving image has none, and in
KServe the storage initializer has already put the model in /mnt/models. It needs a tracking
server named: MLflow's default tracking URI is a SQLite file, `mlflow.db`, which it would
create in the current folder to look for a model that cannot be there.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from ctloop.components.contract.model_folder import (
    MLFLOW_MODEL_FILE,
    PROFILE_FILE,
    VERSION_FILE,
    LoadedModel,
    ModelLoadingError,
    load_model,
)

MLFLOW_SCHEMES = ("models", "runs")
"""URI schemes resolved (and downloaded) with MLflow."""

logger = logging.getLogger(__name__)


def load_model_uri(model_uri: str, tracking_uri: str = "") -> LoadedModel:
    """Load the model at any URI `local_model_dir` takes; a download is removed once loaded.

    Args:
        model_uri: A ctloop model folder, an MLflow model folder, or `models:/<name>@<alias>`,
            `models:/<name>/<version>`, `runs:/<run id>/model`, or a booster file.
        tracking_uri: MLflow tracking URI for MLflow URIs (empty: `$MLFLOW_TRACKING_URI`).

    Raises:
        ModelLoadingError: no loadable model at the URI, or a profile that is not the
            booster's.
    """
    with tempfile.TemporaryDirectory(prefix="ctloop-model-") as download_dir:
        return load_model(local_model_dir(model_uri, download_dir, tracking_uri or None))


def local_model_dir(
    model_uri: str, download_dir: str | Path | None = None, tracking_uri: str | None = None
) -> Path:
    """The local folder (or booster file) behind `model_uri`: a path, a file:// URI, or an
    MLflow model URI.

    `models:/` and `runs:/` URIs are downloaded into `download_dir` (see
    `download_mlflow_model`). Other remote URIs (s3://, gs://, ...) are rejected: in a cluster
    KServe's storage initializer downloads the model to /mnt/models before the predictor starts.

    Raises:
        ModelLoadingError: an unsupported scheme, a path that does not exist, or an MLflow
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
    if not path.exists():
        raise ModelLoadingError(f"model URI {model_uri!r}: {path} is not a folder or a model file")
    return path


class ModelSourceUnavailableError(RuntimeError):
    """The MLflow server behind a model URI did not answer: the environment, not the URI, is at
    fault (exit 1, where a URI that names nothing is bad input)."""


def _unreachable(error: Exception) -> bool:
    """MLflow wraps a failed HTTP call (refused, timed out, reset) in an MlflowException whose
    context is the `requests` error; a URI naming nothing comes back as an API error instead."""
    import requests

    return isinstance(error.__cause__ or error.__context__, requests.exceptions.RequestException)


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
        tracking_uri: MLflow tracking (and registry) URI; default: the one set in this
            process or `$MLFLOW_TRACKING_URI`; with neither, the URI is refused.

    Raises:
        ModelLoadingError: mlflow is not installed, no tracking URI is set, or MLflow cannot
            resolve the URI.
    """
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError as error:
        raise ModelLoadingError(
            f"model URI {model_uri!r}: MLflow URIs need the mlflow package, which this "
            "environment lacks; give a local folder instead"
        ) from error
    if not tracking_uri and not mlflow.is_tracking_uri_set():
        raise ModelLoadingError(
            f"model URI {model_uri!r}: no MLflow tracking server to resolve it with; give its "
            "tracking URI or set $MLFLOW_TRACKING_URI"
        )
    with _process_wide_tracking_uri(mlflow, tracking_uri):
        try:
            pinned_uri, version = _pinned_registry_uri(mlflow.MlflowClient(), model_uri)
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=pinned_uri, dst_path=str(destination)
                )
            )
        except MlflowException as error:
            if _unreachable(error):
                raise ModelSourceUnavailableError(
                    f"model URI {model_uri!r}: {error.message}"
                ) from error
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
