"""etcd and kube-apiserver as child processes on loopback, for tests/envtest.py.

The flags are those of a test control plane: free loopback ports, RBAC, token authentication
(one admin token, in system:masters), service-account tokens signed with a key made here, the
apiserver's self-signed serving certificate, no profiling, no endpoint reconciler (no
Service). They hold from kube-apiserver 1.20 to current releases: the plain-HTTP port is
switched off only where the flag still exists (before 1.24). Each process dies with the test
run, even a killed one (PR_SET_PDEATHSIG), and `stop` removes the state folder.
"""

from __future__ import annotations

import ctypes
import lzma
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
"""The service-account token issuer, and the audience tokens are requested for."""


class ControlPlane:
    """etcd and kube-apiserver as child processes, their state (and logs) under `state`.

    `launch`, then `wait_until_ready`: the caller may work while the apiserver boots.
    `admin_token` authenticates a member of system:masters; `ca_file` is the serving
    certificate's chain, which clients trust.
    """

    def __init__(self, state: Path) -> None:
        self.state = state
        self._processes: list[subprocess.Popen] = []
        self.admin_token = secrets.token_hex(16)
        self.ca_file = state / "certs" / "apiserver.crt"
        etcd_port, peer_port, api_port = _free_ports(3)
        self._etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._peer_url = f"http://127.0.0.1:{peer_port}"
        self._api_port = api_port
        self.host = f"https://127.0.0.1:{api_port}"

    def launch(self, apiserver: Path, etcd: Path) -> None:
        """Start etcd, and kube-apiserver once etcd answers (`apiserver` unpacked meanwhile)."""
        etcd_url, peer_url, state = self._etcd_url, self._peer_url, self.state
        etcd_process = self._launch(
            "etcd",
            [etcd, "--name=envtest", f"--data-dir={state / 'etcd'}"]
            + [f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}"]
            + [f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}"]
            + [f"--initial-cluster=envtest={peer_url}", "--log-level=warn"]
            + ["--max-request-bytes=10485760"],  # KServe's InferenceService CRD is 1.9 MB
        )
        apiserver = _unpacked(apiserver, state)
        self._await("etcd", etcd_process, lambda: _answers(f"{etcd_url}/health"))
        (state / "tokens.csv").write_text(f'{self.admin_token},admin,uid-admin,"system:masters"\n')
        self._launch(
            "kube-apiserver",
            [apiserver, f"--etcd-servers={etcd_url}", f"--secure-port={self._api_port}"]
            + ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
            + [f"--cert-dir={state / 'certs'}", "--authorization-mode=RBAC"]
            + [f"--token-auth-file={state / 'tokens.csv'}", "--anonymous-auth=false"]
            + _service_account_flags(state)
            + ["--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none"]
            + ["--profiling=false", "--allow-privileged=true", "--v=1"]
            + _insecure_port_off(apiserver),
        )

    def wait_until_ready(self) -> None:
        ca_file, token = self.ca_file, self.admin_token
        self._await(
            "kube-apiserver",
            self._processes[-1],
            lambda: ca_file.exists() and _answers(f"{self.host}/readyz", token, ca_file),
        )

    def _launch(self, name: str, argv: list) -> subprocess.Popen:
        with (self.state / f"{name}.log").open("wb") as output:
            process = subprocess.Popen(
                [str(arg) for arg in argv],
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._processes.append(process)
        return process

    def _await(self, name: str, process: subprocess.Popen, ready) -> None:
        deadline = time.monotonic() + 90
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                log = (self.state / f"{name}.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"{name} did not start:\n" + "\n".join(log.splitlines()[-15:]))
            time.sleep(0.1)

    def stop(self) -> None:
        for process in reversed(self._processes):  # the apiserver first, then etcd
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        shutil.rmtree(self.state, ignore_errors=True)


def _unpacked(apiserver: Path, state: Path) -> Path:
    if apiserver.suffix != ".xz":
        return apiserver
    binary = state / "kube-apiserver"
    with lzma.open(apiserver) as packed, binary.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked, 1 << 20)
    binary.chmod(0o755)
    return binary


def _service_account_flags(state: Path) -> list[str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (state / "sa.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (state / "sa.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return [
        f"--service-account-key-file={state / 'sa.pub'}",
        f"--service-account-signing-key-file={state / 'sa.key'}",
        f"--service-account-issuer={ISSUER}",
    ]


def _insecure_port_off(apiserver: Path) -> list[str]:
    """Before 1.24 the apiserver could also serve plain HTTP (the flag is gone since)."""
    version = subprocess.run([apiserver, "--version"], capture_output=True, text=True).stdout
    minor = re.search(r"v1\.(\d+)\.", version)
    return ["--insecure-port=0"] if minor and int(minor[1]) < 24 else []


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _answers(url: str, token: str = "", ca_file: Path | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    context = None if ca_file is None else ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
