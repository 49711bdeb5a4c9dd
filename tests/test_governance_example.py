"""docs/governance.md's runnable example, run as written in an empty folder (four Python
processes that import MLflow: seconds each, hence e2e)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_runnable_example_runs_as_written(tmp_path):
    """docs/governance.md's example, run in an empty folder: the replay as recorded exits 0,
    under the stricter policy 1, and the model's records replay from MLflow."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "governance.md").read_text()
    example = guide.split("## A runnable example", 1)[1].split("```", 2)[1]
    ctloop_first = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    done = subprocess.run(
        ["bash", "-c", example],
        cwd=tmp_path,
        env={**os.environ, "PATH": ctloop_first},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert 'replayed: failures=["threshold roc_auc"] passed=false' in done.stdout
    assert "exit 1" in done.stdout
    assert done.stdout.count("1 decision: 1 same, 0 changed, 0 not replayed") == 2
