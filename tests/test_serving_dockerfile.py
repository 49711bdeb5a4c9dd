"""serving/Dockerfile and serving/requirements.txt, checked without a container engine.

The Dockerfile is parsed: a base image pinned to an exact release, a numeric non-root user
before the entrypoint, an entrypoint whose module and flags the server accepts, and COPY
lines that bring every ctloop module the server imports. The requirements are checked
against requirements.lock and against the installed metadata (a closed set), and the server
is run here with every distribution outside that set made unimportable, as in the image.
"""

import importlib.util
import json
import re
import sys
from fnmatch import fnmatch
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost as xgb
from packaging.requirements import Requirement

from ctloop.serving.local_server import free_port, running_server
from ctloop.serving.server import build_parser
from tests.dockerfile_parsing import (
    IMAGE,
    dockerfile_instructions,
    installed_closure,
    requirement_pins,
)

REPO = Path(__file__).resolve().parents[1]
SERVING = REPO / "serving"
# Runs the server with only `allowed` distributions importable, then lists the ctloop modules
# it imported: what the image must install and copy.
SANDBOX = """
import importlib.metadata, json, sys
from pathlib import Path
from packaging.utils import canonicalize_name

allowed, report, argv = set(json.loads(sys.argv[1])), Path(sys.argv[2]), sys.argv[3:]
owners = importlib.metadata.packages_distributions()
absent = {
    top for top, dists in owners.items()
    if top != "ctloop" and not any(canonicalize_name(d) in allowed for d in dists)
}

class NotInImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image)", name=name)

sys.meta_path.insert(0, NotInImage())
try:
    from ctloop.serving import server
    server.main(argv)
finally:
    loaded = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
    report.write_text(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((SERVING / "Dockerfile").read_text())


def _only(instructions: list[tuple[str, str]], keyword: str) -> str:
    [arguments] = [arguments for key, arguments in instructions if key == keyword]
    return arguments


@pytest.fixture(scope="module")
def image_requirements() -> dict[str, str]:
    return requirement_pins(SERVING / "requirements.txt")


def test_base_image_is_an_exact_python_release_not_a_moving_tag(dockerfile):
    [base] = [arguments.split()[0] for key, arguments in dockerfile if key == "FROM"]
    image = IMAGE.fullmatch(base)
    lock_python = re.search(
        r"--python-version (\d+\.\d+)", (REPO / "requirements.lock").read_text()
    )

    assert image is not None and "$" not in base, base
    assert image["tag"] or image["digest"], f"{base} is untagged"
    assert image["tag"] != "latest"
    assert image["repository"] == "python"
    assert re.fullmatch(r"3\.\d+\.\d+-slim-bookworm", image["tag"]), image["tag"]
    assert image["tag"].startswith(lock_python[1] + "."), "not the Python the lock is for"


def test_image_switches_to_a_numeric_non_root_user_before_it_starts(dockerfile):
    keywords = [key for key, _ in dockerfile]
    start = min(keywords.index("ENTRYPOINT"), keywords.index("CMD"))
    users = [arguments for key, arguments in dockerfile[:start] if key == "USER"]
    uid, _, gid = users[-1].partition(":")

    assert "USER" not in keywords[start:]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot needs a numeric, non-zero UID"
    assert gid.isdigit() and int(gid) != 0
    assert any(key == "RUN" and f"--uid {uid}" in arguments for key, arguments in dockerfile)


def test_entrypoint_starts_the_server_module_with_flags_it_accepts(dockerfile):
    entrypoint = json.loads(_only(dockerfile, "ENTRYPOINT"))  # exec form: signals reach python
    command = json.loads(_only(dockerfile, "CMD"))

    assert entrypoint[:3] == ["python", "-m", "ctloop.serving.server"]
    assert importlib.util.find_spec(entrypoint[2]) is not None
    parsed = build_parser().parse_args(entrypoint[3:] + command)
    assert (parsed.host, parsed.model_dir, parsed.name) == (
        "0.0.0.0",
        "/mnt/models",
        "ctloop-model",
    )
    assert _only(dockerfile, "EXPOSE") == str(parsed.port)


def test_image_requirements_are_the_lock_versions(image_requirements):
    lock = requirement_pins(REPO / "requirements.lock")

    assert {"kserve", "xgboost", "pyarrow"} <= set(image_requirements)
    assert not {"mlflow", "kfp", "kfp-kubernetes", "google-cloud-pipeline-components"} & set(
        image_requirements
    )
    differing = {
        name: (version, lock.get(name))
        for name, version in image_requirements.items()
        if lock.get(name) != version
    }
    assert differing == {}, "serving/requirements.txt disagrees with requirements.lock"


def test_image_requirements_are_the_whole_closure_of_requirements_in(image_requirements):
    """`pip install --no-deps` in the Dockerfile is safe only if nothing is missing."""
    roots = [
        Requirement(line)
        for line in (SERVING / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert installed_closure(roots) == set(image_requirements)


@pytest.fixture(scope="module")
def sandboxed_server(tmp_path_factory, image_requirements):
    """The server run with only the image's distributions importable, on a small model."""
    folder = tmp_path_factory.mktemp("sandbox")
    (folder / "model").mkdir()
    rng = np.random.default_rng(7)
    features = rng.normal(size=(300, 3))
    matrix = xgb.DMatrix(features, label=features[:, 0] > 0, feature_names=["a", "b", "c"])
    booster = xgb.train({"objective": "binary:logistic"}, matrix, num_boost_round=5)
    booster.save_model(folder / "model" / "model.json")
    report, port = folder / "modules.json", free_port()
    command = [sys.executable, "-c", SANDBOX, json.dumps(sorted(image_requirements)), str(report)]
    command += ["--model-dir", str(folder / "model"), "--name", "toy", "--port", str(port)]
    with running_server(command, port) as served:
        answer = httpx.post(
            f"{served.url}/v1/models/toy:predict", json={"instances": [[0.5, 0.0, 1.0]]}, timeout=30
        )
    return answer, json.loads(report.read_text())


def test_server_scores_with_only_the_image_requirements_installed(sandboxed_server):
    answer, modules = sandboxed_server

    assert answer.status_code == 200, answer.text
    assert 0.0 <= answer.json()["predictions"][0] <= 1.0
    assert not {"mlflow", "kfp", "sklearn"} & {name.partition(".")[0] for name in modules}


def test_image_copies_every_ctloop_module_the_server_imports(sandboxed_server, dockerfile):
    _, modules = sandboxed_server
    copies = []  # (source pattern, destination folder), relative to the image's WORKDIR
    for key, arguments in dockerfile:
        if key == "COPY" and not arguments.startswith("--"):
            *sources, destination = arguments.split()
            copies += [(source, destination) for source in sources]
    imported = sorted(
        Path(path).relative_to(REPO).as_posix()
        for name, path in modules.items()
        if (name == "ctloop" or name.startswith("ctloop.")) and path
    )

    assert "serving/server.py" in imported
    for path in imported:
        folder = Path(path).parent.as_posix()
        expected = "ctloop/" if folder == "." else f"ctloop/{folder}/"
        assert any(
            fnmatch(path, source) and destination == expected for source, destination in copies
        ), f"{path} is imported by the server but not copied to ctloop/{path}"
