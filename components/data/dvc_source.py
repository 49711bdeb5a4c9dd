"""DVC-versioned data as a dataset URI: `dvc://<repo>?path=<path>&rev=<rev>`.

One string rather than three parameters, because every step that reads data already takes one
data URI (the training pipeline's `data_uri`, the monitoring window's `current_uri` template,
the CLI's flags): a DVC address written this way goes wherever a path or s3:// URI goes, with no
new pipeline parameter, and a window template may put `{date}` into the path or the revision.

- `repo`: what `dvc.api` accepts, a Git URL (https://, ssh://, git@host:..., file://) or a local
  path (`dvc:///srv/churn-data?...` for `/srv/churn-data`). Everything before the `?`.
- `path`: the DVC-tracked file or folder inside the repository (required).
- `rev`: a Git revision (tag, branch, commit); absent: the default branch of a remote
  repository, the workspace of a local one.
- `remote`: the DVC remote to fetch from; absent: the repository's default remote.

The data is read through `dvc.api.DVCFileSystem`, bridged into pyarrow, so `table_io` reads it
by its own rules (Parquet file or folder, CSV, gzipped CSV). What the dataset then records is
the lineage that names those bytes for good: the commit the revision resolved to and the content
hash DVC keeps for the path in its .dvc file (or dvc.lock); `source_uri` is rewritten with the
commit, so reading it again reads the same data even after a branch or tag has moved.

`dvc` is an optional dependency (`pip install 'ctloop[dvc]'`), imported only here and only when
a dvc:// URI is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

from ctloop.components.table_io import DatasetError, read_table

if TYPE_CHECKING:
    import pyarrow as pa

SCHEME = "dvc://"
QUERY_KEYS = ("path", "rev", "remote")
LINEAGE_KEYS = ("dvc_repo", "dvc_path", "dvc_rev", "dvc_commit", "dvc_md5")
"""The Dataset metadata keys (and reference profile `dataset` keys) naming DVC data."""


class DvcUriError(ValueError):
    """A dvc:// URI that is malformed, or names a repository, revision or path that is not
    there or not tracked by DVC."""


class DvcUnavailableError(RuntimeError):
    """A dvc:// URI was given but the `dvc` package is not installed."""


def is_dvc_uri(uri: str) -> bool:
    """Whether `uri` names DVC data (the `dvc://` scheme)."""
    return uri.startswith(SCHEME)


def parse_dvc_uri(uri: str) -> dict[str, str]:
    """`{"repo", "path", "rev", "remote"}` of a dvc:// URI (absent ones empty).

    Raises:
        DvcUriError: no repository, no path, an unknown or repeated query key.
    """
    repo, _, query = uri.removeprefix(SCHEME).partition("?")
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:
        raise DvcUriError(f"DVC URI {uri!r}: malformed query: {error}") from error
    unknown = sorted(set(fields) - set(QUERY_KEYS))
    repeated = sorted(key for key, values in fields.items() if len(values) > 1)
    problem = (
        "no repository before '?'" if not repo
        else f"unknown key(s) {unknown}; use {list(QUERY_KEYS)}" if unknown
        else f"repeated key(s) {repeated}" if repeated
        else "no path= (the DVC-tracked file or folder)" if not fields.get("path", [""])[0]
        else None
    )  # fmt: skip
    if problem:
        raise DvcUriError(
            f"DVC URI {uri!r}: {problem}; expected dvc://<repo>?path=<path>[&rev=<rev>]"
        )
    return {"repo": repo, **{key: fields.get(key, [""])[0] for key in QUERY_KEYS}}


def read_dvc_table(uri: str) -> tuple[pa.Table, dict[str, str]]:
    """Read the table a dvc:// URI names, and the metadata that pins it.

    Returns:
        The table, and `source_uri` (the URI with `rev` set to the resolved commit) with the
        `LINEAGE_KEYS`: repository, path, revision as asked, commit, DVC content hash (md5; a
        folder's ends in `.dir`).

    Raises:
        DvcUriError: malformed URI; unknown repository or revision; a path that is missing or
            not tracked by DVC.
        DvcUnavailableError: the dvc extra is not installed.
        DatasetError: the data is not a readable table (named by the dvc:// URI).
    """
    address = parse_dvc_uri(uri)
    path = address["path"].strip("/")
    filesystem, info, commit = _open_repo(uri, address, path)
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not md5:
        raise DvcUriError(
            f"DVC URI {uri!r}: {path!r} is not tracked by DVC (no .dvc file or dvc.lock output "
            "records its content hash); track it with `dvc add` or read it by its plain path"
        )
    import pyarrow.fs as pa_fs

    try:
        table = read_table(path, filesystem=pa_fs.PyFileSystem(pa_fs.FSSpecHandler(filesystem)))
    except DatasetError as error:
        raise DatasetError(f"DVC URI {uri!r}: {error}") from error
    pinned = {"path": address["path"], "rev": commit}
    if address["remote"]:
        pinned["remote"] = address["remote"]
    metadata = {
        "source_uri": f"{SCHEME}{address['repo']}?{urlencode(pinned, safe='/')}",
        "dvc_repo": address["repo"],
        "dvc_path": address["path"],
        "dvc_rev": address["rev"],
        "dvc_commit": commit,
        "dvc_md5": md5,
    }
    return table, metadata


def read_source(uri: str) -> tuple[pa.Table, dict[str, str]]:
    """The table any data URI names and the metadata pinning it: `read_dvc_table` for dvc://,
    `table_io.read_table` (no extra metadata) for everything else. Steps that take a data URI
    (load, the retraining data's reference) read through this so DVC data works in each."""
    return read_dvc_table(uri) if is_dvc_uri(uri) else (read_table(uri), {})


def _open_repo(uri: str, address: dict[str, str], path: str):
    """The repository's filesystem at the revision, `path`'s info there, and the commit."""
    try:
        from dvc.api import DVCFileSystem
        from dvc.exceptions import DvcException
        from scmrepo.exceptions import SCMError
    except ImportError as error:
        raise DvcUnavailableError(
            f"DVC URI {uri!r}: reading DVC data needs the dvc extra: pip install 'ctloop[dvc]'"
        ) from error
    filesystem = DVCFileSystem(
        address["repo"], rev=address["rev"] or None, remote=address["remote"] or None
    )
    try:  # the repository is cloned and the revision resolved on first use
        info = filesystem.info(path)
        return filesystem, info, filesystem.repo.get_rev()
    except FileNotFoundError as error:
        raise DvcUriError(f"DVC URI {uri!r}: no {path!r} at this revision") from error
    except (DvcException, SCMError, OSError) as error:
        raise DvcUriError(
            f"DVC URI {uri!r}: cannot open repository {address['repo']!r}"
            f"{' at revision ' + repr(address['rev']) if address['rev'] else ''}: {error}"
        ) from error
