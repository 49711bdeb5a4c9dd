"""The images ctloop runs in: one for every component, one for the model server (each with
its Feast variant).

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
"""The KServe ServingRuntime (`manifests/serving/runtime/servingruntime.yaml`) that runs
`SERVING_IMAGE`; the training pipeline deploys with it unless told otherwise."""

SERVING_FEAST_IMAGE_REPOSITORY = "ghcr.io/ctloop/ctloop-serving-feast"
SERVING_FEAST_IMAGE = f"{SERVING_FEAST_IMAGE_REPOSITORY}:{__version__}"
"""The predictor plus Feast (`serving/Dockerfile` built with
`REQUIREMENTS=serving/requirements-feast.txt`): it takes entity keys and looks their features
up in Feast's online store (`--feast-repo`). Its own image for the reason `FEAST_IMAGE` is, and
so that the predictor without Feast stays small."""

SERVING_FEAST_RUNTIME = "ctloop-xgboost-feast"
"""The ServingRuntime that runs `SERVING_FEAST_IMAGE` (`manifests/serving/feast`, which kustomize
derives from `SERVING_RUNTIME`'s): the one a deployment with a feature repository names."""
