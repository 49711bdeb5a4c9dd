"""The demo's feature repository: one definition of the churn features for training and serving.

A customer (`customer_id`) has two feature views over the same timestamped Parquet source,
the profile (contract, charges, tenure, household) and the subscribed services, and one
feature service, `churn_features`, that the training table and the predictor both ask for: the
features a model trains on are, by construction, the ones it is served with. The service's
`version` tag names the definition; it goes into the model's lineage with the service's name.

The store is local (Feast's file offline store, SQLite online store, a file registry) and lives
in one folder, `feature_store.yaml` included, so `feast` CLI commands work there too.
`FeatureRepoError` and `feature_service` are the contract's (`feast_repo`), where a repository
given by URI is read: the predictor finds its feature service the same way.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from ctloop.components.contract.feast_repo import (  # noqa: F401 (FeatureRepoError: re-exported)
    FeatureRepoError,
    feature_service,
    repo_folder,
)
from ctloop.components.features.feast_import import import_feast

PROJECT = "ctloop_churn"
ENTITY = "customer"
ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"
FEATURE_SERVICE = "churn_features"
FEATURE_SERVICE_VERSION = "1"
TTL = timedelta(days=365)
"""How old a feature value may be at an entity row's timestamp and still be joined to it."""

PROFILE_FEATURES = {
    "female": "int",
    "senior_citizen": "int",
    "partner": "int",
    "dependents": "int",
    "tenure": "int",
    "contract": "str",
    "paperless_billing": "int",
    "payment_method": "str",
    "monthly_charges": "float",
    "total_charges": "float",
}
SERVICE_FEATURES = {
    "phone_service": "int",
    "multiple_lines": "str",
    "internet_service": "str",
    "online_security": "str",
    "online_backup": "str",
    "device_protection": "str",
    "tech_support": "str",
    "streaming_tv": "str",
    "streaming_movies": "str",
}
FEATURES = [*PROFILE_FEATURES, *SERVICE_FEATURES]
"""The feature service's features, in the order the training table has them."""

STORE_CONFIG = """\
project: {project}
provider: local
registry: {registry}
offline_store:
  type: file
online_store:
  type: sqlite
  path: {online}
entity_key_serialization_version: 3
"""


def definitions(source_path: str | Path) -> list[Any]:
    """The entity, the two feature views over `source_path` and the feature service."""
    feast = import_feast()
    from feast.types import Float64, Int64, String

    types = {"int": Int64, "float": Float64, "str": String}
    customer = feast.Entity(name=ENTITY, join_keys=[ENTITY_KEY], value_type=feast.ValueType.INT64)
    source = feast.FileSource(
        name="customer_snapshots", path=str(Path(source_path).resolve()), timestamp_field=TIMESTAMP
    )

    def view(name: str, features: dict[str, str]) -> Any:
        return feast.FeatureView(
            name=name,
            entities=[customer],
            ttl=TTL,
            schema=[feast.Field(name=key, dtype=types[kind]) for key, kind in features.items()],
            source=source,
            online=True,
        )

    profile = view("customer_profile", PROFILE_FEATURES)
    services = view("customer_services", SERVICE_FEATURES)
    service = feast.FeatureService(
        name=FEATURE_SERVICE,
        features=[profile, services],
        tags={"version": FEATURE_SERVICE_VERSION},
        description="The churn model's features, for training and serving alike.",
    )
    return [customer, source, profile, services, service]


def create_repo(repo_dir: str | Path, source_path: str | Path) -> Any:
    """Write `feature_store.yaml` into `repo_dir`, register the definitions; the FeatureStore."""
    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        STORE_CONFIG.format(
            project=PROJECT, registry=repo / "registry.db", online=repo / "online_store.db"
        )
    )
    store = open_store(repo)
    store.apply(definitions(source_path))
    return store


def open_store(repo_dir: str | Path) -> Any:
    """The FeatureStore of a repository folder (one holding `feature_store.yaml`): a local
    path, or a URI (s3://, gs://, file://, ...) that a pipeline step in a pod can read, so that
    a cluster needs no volume for it (`ctloop.components.contract.feast_repo`, which the
    predictor reads it with too)."""
    feast = import_feast()
    return feast.FeatureStore(repo_path=str(repo_folder(repo_dir)))


def feature_service_lineage(store: Any, name: str) -> dict[str, Any]:
    """Name, version tag and feature references of a feature service, for the model's lineage."""
    service = feature_service(store, name)
    features = [
        f"{projection.name_to_use()}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]
    return {"name": service.name, "version": service.tags.get("version", ""), "features": features}
