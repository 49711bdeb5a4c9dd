"""A stateful KFP API v2beta1 stand-in for pytest-httpserver, driven by the real `kfp.Client`.

It keeps pipelines, versions (with their compiled specs), experiments and recurring runs in
memory and answers the calls `kfp.Client` makes for them with the JSON shapes the KFP API
server returns, so a test can run a command twice and see the second run find what the first
made. Requests it does not know get a 404 naming them; every request's bearer token is
recorded; a recurring run whose body lacks what the API requires gets a 400, as the server
would refuse it.
"""

from __future__ import annotations

import itertools
import json
import re
from urllib.parse import parse_qs, urlsplit

import yaml
from werkzeug import Request, Response

API = "/apis/v2beta1"
CREATED_AT = "2026-11-01T02:00:00Z"


class KfpStandIn:
    def __init__(self) -> None:
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}  # in creation order
        self.tokens: list[str | None] = []
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self.now = "2026-11-25T08:00:00Z"  # creation time of runs made through the API
        self.runs_end_as: str | None = None  # the state a created run shows when next read

    def attach(self, httpserver) -> None:
        httpserver.expect_request(re.compile(f"{API}/.*")).respond_with_handler(self.handle)

    def add_pipeline(self, name: str, package_path) -> str:
        """Store a pipeline with one version whose spec is the compiled `package_path`."""
        return self._create_pipeline(name, "v1", _spec(open(package_path).read()))

    def _create_pipeline(self, name: str, version_name: str, spec: dict) -> str:
        pipeline_id = f"p-{next(self._ids)}"
        self.pipelines[pipeline_id] = {
            "pipeline_id": pipeline_id,
            "display_name": name,
            "created_at": CREATED_AT,
        }
        self.versions[pipeline_id] = []
        self.add_version(pipeline_id, version_name, spec)
        return pipeline_id

    def add_version(self, pipeline_id: str, name: str, spec: dict) -> str:
        version_id = f"pv-{next(self._ids)}"
        self.versions[pipeline_id].append(
            {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": version_id,
                "display_name": name,
                "created_at": CREATED_AT,
                "pipeline_spec": spec,
            }
        )
        return version_id

    # -- the HTTP side ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("Authorization")
        self.tokens.append(auth.removeprefix("Bearer ") if auth else None)
        path = urlsplit(request.url).path.removeprefix(API)
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.calls.append((request.method, path))
        if request.files:  # multipart uploads: the compiled YAML in field `uploadfile`
            body = {"uploadfile": request.files["uploadfile"].read().decode()}
        else:
            body = json.loads(request.data) if request.data else {}
        for method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and method == request.method:
                status, payload = handler(query, body, *match.groups())
                return Response(json.dumps(payload), status, content_type="application/json")
        return _error(404, f"stand-in: no route for {request.method} {path}")

    def _routes(self):
        return (
            ("GET", "/healthz", lambda q, b: (200, {"multi_user": False})),
            ("GET", "/pipelines", self._list_pipelines),
            ("POST", "/pipelines/upload", self._upload_pipeline),
            ("POST", "/pipelines/upload_version", self._upload_version),
            ("GET", r"/pipelines/([^/]+)/versions", self._list_versions),
            ("GET", r"/pipelines/([^/]+)/versions/([^/]+)", self._get_version),
            ("GET", "/experiments", self._list_experiments),
            ("POST", "/experiments", self._create_experiment),
            ("GET", "/runs", self._list_runs),
            ("POST", "/runs", self._create_run),
            ("GET", r"/runs/([^/:]+)", self._get_run),
            ("GET", "/recurringruns", self._list_recurring_runs),
            ("POST", "/recurringruns", self._create_recurring_run),
            ("GET", r"/recurringruns/([^/:]+)", self._get_recurring_run),
            ("DELETE", r"/recurringruns/([^/:]+)", self._delete_recurring_run),
            ("POST", r"/recurringruns/([^/:]+):(enable|disable)", self._set_mode),
        )

    def _list_pipelines(self, query, body):
        found = [p for p in self.pipelines.values() if _matches(p, query)]
        return 200, {"pipelines": found, "total_size": len(found)} if found else {}

    def _upload_pipeline(self, query, body):
        if "uploadfile" not in body:
            return _failure(400, "upload: multipart field 'uploadfile' missing")
        name = query.get("name")
        if any(p["display_name"] == name for p in self.pipelines.values()):
            return _failure(409, f"pipeline {name!r} already exists")
        pipeline_id = self._create_pipeline(name, name, _spec(body["uploadfile"]))
        return 200, self.pipelines[pipeline_id]

    def _upload_version(self, query, body):
        pipeline_id = query.get("pipelineid")
        if pipeline_id not in self.pipelines or "uploadfile" not in body:
            return _failure(400, f"upload_version: unknown pipeline {pipeline_id!r} or no file")
        version_id = self.add_version(pipeline_id, query["name"], _spec(body["uploadfile"]))
        return 200, self.versions[pipeline_id][-1] | {"pipeline_version_id": version_id}

    def _list_versions(self, query, body, pipeline_id):
        versions = list(self.versions.get(pipeline_id, []))
        if query.get("sort_by") == "created_at desc":
            versions.reverse()  # newest last in storage
        versions = [v for v in versions if _matches(v, query)]
        size = int(query.get("page_size", 10))
        listed = [
            {k: v for k, v in version.items() if k != "pipeline_spec"} for version in versions
        ]
        return 200, {"pipeline_versions": listed[:size], "total_size": len(listed)}

    def _get_version(self, query, body, pipeline_id, version_id):
        for version in self.versions.get(pipeline_id, []):
            if version["pipeline_version_id"] == version_id:
                return 200, version
        return _failure(404, f"version {version_id} not found")

    def _list_experiments(self, query, body):
        found = [e for e in self.experiments.values() if _matches(e, query)]
        return 200, {"experiments": found, "total_size": len(found)} if found else {}

    def _create_experiment(self, query, body):
        experiment_id = f"e-{next(self._ids)}"
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "display_name": body["display_name"],
            "created_at": CREATED_AT,
            "storage_state": "AVAILABLE",
        }
        return 200, self.experiments[experiment_id]

    def add_run(self, pipeline_id: str, experiment_id: str, state: str, created_at: str) -> str:
        """Record a run that already happened (or is still going)."""
        run_id = f"r-{next(self._ids)}"
        version_id = self.versions[pipeline_id][-1]["pipeline_version_id"]
        self.runs[run_id] = {
            "run_id": run_id,
            "display_name": "earlier",
            "experiment_id": experiment_id,
            "pipeline_version_reference": {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": version_id,
            },
            "state": state,
            "created_at": created_at,
        }
        return run_id

    def _list_runs(self, query, body):
        found = [
            run
            for run in self.runs.values()
            if query.get("experiment_id") in (None, run["experiment_id"])
        ]
        if query.get("sort_by") == "created_at desc":
            found.sort(key=lambda run: run["created_at"], reverse=True)
        size = int(query.get("page_size", 10))
        return 200, {"runs": found[:size], "total_size": len(found)} if found else {}

    def _create_run(self, query, body):
        reference = body.get("pipeline_version_reference") or {}
        versions = [
            v["pipeline_version_id"] for v in self.versions.get(reference.get("pipeline_id"), [])
        ]
        inline = "pipeline_spec" in body  # `create_run_from_pipeline_func` sends the spec
        if not inline and reference.get("pipeline_version_id") not in versions:
            return _failure(400, f"run: unknown pipeline version reference {reference}")
        if body.get("experiment_id") not in self.experiments:
            return _failure(400, f"run: unknown experiment {body.get('experiment_id')}")
        run_id = f"r-{next(self._ids)}"
        self.runs[run_id] = {**body, "run_id": run_id, "state": "PENDING", "created_at": self.now}
        return 200, self.runs[run_id]

    def _get_run(self, query, body, run_id):
        if run_id not in self.runs:
            return _failure(404, f"run {run_id} not found")
        if self.runs_end_as and self.runs[run_id]["state"] in ("PENDING", "RUNNING"):
            self.runs[run_id]["state"] = self.runs_end_as
        return 200, self.runs[run_id]

    def _list_recurring_runs(self, query, body):
        found = [
            run
            for run in self.recurring_runs.values()
            if _matches(run, query) and query.get("experiment_id") in (None, run["experiment_id"])
        ]
        return 200, {"recurringRuns": found, "total_size": len(found)} if found else {}

    def _create_recurring_run(self, query, body):
        problem = _recurring_run_problem(body)
        if problem:
            return _failure(400, problem)
        run_id = f"rr-{next(self._ids)}"
        status = "ENABLED" if body["mode"] == "ENABLE" else "DISABLED"
        self.recurring_runs[run_id] = {
            **body,
            "max_concurrency": str(body["max_concurrency"]),  # int64: a string in proto JSON
            "recurring_run_id": run_id,
            "status": status,
            "created_at": CREATED_AT,
        }
        return 200, self.recurring_runs[run_id]

    def _get_recurring_run(self, query, body, run_id):
        if run_id not in self.recurring_runs:
            return _failure(404, f"recurring run {run_id} not found")
        return 200, self.recurring_runs[run_id]

    def _delete_recurring_run(self, query, body, run_id):
        if self.recurring_runs.pop(run_id, None) is None:
            return _failure(404, f"recurring run {run_id} not found")
        return 200, {}

    def _set_mode(self, query, body, run_id, mode):
        if run_id not in self.recurring_runs:
            return _failure(404, f"recurring run {run_id} not found")
        self.recurring_runs[run_id]["status"] = "ENABLED" if mode == "enable" else "DISABLED"
        self.recurring_runs[run_id]["mode"] = "ENABLE" if mode == "enable" else "DISABLE"
        return 200, {}


def _spec(package: str) -> dict:
    """A compiled package as the API server stores it (with its platform spec, if any)."""
    documents = list(yaml.safe_load_all(package))
    if len(documents) == 1:
        return documents[0]
    return {"pipeline_spec": documents[0], "platform_spec": documents[1]}


def _matches(item: dict, query: dict) -> bool:
    """Apply a v2beta1 `filter` of EQUALS predicates (the only kind the clients here send).

    `kfp.Client.get_pipeline_id` sends the operation as its enum number (1), the other
    calls as its name; the API server accepts both.
    """
    if "filter" not in query:
        return True
    predicates = json.loads(query["filter"]).get("predicates", [])
    return all(
        p["operation"] in ("EQUALS", 1) and item.get(p["key"]) == p.get("stringValue")
        for p in predicates
    )


def _recurring_run_problem(body: dict) -> str | None:
    """What the API server would refuse in a recurring-run body, or None."""
    for key in ("display_name", "experiment_id", "mode", "trigger", "max_concurrency"):
        if key not in body:
            return f"recurring run: missing {key}"
    if body["mode"] not in ("ENABLE", "DISABLE"):
        return f"recurring run: mode {body['mode']!r}"
    if not body["trigger"].get("cron_schedule", {}).get("cron"):
        return "recurring run: trigger.cron_schedule.cron missing"
    reference = body.get("pipeline_version_reference") or {}
    if not reference.get("pipeline_id") or not reference.get("pipeline_version_id"):
        return "recurring run: pipeline_version_reference needs pipeline_id and version id"
    return None


def _failure(status: int, message: str) -> tuple[int, dict]:
    return status, {"error": message, "code": 5 if status == 404 else 3, "message": message}


def _error(status: int, message: str) -> Response:
    code, payload = _failure(status, message)
    return Response(json.dumps(payload), code, content_type="application/json")
