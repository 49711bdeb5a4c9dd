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

from ctloop.components.contract.feast_repo import (
    entity_key_types,
    feature_service,
    repo_folder,
)
from ctloop.serving.request_decoding import InvalidRequest

INSTALL_HINT = "pip install 'ctloop[feast]'"
KEY_VALUES = {
    "Int64": ("an integer", lambda v: type(v) is int and -(2**63) <= v < 2**63),
    "Int32": ("an integer", lambda v: type(v) is int and -(2**31) <= v < 2**31),
    "String": ("a string", lambda v: isinstance(v, str)),
}
"""What an entity key of each Feast type must be: Feast itself casts 1.5, true and "1" to the
key 1 and looks that customer up, and fails with a TypeError on null."""


class FeatureLookup:
    """Looks up one feature service's features for entity-key instances."""

    def __init__(self, repo_path: str, feature_service: str, max_rows: int | None = None) -> None:
        """
        Args:
            repo_path: The Feast repository (the folder holding feature_store.yaml): a path,
                or a URI (s3://, gs://, file://) of that folder.
            feature_service: The feature service the served model was trained on.
            max_rows: The most entity-key instances one request may look up (the predictor's
                max_batch_rows): a larger batch is refused before it reaches the store, which
                the decoder's own check, after the lookup, would come too late to spare.
        """
        self.repo_path = repo_path
        self.feature_service = feature_service
        self.max_rows = max_rows
        self._store: Any = None
        self._service: Any = None
        self._key_types: dict[str, str] = {}
        self.entity_keys: list[str] = []

    def open(self) -> None:
        """Open the store and read the feature service (at the predictor's load, not per call).

        Raises:
            FeatureRepoError: no repository at `repo_path`, or no feature service
                `feature_service` there (a ValueError: the server exits 2).
        """
        try:
            import feast
        except ImportError as error:
            raise RuntimeError(
                f"entity-key lookup needs the feast package ({error}); install {INSTALL_HINT}"
            ) from error
        self._store = feast.FeatureStore(repo_path=str(repo_folder(self.repo_path)))
        self._service = feature_service(self._store, self.feature_service)
        self._key_types = entity_key_types(self._store, self._service)
        self.entity_keys = sorted(self._key_types)

    def asks_for_lookup(self, instances: Any) -> bool:
        """Whether every instance is an object holding the entity keys and nothing else.

        Raises:
            InvalidRequest: some instances are entity keys and others are not: one request
                is one or the other, or the features sent would be scored as missing keys.
        """
        if not isinstance(instances, list):
            return False
        by_key = [isinstance(row, dict) and sorted(row) == self.entity_keys for row in instances]
        if any(by_key) and not all(by_key):
            raise InvalidRequest(
                f"instances {[i for i, key in enumerate(by_key) if key][:5]} hold only the "
                f"entity keys {self.entity_keys} and instances "
                f"{[i for i, key in enumerate(by_key) if not key][:5]} do not: send entity "
                "keys alone or features alone in one request"
            )
        return len(by_key) > 0 and all(by_key)

    def features_for(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The feature rows of the entities, in the order asked.

        Raises:
            InvalidRequest: more instances than `max_rows`, a key of the wrong type, or an
                entity the online store has no features for.
        """
        if self._store is None:
            raise RuntimeError("FeatureLookup.features_for is called before open()")
        if self.max_rows is not None and len(instances) > self.max_rows:
            raise InvalidRequest(
                f"{len(instances)} entity-key instances, over max_batch_rows={self.max_rows}; "
                "split the request"
            )
        self._check_keys(instances)
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

    def _check_keys(self, instances: list[dict[str, Any]]) -> None:
        for i, row in enumerate(instances):
            for key, value in row.items():
                kind, valid = KEY_VALUES.get(self._key_types[key], ("", lambda _: True))
                if not valid(value):
                    raise InvalidRequest(
                        f"instance {i}: entity key {key!r} is {value!r}; the feature service "
                        f"{self.feature_service!r} names entities by {kind} "
                        f"({self._key_types[key]})"
                    )
