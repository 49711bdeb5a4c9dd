"""The Feast integration in `make test`, and what a user without the extra sees.

Feast cannot be installed beside requirements.lock (requirements-tool-feast.in says why), so
`make integrations` gives it its own environment, `.venv-feast`, with ctloop installed there;
the first test runs the Feast tests (tests/test_feast_store.py) inside it, against a real local
store. The others check that this environment, which has no Feast, answers a request for the
integration with one error naming the extra.
"""

import importlib.util
import subprocess
from pathlib import Path

import pytest

from ctloop.components.features.feast_import import FeastMissingError, import_feast
from ctloop.pipelines.cli import build_parser
from ctloop.serving.feature_lookup import FeatureLookup
from ctloop.serving.server_options import server_options

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
FEAST_PYTHON = ROOT / ".venv-feast" / "bin" / "python"
HAS_FEAST = importlib.util.find_spec("feast") is not None


@pytest.mark.skipif(not FEAST_PYTHON.exists(), reason="no .venv-feast: run make integrations")
def test_the_feast_tests_pass_against_a_real_local_store():
    run = subprocess.run(
        [
            FEAST_PYTHON,
            "-m",
            "pytest",
            "-q",
            "--tb=short",
            "-p",
            "no:cacheprovider",
            "tests/test_feast_store.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.mark.skipif(HAS_FEAST, reason="feast is installed here")
def test_the_training_side_without_feast_names_the_extra():
    with pytest.raises(FeastMissingError, match=r"pip install 'ctloop\[feast\]'"):
        import_feast()


@pytest.mark.skipif(HAS_FEAST, reason="feast is installed here")
def test_the_predictor_side_without_feast_names_the_extra(tmp_path):
    with pytest.raises(RuntimeError, match=r"pip install 'ctloop\[feast\]'"):
        FeatureLookup(str(tmp_path), "churn_features").open()


def _serve_options(*flags: str) -> dict:
    return server_options(build_parser().parse_args(["serve", "--model-uri", ".", *flags]))


def test_the_server_takes_a_feast_repository_and_a_feature_service():
    options = _serve_options("--feast-repo", "features/repo", "--feature-service", "churn_v2")
    assert (options["feast_repo"], options["feature_service"]) == ("features/repo", "churn_v2")
    assert _serve_options()["feast_repo"] is None
    with pytest.raises(ValueError, match="--feature-service names a service of --feast-repo"):
        _serve_options("--feature-service", "churn_v2")


def test_the_feast_components_compile_without_feast(tmp_path):
    from kfp import compiler

    from ctloop.components.data.component import load_dataset
    from ctloop.components.features.component import materialize_features

    for component in (load_dataset, materialize_features):
        path = tmp_path / f"{component.name}.yaml"
        compiler.Compiler().compile(component, str(path))
        assert "ctloop.components.features" in path.read_text()
