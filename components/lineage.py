"""Which code is running: the ctloop version and the git commit it was built from, and, for a
registered version, everything else that made it (image, compile options, pipeline version).

Every decision record and every registered version names the code that produced it, so a
decision can be traced to a commit and replayed against a later one. In the component image
the commit comes from the build (`CTLOOP_GIT_COMMIT`, set by the Dockerfile's `GIT_COMMIT`
build argument, which `make images` fills); from a git checkout (laptops, kfp.local, CI) it is
asked of git, with `dirty` saying whether the working tree differed from that commit. Neither
known: the commit is None, said so rather than guessed.

`lineage` adds what the step ran in: `ctloop compile` writes the image and the options it
compiled with into every executor's environment (`CTLOOP_IMAGE`, `CTLOOP_COMPILE_OPTIONS`);
kfp.local runs no image at all, and says so. The KFP pipeline version the run came from is
asked of the KFP API; an API that cannot answer makes it unknown, with the reason, because a
registration must not fail for want of a label.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

from ctloop import __version__

GIT_COMMIT_ENV = "CTLOOP_GIT_COMMIT"
IMAGE_ENV = "CTLOOP_IMAGE"
COMPILE_OPTIONS_ENV = "CTLOOP_COMPILE_OPTIONS"
LOCAL_IMAGE = "kfp.local (no image)"
KFP_POD_ENV = "KFP_POD_NAME"
"""Set by KFP's launcher in every pod of a run on a cluster, absent under kfp.local."""
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


def lineage(kfp_run: Mapping[str, str], kfp_host: str = "") -> dict[str, Any]:
    """Everything a registered version was made by: code, image, compile options, KFP run and
    the pipeline version it ran (asked of the KFP API at `kfp_host`; "" asks nothing).

    JSON-able; unknown parts are None or, for the pipeline version, `{"unknown": reason}`.
    """
    code = code_version()
    run = {"id": kfp_run.get("id", ""), "name": kfp_run.get("name", "")}
    return {
        "ctloop_version": code["ctloop_version"],
        "git_commit": code["git_commit"],
        "git_dirty": code["dirty"],
        "image": running_image(),
        "compile_options": compile_options(),
        "kfp_run": run,
        "kfp_pipeline_version": pipeline_version(run["id"], kfp_host),
    }


def running_image() -> str:
    """The image this step runs in, as `ctloop compile` recorded it; kfp.local runs none."""
    image = os.environ.get(IMAGE_ENV, "").strip()
    if image:
        return image
    if os.environ.get(KFP_POD_ENV):
        return f"unknown (no {IMAGE_ENV}: the pipeline was not compiled by ctloop compile)"
    return LOCAL_IMAGE


def compile_options() -> dict[str, Any] | None:
    """The options `ctloop compile` was given (None when not compiled by it); text that is not
    a JSON object is kept as `{"unreadable": text}` rather than failing the step."""
    text = os.environ.get(COMPILE_OPTIONS_ENV, "").strip()
    if not text:
        return None
    try:
        options = json.loads(text)
    except ValueError:
        options = None
    return options if isinstance(options, dict) else {"unreadable": text}


def pipeline_version(run_id: str, kfp_host: str) -> dict[str, str]:
    """`{"id", "name", "pipeline_id"}` of the pipeline version KFP run `run_id` ran, or
    `{"unknown": reason}` when it cannot be told (no host, no run, an API that cannot answer,
    a run submitted as a pipeline spec rather than an uploaded version)."""
    if not kfp_host:
        return {"unknown": "no KFP API host given (kfp_host), so it was not asked"}
    if not run_id:
        return {"unknown": "no KFP run id to ask about"}
    import kfp_server_api

    from ctloop.components.kfp_api_client import KfpConnectionError, api_client

    try:
        with api_client(kfp_host) as client:
            run = kfp_server_api.RunServiceApi(client).run_service_get_run(run_id)
            reference = run.pipeline_version_reference
            if reference is None or not reference.pipeline_version_id:
                return {
                    "unknown": f"KFP run {run_id} names no uploaded pipeline version "
                    "(submitted as a pipeline spec)"
                }
            version = kfp_server_api.PipelineServiceApi(
                client
            ).pipeline_service_get_pipeline_version(
                reference.pipeline_id, reference.pipeline_version_id
            )
    except kfp_server_api.ApiException as error:
        return {"unknown": f"KFP API at {kfp_host}: HTTP {error.status} {error.reason}"}
    except (KfpConnectionError, ValueError) as error:
        # ValueError: a bad CTLOOP_KFP_TIMEOUT_S, or an answer the client cannot read.
        return {"unknown": str(error)}
    return {
        "id": reference.pipeline_version_id,
        "name": version.display_name or "",
        "pipeline_id": reference.pipeline_id,
    }
