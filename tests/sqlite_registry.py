"""An MLflow registry in a SQLite file, for tests that register model versions by hand.

`mlflow_registry.client` sets MLflow's process-wide tracking and registry URIs; the fixture
puts back what they were, so a later test module does not write into this one's file.
"""

import mlflow
import pytest


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """A new SQLite tracking store (registry included) for the test module."""
    previous = mlflow.get_tracking_uri()
    yield f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)
