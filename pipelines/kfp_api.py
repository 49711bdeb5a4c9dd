"""The one KFP API access point: a `kfp.Client` with the right credentials for where it runs.

Inside a cluster (a pipeline step, a CI job in a pod) the client must send the projected
service-account token, or a multi-user Kubeflow rejects it; `kfp.Client(host=...)` alone
sends none. Outside, no token is sent unless `KF_PIPELINES_SA_TOKEN_PATH` names one.
"""

import os
from pathlib import Path

import kfp
from kfp.client import ServiceAccountTokenVolumeCredentials

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")


def kfp_client(host: str) -> kfp.Client:
    """A client for the KFP API at `host`, authenticated by a service-account token if any."""
    token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH") or (
        str(IN_CLUSTER_TOKEN) if IN_CLUSTER_TOKEN.exists() else None
    )
    credentials = ServiceAccountTokenVolumeCredentials(path=token_path) if token_path else None
    return kfp.Client(host=host, credentials=credentials)
