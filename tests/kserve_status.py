"""What KServe's controller writes into an InferenceService's status, for tests where none runs.

Serverless (Knative): each change of the predictor other than `canaryTrafficPercent` makes a
new revision; the latest revision takes `canaryTrafficPercent` and the last one rolled out
(the latest that took all traffic) the rest, as KServe splits traffic. Standard: Ready, and a
ready `canaryStatuses` entry for each `spec.canary[]` entry, named by its predictor's name.

Two ways to play the controller:
- for the Kubernetes API stand-in (tests/kube_standin.py), `knative_controller()` and
  `standard_controller` are its `reconcile(obj, gets_since_write)`: the status changes only
  from the second GET after a write, stale until then as on a real cluster;
- against a real API server (tests/envtest.py), a `StatusWriter` thread writes the status
  through the status subresource once per generation of each service in a namespace, as the
  controller would once a rollout is done.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ctloop.components.deploy.inference_service import SERVERLESS, deployment_mode_of

CATCH_UP_GETS = 2


class KnativeRevisions:
    """One Serverless service's revisions; `state["history"]` records every traffic split."""

    def __init__(self) -> None:
        self.state = {"config": None, "revision": 0, "rolled_out": None, "history": []}

    def status(self, obj: dict) -> dict:
        state = self.state
        predictor = obj["spec"]["predictor"]
        config = json.dumps(
            {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}, sort_keys=True
        )
        if config != state["config"]:
            state["config"], state["revision"] = config, state["revision"] + 1
        latest = f"{obj['metadata']['name']}-predictor-{state['revision']:05d}"
        percent = predictor.get("canaryTrafficPercent", 100)
        traffic = [{"revisionName": latest, "latestRevision": True, "percent": percent}]
        if percent == 100 or state["rolled_out"] is None:
            state["rolled_out"] = latest
            traffic[0]["percent"] = 100
        else:
            traffic.append(
                {
                    "revisionName": state["rolled_out"],
                    "latestRevision": False,
                    "percent": 100 - percent,
                }
            )
        state["history"].append({entry["revisionName"]: entry["percent"] for entry in traffic})
        return {
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": latest,
                    "latestRolledoutRevision": state["rolled_out"],
                    "traffic": traffic,
                }
            },
        }


def standard_status(obj: dict) -> dict:
    status = {"deploymentMode": "Standard", "conditions": [{"type": "Ready", "status": "True"}]}
    if obj["spec"].get("canary"):
        status["canaryStatuses"] = [
            {
                "name": entry["predictor"].get("name", f"canary-{index}"),
                "ready": True,
                "trafficPercent": entry["trafficPercent"],
            }
            for index, entry in enumerate(obj["spec"]["canary"])
        ]
    return status


def knative_controller():
    """The stand-in's `reconcile` for a Serverless service; `.state` is its revisions'."""
    revisions = KnativeRevisions()

    def reconcile(obj: dict, gets_since_write: int) -> dict | None:
        return None if gets_since_write < CATCH_UP_GETS else revisions.status(obj)

    reconcile.state = revisions.state
    return reconcile


def standard_controller(obj: dict, gets_since_write: int) -> dict | None:
    """The stand-in's `reconcile` for a Standard service."""
    return None if gets_since_write < CATCH_UP_GETS else standard_status(obj)


class StatusWriter:
    """Plays KServe's controller for the InferenceServices of `namespace` on a real API server.

    A thread lists them every `poll_s` (with `api`, the controller's own rights) and, for each
    generation it has not reported on, replaces the status through the status subresource with
    the rolled-out one. A write that loses a race with a client's patch (409) is tried again on
    the next round, as a controller's would be. Use as a context manager; a failure of the
    thread is raised on exit.
    """

    def __init__(self, api: client.CustomObjectsApi, namespace: str, poll_s: float = 0.02):
        self.api, self.namespace, self.poll_s = api, namespace, poll_s
        self.revisions: dict[str, KnativeRevisions] = defaultdict(KnativeRevisions)
        self.reported: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                self.reconcile()
        except BaseException as error:  # raised again on exit
            self.error = error

    def reconcile(self) -> None:
        found = self.api.list_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices"
        )
        for obj in found["items"]:
            name, generation = obj["metadata"]["name"], obj["metadata"]["generation"]
            if self.reported.get(name) == generation:
                continue
            if deployment_mode_of(obj) == SERVERLESS:
                obj["status"] = self.revisions[name].status(obj)
            else:
                obj["status"] = standard_status(obj)
            try:
                self.api.replace_namespaced_custom_object_status(
                    "serving.kserve.io", "v1beta1", self.namespace, "inferenceservices", name, obj
                )
            except ApiException as error:
                if error.status != 409:
                    raise
                continue
            self.reported[name] = generation
