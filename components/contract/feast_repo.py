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


def entity_key_types(store: Any, service: Any) -> dict[str, str]:
    """{join key: its Feast type's name (`Int64`, `String`, ...)} of a feature service's
    entities, so that a key of the wrong type is refused naming it, not cast or looked up."""
    return {
        column.name: str(column.dtype)
        for projection in service.feature_view_projections
        for column in store.get_feature_view(projection.name).entity_columns
    }


def feature_service(store: Any, name: str) -> Any:
    """The registered feature service `name`, or one error naming the ones there are."""
    cause = None
    if name:
        try:
            return store.get_feature_service(name)
        except Exception as error:  # Feast raises its own FeatureServiceNotFoundException
            cause = error
    known = sorted(service.name for service in store.list_feature_services())
    problem = f"feature service {name!r} is not in" if name else "no feature service named for"
    raise FeatureRepoError(
        f"{problem} the Feast repository at {store.repo_path}; it has {known}"
    ) from cause


def repo_folder(repo: str | Path) -> Path:
    """The local folder holding the `feature_store.yaml` of the repository `repo`: `repo`
    itself for a local path, a new folder holding the fetched file for a URI.

    The file is read and checked here, by path or URI alike, so that a malformed one is refused
    naming it rather than failing inside Feast with a message that names no file.

    Raises:
        FeatureRepoError: no `feature_store.yaml` there (or it cannot be read), one that is not
            a YAML mapping naming a registry, a registry on a local path whose folder does not
            exist, or, by URI, a configuration whose registry is a relative path (it would
            point into the fetched folder, where there is none).
    """
    if "://" not in str(repo):
        folder = Path(repo)
        config = folder / CONFIG_FILE
        if not config.is_file():
            raise FeatureRepoError(f"{folder} is not a Feast repository: it has no {CONFIG_FILE}")
        try:
            text = config.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise FeatureRepoError(f"cannot read {config}: {error}") from error
        _check_registry_folder(_registry(text, str(config)), folder, str(config))
        return folder
    return _fetched(str(repo))


def _registry(text: str, location: str) -> str:
    """The registry path or URI that the configuration `text` (read from `location`) names."""
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FeatureRepoError(f"{location} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise FeatureRepoError(
            f"{location} holds a {type(config).__name__}, not a Feast configuration (a mapping "
            "with project, registry, provider, ...)"
        )
    registry = config.get("registry")
    registry = registry.get("path") if isinstance(registry, dict) else registry
    if not registry:
        raise FeatureRepoError(f"{location} names no registry; Feast needs one (registry: ...)")
    return str(registry)


def _check_registry_folder(registry: str, base: Path, location: str) -> None:
    """A registry on a local path needs its folder (Feast resolves a relative one from `base`,
    the repository's): without it, Feast fails with a bare FileNotFoundError naming no file."""
    if "://" in registry:
        return
    folder = (base / registry).parent
    if not folder.is_dir():
        raise FeatureRepoError(
            f"{location} names the registry {registry!r}, whose folder {folder} does not exist"
        )


def _fetched(uri: str) -> Path:
    import pyarrow.fs as pa_fs

    location = f"{uri.rstrip('/')}/{CONFIG_FILE}"
    try:
        filesystem, path = pa_fs.FileSystem.from_uri(location)
        with filesystem.open_input_stream(path) as stream:
            text = stream.read().decode()
    except (OSError, ValueError) as error:
        raise FeatureRepoError(
            f"{uri} is not a Feast repository: cannot read {location}: {error}"
        ) from error
    registry = _registry(text, location)
    if "://" not in registry and not Path(registry).is_absolute():
        raise FeatureRepoError(
            f"{location} names its registry by the relative path {registry!r}; a repository "
            "read from a URI must name it by an absolute path or URI (s3://, gs://, ...)"
        )
    _check_registry_folder(registry, Path("/"), location)
    folder = Path(tempfile.mkdtemp(prefix="ctloop-feast-"))
    (folder / CONFIG_FILE).write_text(text)
    return folder
