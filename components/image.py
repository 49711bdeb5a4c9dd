"""The images ctloop runs in: one for every component (and its Feast variant), one for the
model server.

Tags are the package version, never `:latest`: a compiled pipeline names exactly the
code it was compiled from. `ctloop compile --image` overrides the component image (e.g. a
registry mirror); a kustomize overlay's `images:` does the same for the serving image.
"""

from ctloop import __version__

IMAGE_REPOSITORY = "ghcr.io/ctloop/ctloop"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"

FEAST_IMAGE_REPOSITORY = "ghcr.io/ctloop/ctloop-feast"
FEAST_IMAGE = f"{FEAST_IMAGE_REPOSITORY}:{__version__}"
"""The component image plus the `feast` extra (the same Dockerfile, built with
`RUNTIME=requirements-runtime-feast.txt`), for the steps that read features from a Feast
repository. Its own image because Feast cannot be installed beside requirements.lock: it caps
prometheus-client and tenacity below the lock's versions, and the default image keeps them."""

SERVING_IMAGE_REPOSITORY = "ghcr.io/ctloop/ctloop-serving"
SERVING_IMAGE = f"{SERVING_IMAGE_REPOSITORY}:{__version__}"
"""The KServe predictor (`serving/Dockerfile`): xgboost, kserve and ctloop.serving only."""

SERVING_RUNTIME = "ctloop-xgboost"
"""The KServe ServingRuntime (`manifests/serving/servingruntime.yaml`) that runs
`SERVING_IMAGE`; the training pipeline deploys with it unless told otherwise."""
