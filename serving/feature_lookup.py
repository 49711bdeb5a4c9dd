"""Entity keys in, features out: the predictor's in-process lookup in Feast's online store.

With a lookup, a v1 request may name entities instead of giving features,
`{"instances": [{"customer_id": 17}, ...]}`: the features come from the online store through
the same feature service the model was trained with, and are then scored as if the caller had
sent them. This is what KServe's Feast transformer example does in `preprocess`, without the
extra hop to a separate transformer. Feast is imported on first use (the `feast` extra), so the
serving image needs it only where a lookup is configured (the Feast serving image). The
repository is read as the pipeline steps read it (`ctloop.components.contract.feast_repo`): a
folder, or an s3://, gs:// or file:// URI, so a predictor pod needs no volume for it.
"""

from __future__ import annotations

from typing import Any

from ctloop.components.contract.feast_repo import entity_keys, repo_folder
from ctloop.serving.request_decoding import InvalidRequest

INSTALL_HINT = "pip install 'ctloop[feast]'"


class FeatureLookup:
    """Looks up one feature service's features for entity-key instances."""

    def __init__(self, repo_path: str, feature_service: str) -> None:
        """
        Args:
            repo_path: The Feast repository (the folder holding feature_store.yaml): a path,
                or a URI (s3://, gs://, file://) of that folder.
            feature_service: The feature service the served model was trained on.
        """
        self.repo_path = repo_path
        self.feature_service = feature_service
        self._store: Any = None
        self._service: Any = None
        self.entity_keys: list[str] = []

    def open(self) -> None:
        """Open the store and read the feature service (at the predictor's load, not per call).

        Raises:
            FeatureRepoError: no repository at `repo_path` (a ValueError: the server exits 2).
        """
        try:
            import feast
        except ImportError as error:
            raise RuntimeError(
                f"entity-key lookup needs the feast package ({error}); install {INSTALL_HINT}"
            ) from error
        self._store = feast.FeatureStore(repo_path=str(repo_folder(self.repo_path)))
        self._service = self._store.get_feature_service(self.feature_service)
        self.entity_keys = entity_keys(self._store, self._service)

    def asks_for_lookup(self, instances: Any) -> bool:
        """Whether every instance is an object holding the entity keys and nothing else."""
        return (
            isinstance(instances, list)
            and len(instances) > 0
            and all(isinstance(row, dict) and sorted(row) == self.entity_keys for row in instances)
        )

    def features_for(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The feature rows of the entities, in the order asked.

        Raises:
            InvalidRequest: an entity the online store has no features for.
        """
        if self._store is None:
            raise RuntimeError("FeatureLookup.features_for is called before open()")
        found = self._store.get_online_features(
            features=self._service, entity_rows=instances
        ).to_dict()
        names = [name for name in found if name not in self.entity_keys]
        rows = [{name: found[name][i] for name in names} for i in range(len(instances))]
        unknown = [
            keys
            for keys, row in zip(instances, rows, strict=True)
            if all(v is None for v in row.values())
        ]
        if unknown:
            raise InvalidRequest(
                f"the online store of feature service {self.feature_service!r} has no features "
                f"for {unknown[:5]} ({len(unknown)} of {len(instances)} instances): unknown "
                "entities, or not materialized yet"
            )
        return rows
