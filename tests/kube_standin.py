"""A Kubernetes API stand-in for InferenceServices, on 127.0.0.1, for the real `kubernetes` client.

It speaks the wire protocol the client uses: GET/POST/PATCH (JSON merge patch only) on
/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}], Kubernetes
`Status` bodies for 404/409/415, generation and resourceVersion bookkeeping. Every request
is logged as (method, path, content type, body). A test plays the KServe controller through
`reconcile(obj, gets_since_write) -> status | None`, called on each GET of an object.

It also plays what a real API server (tests/envtest.py) will not do on demand: `failing`
maps a method to the error status it answers (a 5xx), and a method in `unanswered` gets no
answer at all (the connection stays open until the stand-in stops).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from kubernetes import client

_PATH = re.compile(
    r"/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/]+))?"
)


def merge(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class KubeStandIn:
    """Holds InferenceServices by (namespace, name) and serves them over HTTP."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str, str | None, object]] = []
        self.reconcile: Callable[[dict, int], dict | None] | None = None
        self.failing: dict[str, int] = {}
        self.unanswered: set[str] = set()
        self._stopping = threading.Event()
        self._gets_since_write: dict[tuple[str, str], int] = {}
        self._resource_version = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def custom_objects_api(self) -> client.CustomObjectsApi:
        """The real client's API for custom resources, pointed at this stand-in."""
        return client.CustomObjectsApi(client.ApiClient(client.Configuration(host=self.host)))

    def start(self) -> KubeStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def writes(self) -> list[tuple[str, str, str | None, object]]:
        return [request for request in self.requests if request[0] != "GET"]

    def put(self, obj: dict) -> None:
        """Seed an object as if created earlier."""
        with self._lock:
            self._store(copy.deepcopy(obj), generation=1)

    def _store(self, obj: dict, generation: int) -> dict:
        self._resource_version += 1
        metadata = obj.setdefault("metadata", {})
        metadata["generation"] = generation
        metadata["resourceVersion"] = str(self._resource_version)
        key = (metadata["namespace"], metadata["name"])
        self.objects[key] = obj
        self._gets_since_write[key] = 0
        return obj

    def _handle(self, method: str, path: str, content_type: str | None, body: object):
        match = _PATH.fullmatch(urlsplit(path).path)
        if match is None:
            return 404, _status(404, "NotFound", f"the server could not find {path}")
        namespace, name = match["ns"], match["name"]
        if method in self.failing:
            code = self.failing[method]
            return code, _status(code, "InternalError", f"etcdserver: request timed out ({code})")
        with self._lock:
            if method == "GET" and name:
                return self._get(namespace, name)
            if method == "POST" and not name:
                return self._create(namespace, body)
            if method == "PATCH" and name:
                return self._patch(namespace, name, content_type, body)
        return 405, _status(405, "MethodNotAllowed", f"{method} {path} is not supported")

    def _get(self, namespace: str, name: str):
        key = (namespace, name)
        if key not in self.objects:
            return 404, _not_found(name)
        obj = self.objects[key]
        self._gets_since_write[key] += 1
        if self.reconcile is not None:
            status = self.reconcile(copy.deepcopy(obj), self._gets_since_write[key])
            if status is not None:
                obj["status"] = status
        return 200, obj

    def _create(self, namespace: str, body: dict):
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            return 409, _status(
                409,
                "AlreadyExists",
                f'inferenceservices.serving.kserve.io "{name}" already exists',
                name,
            )
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = namespace
        return 201, self._store(body, generation=1)

    def _patch(self, namespace: str, name: str, content_type: str | None, body: dict):
        if content_type != "application/merge-patch+json":
            return 415, _status(415, "UnsupportedMediaType", f"{content_type} is not supported")
        key = (namespace, name)
        if key not in self.objects:
            return 404, _not_found(name)
        current = self.objects[key]
        patched = merge(current, body)
        generation = current["metadata"]["generation"]
        if patched.get("spec") != current.get("spec"):
            generation += 1
        return 200, self._store(patched, generation)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                content_type = self.headers.get("Content-Type")
                standin.requests.append((self.command, self.path, content_type, body))
                if self.command in standin.unanswered:
                    standin._stopping.wait()
                    return
                code, payload = standin._handle(self.command, self.path, content_type, body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _status(code: int, reason: str, message: str, name: str | None = None) -> dict:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        status["details"] = {
            "name": name,
            "group": "serving.kserve.io",
            "kind": "inferenceservices",
        }
    return status


def _not_found(name: str) -> dict:
    return _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found', name)
