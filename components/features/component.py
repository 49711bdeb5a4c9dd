"""KFP components of the features family: keeping Feast's online store fresh.

The training table through Feast is the data family's `load_dataset` with a `feature_repo`:
one load step, whatever the table comes from. Thin wrappers: each body imports the library
module beside it (and, through it, Feast).
"""

from kfp import dsl

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def materialize_features(feature_repo: str, end: str = "") -> str:
    """Load the feature values up to `end` into the online store the predictor reads.

    Args:
        feature_repo: Feast repository, a folder or a URI (s3://, gs://) holding
            feature_store.yaml.
        end: ISO 8601 time with a zone; empty: now (UTC).

    Returns:
        JSON {feature view: materialized up to}.
    """
    import json

    from ctloop.components.features.materialize import materialization_end, materialize

    return json.dumps(materialize(feature_repo, materialization_end(end)))
