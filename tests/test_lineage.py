"""The code version every decision and registered version names, and the rest of a registered
version's lineage: the image and compile options `ctloop compile` gives every step, and the KFP
pipeline version its run came from."""

import json
import subprocess

import pytest

from ctloop import __version__
from ctloop.components import lineage
from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.compiler import compile_all
from ctloop.pipelines.placement import GpuPlacement, Retry
from tests.compiled_spec import pipeline_spec
from tests.kfp_standin import KfpStandIn
from tests.unanswering_endpoint import closed_port_url, silent_endpoint


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_a_checkout_gives_its_head_and_whether_tracked_files_changed(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert lineage._checkout_commit(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert lineage._checkout_commit(tmp_path) == (head, True)


def test_no_checkout_gives_no_commit_rather_than_a_guess(tmp_path):
    assert lineage._checkout_commit(tmp_path) == (None, None)


def test_the_image_build_argument_wins_over_the_checkout(monkeypatch):
    monkeypatch.setenv(lineage.GIT_COMMIT_ENV, "0123abc")
    lineage.code_version.cache_clear()
    try:
        assert lineage.code_version() == {
            "ctloop_version": __version__,
            "git_commit": "0123abc",
            "dirty": None,
        }
    finally:
        lineage.code_version.cache_clear()


# -- what a registered version was made by: image, compile options, pipeline version ---------


def _executor_env(path) -> dict[str, dict[str, str]]:
    """Each executor of a compiled pipeline -> its container's environment."""
    spec = pipeline_spec(path)
    return {
        name: {variable["name"]: variable["value"] for variable in executor["container"]["env"]}
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }


@pytest.mark.parametrize("pipeline", ["training", "monitoring", "ab-analysis"])
def test_every_executor_of_a_compiled_pipeline_names_its_image_and_compile_options(
    compiled_pipelines, pipeline
):
    environments = _executor_env(compiled_pipelines / "pipelines" / f"{pipeline}.yaml")
    assert len(environments) > 3  # monitoring's include the nested training pipeline's
    for name, env in environments.items():
        assert env[lineage.IMAGE_ENV] == DEFAULT_IMAGE, name
        options = json.loads(env[lineage.COMPILE_OPTIONS_ENV])
        assert (options["target"], options["image"], options["labels"]) == (
            "kfp",
            DEFAULT_IMAGE,
            {},
        ), name


def test_compile_options_say_what_the_compile_was_given_and_compile_to_the_same_bytes(tmp_path):
    image = "registry.example/ctloop@sha256:" + "0" * 64
    placement = GpuPlacement(spot="gke", accelerator_count=2, retry=Retry(num_retries=1))
    compile_all(tmp_path / "a", image, placement, pod_labels={"team": "fraud", "cost": "cc-42"})
    compile_all(tmp_path / "b", image, placement, pod_labels={"cost": "cc-42", "team": "fraud"})
    for name in ("training", "monitoring", "ab-analysis"):
        first = (tmp_path / "a" / "pipelines" / f"{name}.yaml").read_bytes()
        assert first == (tmp_path / "b" / "pipelines" / f"{name}.yaml").read_bytes(), name
    env = _executor_env(tmp_path / "a" / "pipelines" / "training.yaml")["exec-register-model"]
    assert env[lineage.IMAGE_ENV] == image
    options = json.loads(env[lineage.COMPILE_OPTIONS_ENV])
    assert options["labels"] == {"cost": "cc-42", "team": "fraud"}
    assert options["placement"]["spot"] == "gke"
    assert options["placement"]["accelerator_count"] == 2
    assert options["placement"]["retry"]["num_retries"] == 1


class _StandInWithRuns(KfpStandIn):
    """The stand-in answering `GET /runs/{id}` as the API server does."""

    def _routes(self):
        return (*super()._routes(), ("GET", r"/runs/([^/:]+)", self._get_run))

    def _get_run(self, query, body, run_id):
        if run_id not in self.runs:
            return 404, {"error": f"run {run_id} not found", "code": 5}
        return 200, self.runs[run_id]


@pytest.fixture
def kfp_api_with_runs(httpserver, tmp_path):
    standin = _StandInWithRuns()
    standin.attach(httpserver)
    standin.host = httpserver.url_for("").rstrip("/")
    package = tmp_path / "training.yaml"
    package.write_text("pipelineInfo:\n  name: ctloop-training\n")
    standin.pipeline_id = standin.add_pipeline("ctloop-training", package)
    return standin


@pytest.fixture
def compiled_step(monkeypatch):
    """The environment `ctloop compile` gives a step, in a KFP pod."""
    options = {"target": "kfp", "image": "registry.example/ctloop:1.2.3", "labels": {}}
    monkeypatch.setenv(lineage.IMAGE_ENV, "registry.example/ctloop:1.2.3")
    monkeypatch.setenv(lineage.COMPILE_OPTIONS_ENV, json.dumps(options))
    monkeypatch.setenv(lineage.KFP_POD_ENV, "training-abc-register")
    return options


def test_lineage_names_code_image_compile_options_and_the_runs_pipeline_version(
    kfp_api_with_runs, compiled_step
):
    api = kfp_api_with_runs
    version_id = api.add_version(api.pipeline_id, "v0.1.0-abc1234", {})
    run_id = api.add_run(api.pipeline_id, "e-1", "RUNNING", "2026-12-01T00:00:00Z")

    made_by = lineage.lineage({"id": run_id, "name": "nightly"}, api.host)

    code = lineage.code_version()
    assert made_by == {
        "ctloop_version": __version__,
        "git_commit": code["git_commit"],
        "git_dirty": code["dirty"],
        "image": "registry.example/ctloop:1.2.3",
        "compile_options": compiled_step,
        "kfp_run": {"id": run_id, "name": "nightly"},
        "kfp_pipeline_version": {
            "id": version_id,
            "name": "v0.1.0-abc1234",
            "pipeline_id": api.pipeline_id,
        },
    }
    assert ("GET", f"/runs/{run_id}") in api.calls


def test_a_run_the_api_does_not_know_or_that_names_no_version_is_unknown_with_the_reason(
    kfp_api_with_runs,
):
    api = kfp_api_with_runs
    unknown = lineage.pipeline_version("r-missing", api.host)
    assert unknown == {"unknown": f"KFP API at {api.host}: HTTP 404 NOT FOUND"}
    api.runs["r-spec"] = {"run_id": "r-spec", "display_name": "submitted as a spec"}
    assert lineage.pipeline_version("r-spec", api.host) == {
        "unknown": "KFP run r-spec names no uploaded pipeline version "
        "(submitted as a pipeline spec)"
    }


def test_an_unreachable_kfp_api_leaves_the_pipeline_version_unknown_instead_of_failing(
    monkeypatch,
):
    closed = closed_port_url()
    refused = lineage.pipeline_version("r-1", closed)
    assert set(refused) == {"unknown"}
    assert refused["unknown"].startswith(f"KFP API at {closed}: cannot connect")
    monkeypatch.setenv("CTLOOP_KFP_TIMEOUT_S", "0.5")
    with silent_endpoint() as endpoint:
        silent = lineage.pipeline_version("r-1", endpoint.url)
    assert silent == {
        "unknown": f"KFP API at {endpoint.url}: no answer within 0.5 s "
        "(CTLOOP_KFP_TIMEOUT_S sets the limit)"
    }
    monkeypatch.setenv("CTLOOP_KFP_TIMEOUT_S", "soon")
    assert lineage.pipeline_version("r-1", closed) == {
        "unknown": "CTLOOP_KFP_TIMEOUT_S='soon': expected a positive number of seconds"
    }


def test_without_a_host_or_a_run_nothing_is_asked_and_the_reason_is_recorded():
    assert lineage.pipeline_version("r-1", "") == {
        "unknown": "no KFP API host given (kfp_host), so it was not asked"
    }
    assert lineage.pipeline_version("", "http://127.0.0.1:9") == {
        "unknown": "no KFP run id to ask about"
    }


def test_kfp_local_runs_no_image_and_an_uncompiled_cluster_run_says_it_does_not_know(
    monkeypatch,
):
    for name in (lineage.IMAGE_ENV, lineage.COMPILE_OPTIONS_ENV, lineage.KFP_POD_ENV):
        monkeypatch.delenv(name, raising=False)
    assert lineage.running_image() == "kfp.local (no image)"
    assert lineage.compile_options() is None
    monkeypatch.setenv(lineage.KFP_POD_ENV, "training-abc-register")
    assert lineage.running_image() == (
        "unknown (no CTLOOP_IMAGE: the pipeline was not compiled by ctloop compile)"
    )
    monkeypatch.setenv(lineage.COMPILE_OPTIONS_ENV, "[not json")
    assert lineage.compile_options() == {"unreadable": "[not json"}
