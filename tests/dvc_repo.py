"""A real Git + DVC repository for the DVC tests, its data pushed to a local DVC remote.

`DataRepo.commit` writes tables, `dvc add`s them and tags the commit; `push` sends the data to
the remote and deletes the repository's own cache, so a reader of `url` (a file:// clone) gets
every byte from the remote, as a pipeline step on a cluster would.
"""

import os
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from dvc.cli import main as dvc_main


class DataRepo:
    def __init__(self, root: Path) -> None:
        self.path, self.remote = root / "repo", root / "remote"
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.path)], check=True)
        self.git("config", "user.email", "data@example.com")
        self.git("config", "user.name", "data")
        self.dvc("init")
        self.dvc("remote", "add", "-d", "store", str(self.remote))

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    def dvc(self, *args: str) -> None:
        """Run a dvc command in the repository, in this process (no CLI start-up), without
        the usage report the CLI otherwise sends."""
        with mock.patch.dict(os.environ, {"DVC_NO_ANALYTICS": "1"}):
            assert dvc_main(["--cd", str(self.path), *args, "-q"]) == 0, args

    def commit(self, tag: str, tables: dict[str, pa.Table]) -> str:
        """Write each table at its path, track them with DVC, commit, tag; return the commit."""
        for name, table in tables.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, self.path / name)
        tracked = sorted({name.split("/")[0] for name in tables})  # a file, or its top folder
        self.dvc("add", *tracked)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", tag)
        self.git("tag", tag)
        return self.git("rev-parse", "HEAD")

    def push(self) -> None:
        self.dvc("push", "-a", "-T")
        shutil.rmtree(self.path / ".dvc" / "cache")

    def recorded_md5(self, rev: str, dvc_file: str) -> str:
        """The content hash the .dvc file holds at `rev`."""
        return yaml.safe_load(self.git("show", f"{rev}:{dvc_file}"))["outs"][0]["md5"]
