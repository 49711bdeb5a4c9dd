"""What a table's source pins (DVC's commit and hash, Feast's feature service) reaches the run."""

from ctloop.components.data.dataset_metadata import source_lineage
from ctloop.components.train.training_run import training_tags


def test_dvc_and_feast_keys_are_kept_and_nothing_else():
    metadata = {
        "rows": 120,
        "content_hash": "abc",
        "dvc_commit": "3e4cdc69",
        "feature_service": "churn_features",
        "feature_service_version": 1,
        "rows_without_features": 0,
    }
    assert source_lineage(metadata) == {
        "dvc_commit": "3e4cdc69",
        "feature_service": "churn_features",
        "feature_service_version": "1",
    }
    profile = {"task": "binary", "target": "churn", "dataset": {"uri": "x", **metadata}}
    tags = training_tags(profile, {})
    assert tags["ctloop.dataset.feature_service"] == "churn_features"
    assert tags["ctloop.dataset.dvc_commit"] == "3e4cdc69"
    assert "ctloop.dataset.rows_without_features" not in tags
