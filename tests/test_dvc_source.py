"""DVC-versioned data (dvc://<repo>?path=<path>&rev=<rev>) read through the real `dvc.api`.

The repository is a local Git repository whose data lives in a local DVC remote: it is read
through a file:// clone, with the repository's own cache deleted, so every byte read comes from
the remote the way it would on a cluster.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("dvc.api")

from ctloop.components.data.component import load_dataset, validate_dataset  # noqa: E402
from ctloop.components.data.dvc_source import (  # noqa: E402
    DvcUnavailableError,
    DvcUriError,
    parse_dvc_uri,
    read_dvc_table,
    read_source,
)
from ctloop.components.data.window import window_uri  # noqa: E402
from ctloop.components.table_io import DatasetError  # noqa: E402
from ctloop.components.train.training_run import training_tags  # noqa: E402
from tests.dvc_repo import DataRepo  # noqa: E402


def churn_table(seed: int, rows: int = 120) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "tenure": rng.integers(0, 72, rows),
            "charges": rng.normal(60, 20, rows).round(2),
            "churn": rng.choice(["Yes", "No"], rows),
        }
    )


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory):
    """Churn data at two tags (a file and a folder of parts), on a local remote, no cache."""
    repo = DataRepo(tmp_path_factory.mktemp("dvc"))
    (repo.path / "notes.csv").write_text("a,b\n1,2\n")  # in Git, not DVC
    repo.tables = {"v1": churn_table(1), "v2": churn_table(2)}
    for tag, table in repo.tables.items():
        parts = {
            "windows/part-0.parquet": table.slice(0, 50),
            "windows/part-1.parquet": table.slice(50),
        }
        repo.commit(tag, {"churn.parquet": table, **parts})
    repo.git("tag", "data-2026-01-01", "v1")  # a dated tag, what a window template names
    repo.push()
    return repo


def test_a_tag_reads_its_own_data_and_pins_commit_and_dvc_hash(data_repo):
    for tag in ("v1", "v2"):
        uri = f"dvc://{data_repo.url}?path=churn.parquet&rev={tag}"
        table, metadata = read_dvc_table(uri)
        assert table.equals(data_repo.tables[tag])
        commit = data_repo.git("rev-parse", f"{tag}^{{commit}}")
        assert metadata["dvc_commit"] == commit
        assert metadata["dvc_rev"] == tag
        assert metadata["dvc_md5"] == data_repo.recorded_md5(tag, "churn.parquet.dvc")
        assert metadata["source_uri"] == (f"dvc://{data_repo.url}?path=churn.parquet&rev={commit}")
        again, _ = read_dvc_table(metadata["source_uri"])  # the pinned URI reads the same
        assert again.equals(table)
    hashes = {data_repo.recorded_md5(tag, "churn.parquet.dvc") for tag in ("v1", "v2")}
    assert len(hashes) == 2


def test_a_tracked_folder_is_read_whole_with_its_dir_hash(data_repo):
    table, metadata = read_dvc_table(f"dvc://{data_repo.url}?path=windows&rev=v1")
    assert table.equals(data_repo.tables["v1"])
    assert metadata["dvc_md5"] == data_repo.recorded_md5("v1", "windows.dvc")
    assert metadata["dvc_md5"].endswith(".dir")


def test_read_source_reads_plain_uris_as_before_and_dvc_ones_with_lineage(data_repo, tmp_path):
    pq.write_table(data_repo.tables["v1"], tmp_path / "plain.parquet")
    assert read_source(str(tmp_path / "plain.parquet")) == (data_repo.tables["v1"], {})
    table, metadata = read_source(f"dvc://{data_repo.url}?path=churn.parquet&rev=v1")
    assert table.equals(data_repo.tables["v1"]) and metadata["dvc_rev"] == "v1"


def test_without_a_rev_the_default_branch_is_read(data_repo):
    table, metadata = read_dvc_table(f"dvc://{data_repo.url}?path=churn.parquet")
    assert table.equals(data_repo.tables["v2"])
    assert metadata["dvc_rev"] == ""
    assert metadata["dvc_commit"] == data_repo.git("rev-parse", "main")


def test_the_lineage_reaches_the_reference_profile_through_load_and_validate(data_repo, tmp_path):
    """What training logs with the model: the profile's `dataset` names commit and hash."""
    uri = window_uri(f"dvc://{data_repo.url}?path=churn.parquet&rev=data-{{date}}", _day(1))
    dataset = SimpleNamespace(path=str(tmp_path / "dataset.parquet"), metadata={})
    load_dataset.python_func(uri=uri, dataset=dataset)
    outputs = {
        name: SimpleNamespace(path=str(tmp_path / name), metadata={})
        for name in ("validated", "reference_profile", "report")
    }
    validate_dataset.python_func(
        dataset=SimpleNamespace(path=dataset.path, metadata=dataset.metadata, uri=dataset.path),
        target="churn",
        **outputs,
    )
    commit = data_repo.git("rev-parse", "v1^{commit}")
    profile = json.loads(Path(outputs["reference_profile"].path).read_text())
    assert profile["dataset"] == {
        "uri": f"dvc://{data_repo.url}?path=churn.parquet&rev={commit}",
        "content_hash": dataset.metadata["content_hash"],
        "dvc_repo": data_repo.url,
        "dvc_path": "churn.parquet",
        "dvc_rev": "data-2026-01-01",
        "dvc_commit": commit,
        "dvc_md5": data_repo.recorded_md5("v1", "churn.parquet.dvc"),
    }
    assert dataset.metadata["rows"] == 120
    tags = training_tags(profile, {})  # the MLflow run's tags: the URI pins the commit
    assert tags["ctloop.dataset.uri"] == profile["dataset"]["uri"]
    assert tags["ctloop.dataset.dvc_commit"] == commit  # registration copies it to the version
    assert tags["ctloop.dataset.dvc_md5"] == profile["dataset"]["dvc_md5"]


def _day(day: int):
    import datetime as dt

    return dt.datetime(2026, 1, day, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("path=churn.parquet&rev=no-such-tag", "cannot open repository .* at revision"),
        ("path=absent.parquet&rev=v1", "no 'absent.parquet' at this revision"),
        ("path=notes.csv&rev=v1", "'notes.csv' is not tracked by DVC"),
    ],
)
def test_what_is_not_dvc_data_at_that_revision_is_named(data_repo, query, message):
    with pytest.raises(DvcUriError, match=message):
        read_dvc_table(f"dvc://{data_repo.url}?{query}")


def test_data_that_is_not_a_table_is_named_by_its_dvc_uri(data_repo, tmp_path):
    (data_repo.path / "model.bin").write_bytes(b"\x00\x01binary")
    data_repo.dvc("add", "model.bin")
    uri = f"dvc://{data_repo.path}?path=model.bin"
    with pytest.raises(DatasetError, match=r"DVC URI 'dvc://.*model.bin'.*neither Parquet"):
        read_dvc_table(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("dvc://?path=a.parquet", "no repository"),
        ("dvc://repo", "no path="),
        ("dvc://repo?path=", "no path="),
        ("dvc://repo?path=a&branch=main", r"unknown key\(s\) \['branch'\]"),
        ("dvc://repo?path=a&rev=v1&rev=v2", r"repeated key\(s\) \['rev'\]"),
        ("dvc://repo?path", "malformed query"),
    ],
)
def test_a_malformed_dvc_uri_is_named(uri, message):
    with pytest.raises(DvcUriError, match=message):
        parse_dvc_uri(uri)


def test_a_repository_url_keeps_its_own_scheme_and_slashes():
    assert parse_dvc_uri("dvc://git@github.com:org/data.git?path=a/b.csv&rev=v1&remote=s3") == {
        "repo": "git@github.com:org/data.git",
        "path": "a/b.csv",
        "rev": "v1",
        "remote": "s3",
    }


def test_without_the_dvc_extra_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dvc.api", None)
    with pytest.raises(DvcUnavailableError, match=r"pip install 'ctloop\[dvc\]'"):
        read_dvc_table("dvc:///srv/data?path=churn.parquet")
