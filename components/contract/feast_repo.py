"""Where a Feast repository is read from: a folder, or a URI a pod can read.

The pipeline steps that read features (components/features) and the predictor that looks them
up (serving) name the same repository, and on a cluster neither has a volume holding it: both
take an s3://, gs:// or file:// URI of the folder that holds `feature_store.yaml`, and fetch
that one file into a folder of their own (the registry and the stores it names are remote
already). It lives in the contract because the serving image copies only the contract besides
the server; it needs pyarrow's filesystems and yaml, which both images have, and not Feast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

CONFIG_FILE = "feature_store.yaml"


class FeatureRepoError(ValueError):
    """A Feast repository or feature service that is not what the caller named."""


def entity_keys(store: Any, service: Any) -> list[str]:
    """The join keys of a feature service's entities (sorted): the columns an entity table, or
    an entity-key request, names each entity by. `store` is a `feast.FeatureStore`, `service`
    one of its feature services (duck-typed: this module does not import Feast)."""
    return sorted(
        {
            column.name
            for projection in service.feature_view_projections
            for column in store.get_feature_view(projection.name).entity_columns
        }
    )


def repo_folder(repo: str | Path) -> Path:
    """The local folder holding the `feature_store.yaml` of the repository `repo`: `repo`
    itself for a local path, a new folder holding the fetched file for a URI.

    Raises:
        FeatureRepoError: no `feature_store.yaml` there (or it cannot be read), or, by URI, a
            configuration whose registry is a relative path (it would point into the fetched
            folder, where there is none).
    """
    folder = _fetched(str(repo)) if "://" in str(repo) else Path(repo)
    if not (folder / CONFIG_FILE).is_file():
        raise FeatureRepoError(f"{folder} is not a Feast repository: it has no {CONFIG_FILE}")
    return folder


def _fetched(uri: str) -> Path:
    import pyarrow.fs as pa_fs
    import yaml

    location = f"{uri.rstrip('/')}/{CONFIG_FILE}"
    try:
        filesystem, path = pa_fs.FileSystem.from_uri(location)
        with filesystem.open_input_stream(path) as stream:
            text = stream.read().decode()
    except (OSError, ValueError) as error:
        raise FeatureRepoError(
            f"{uri} is not a Feast repository: cannot read {location}: {error}"
        ) from error
    registry = (yaml.safe_load(text) or {}).get("registry", "")
    registry = registry.get("path", "") if isinstance(registry, dict) else str(registry)
    if "://" not in registry and not Path(registry).is_absolute():
        raise FeatureRepoError(
            f"{location} names its registry by the relative path {registry!r}; a repository "
            "read from a URI must name it by an absolute path or URI (s3://, gs://, ...)"
        )
    folder = Path(tempfile.mkdtemp(prefix="ctloop-feast-"))
    (folder / CONFIG_FILE).write_text(text)
    return folder
