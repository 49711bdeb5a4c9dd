"""Which code is running: the ctloop version and the git commit it was built from.

Every decision record and every registered version names the code that produced it, so a
decision can be traced to a commit and replayed against a later one. In the component image
the commit comes from the build (`CTLOOP_GIT_COMMIT`, set by the Dockerfile's `GIT_COMMIT`
build argument, which `make images` fills); from a git checkout (laptops, kfp.local, CI) it is
asked of git, with `dirty` saying whether the working tree differed from that commit. Neither
known: the commit is None, said so rather than guessed.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

from ctloop import __version__

GIT_COMMIT_ENV = "CTLOOP_GIT_COMMIT"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class CodeVersion(TypedDict):
    ctloop_version: str
    git_commit: str | None
    dirty: bool | None


@lru_cache(maxsize=1)
def code_version() -> CodeVersion:
    """The running code: package version, commit and whether the checkout was modified."""
    built = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if built and built != "unknown":
        return CodeVersion(ctloop_version=__version__, git_commit=built, dirty=None)
    commit, dirty = _checkout_commit(_PACKAGE_ROOT)
    return CodeVersion(ctloop_version=__version__, git_commit=commit, dirty=dirty)


def _checkout_commit(root: Path) -> tuple[str | None, bool | None]:
    """HEAD of the git checkout at `root` and whether tracked files differ from it."""
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head or None, bool(changed)
