"""Whether and how a monitoring run retrains, why, and the one-line JSON each outcome reports.

Three triggers, any one of which retrains:

- drift: the drift step found the window drifted from the champion's reference profile;
- performance: the label-free performance estimate of the champion on the window crossed the
  drift policy's bound (the drift step's `performance_alert`);
- data volume: the window holds at least `min_new_labelled_rows` rows with a label. The window's
  rows arrived after the champion's training data, so its labelled rows are outcomes the
  champion never learnt from; enough of them is worth a new model even when nothing moved.
  `min_new_labelled_rows` 0 turns this trigger off.

(A schedule is the fourth trigger: the recurring run itself.) The route says which triggers
fired and, for the others, what was checked and found below its trigger, and is written as a
decision record (`ctloop.components.decisions.record`) that pins the four figures and the
mode, so `replay_route` takes the same decision again from the record alone.

The monitoring pipeline branches on the route at the pipeline level (`dsl.If` / `dsl.Elif` /
`dsl.Else`), so the UI shows which branch ran; every branch ends in a JSON summary with an
`action`, which the pipeline returns as one output (`dsl.OneOf`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.components.decisions.record import DecisionRecord, new_record, write_record

RETRAIN_MODES = ("nested", "api")
"""nested: the training pipeline runs inside the monitoring run (local runs, small clusters);
api: a separate run of the uploaded training pipeline is started through the KFP API."""

NO_RETRAINING = "none"
TRIGGERS = ("drift", "performance", "data_volume")
ROUTE_INPUTS = (
    "drift_detected",
    "performance_alert",
    "labelled_rows",
    "min_new_labelled_rows",
    "retrain_mode",
)
"""What the route reads, all of it pinned in its decision record."""


class RetrainModeError(ValueError):
    """A retraining mode that is neither "nested" nor "api"."""


class RouteInputError(ValueError):
    """A row count that is negative or not a whole number, a flag that is not a bool, or a
    record lacking an input."""


@dataclass(frozen=True)
class RetrainingRoute:
    """The branch a monitoring run takes and why.

    Attributes:
        route: "nested" or "api" (the mode) when a trigger fired, "none" otherwise.
        triggers: The triggers that fired, in `TRIGGERS` order.
        reasons: One sentence per trigger: why it fired, or what was found below it.
        inputs: The figures and mode the route read (`ROUTE_INPUTS`).
    """

    route: str
    triggers: tuple[str, ...]
    reasons: tuple[str, ...]
    inputs: Mapping[str, Any]

    def outcome(self) -> dict[str, Any]:
        """The decision as a record's outcome (what replay compares)."""
        return {"route": self.route, "triggers": list(self.triggers)}


def retraining_route(
    drift_detected: bool,
    mode: str,
    *,
    performance_alert: bool = False,
    labelled_rows: int = 0,
    min_new_labelled_rows: int = 0,
) -> RetrainingRoute:
    """The route of a monitoring run (see the module docstring); the mode is checked always.

    Raises:
        RetrainModeError: a mode not in `RETRAIN_MODES`.
        RouteInputError: a negative or fractional row count, or a flag that is not a bool.
    """
    if mode not in RETRAIN_MODES:
        raise RetrainModeError(f"retrain_mode {mode!r}: expected one of {RETRAIN_MODES}")
    labelled_rows = _row_count(labelled_rows, "labelled_rows")
    min_new_labelled_rows = _row_count(min_new_labelled_rows, "min_new_labelled_rows")
    drift_detected = _flag(drift_detected, "drift_detected")
    performance_alert = _flag(performance_alert, "performance_alert")
    enough_rows = 0 < min_new_labelled_rows <= labelled_rows
    fired = {"drift": drift_detected, "performance": performance_alert, "data_volume": enough_rows}
    triggers = tuple(name for name in TRIGGERS if fired[name])
    reasons = (
        "drift detected in the window" if drift_detected else "no drift detected in the window",
        "the performance estimate crossed its bound"
        if performance_alert
        else "the performance estimate is within its bound",
        _volume_reason(labelled_rows, min_new_labelled_rows, enough_rows),
    )
    return RetrainingRoute(
        route=mode if triggers else NO_RETRAINING,
        triggers=triggers,
        reasons=reasons,
        inputs={
            "drift_detected": drift_detected,
            "performance_alert": performance_alert,
            "labelled_rows": labelled_rows,
            "min_new_labelled_rows": min_new_labelled_rows,
            "retrain_mode": mode,
        },
    )


def _flag(value: Any, name: str) -> bool:
    """`value` if it is a bool: a record's "false" (a string) must not read as true."""
    if not isinstance(value, bool):
        raise RouteInputError(f"{name} {value!r}: expected true or false")
    return value


def _row_count(value: Any, name: str) -> int:
    """`value` as a row count; a float that is whole is accepted (kfp.local hands integers
    collected from other tasks over as floats)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise RouteInputError(f"{name} {value!r}: expected a whole number of rows")
    if value < 0:
        raise RouteInputError(f"{name} {value!r}: expected 0 or more rows")
    return int(value)


def _volume_reason(labelled_rows: int, minimum: int, enough: bool) -> str:
    if minimum == 0:
        return (
            f"{labelled_rows} new labelled rows; no data-volume trigger (min_new_labelled_rows 0)"
        )
    relation = ">=" if enough else "<"
    return f"{labelled_rows} new labelled rows {relation} min_new_labelled_rows {minimum}"


def replay_route(inputs: Mapping[str, Any], policy: str) -> tuple[dict[str, Any], list[str]]:
    """Take a recorded route again from its pinned inputs with the running code.

    Args:
        inputs: A retraining_route record's `inputs` (`ROUTE_INPUTS`).
        policy: The record's policy text; the route has none (the mode is an input), so it is
            not read.

    Returns:
        The outcome and reasons, as a fresh record would hold them.

    Raises:
        RouteInputError: an input missing from the record, or a bad row count.
        RetrainModeError: a mode the running code does not know.
    """
    missing = [name for name in ROUTE_INPUTS if name not in inputs]
    if missing:
        raise RouteInputError(f"retraining_route record lacks input(s) {missing}")
    route = retraining_route(
        inputs["drift_detected"],
        inputs["retrain_mode"],
        performance_alert=inputs["performance_alert"],
        labelled_rows=inputs["labelled_rows"],
        min_new_labelled_rows=inputs["min_new_labelled_rows"],
    )
    return route.outcome(), list(route.reasons)


def route_record(
    route: RetrainingRoute, *, registered_model: str = "", kfp_run_id: str = ""
) -> DecisionRecord:
    """The decision record of `route`: about the champion of `registered_model`, in a KFP run."""
    return new_record(
        "retraining_route",
        subject={"registered_model": registered_model, "kfp_run_id": kfp_run_id},
        inputs=route.inputs,
        policy="",
        outcome=route.outcome(),
        reasons=route.reasons,
    )


def run_retraining_route(
    route: RetrainingRoute,
    record_path: str,
    *,
    registered_model: str = "",
    kfp_run_id: str = "",
    mlflow_tracking_uri: str = "",
) -> str:
    """Put `route` on record (the file, and MLflow when a tracking URI is given); its branch.

    The record is written before anything is logged, so a tracking server that fails leaves the
    step failed with its record still in the run's artifacts.
    """
    record = route_record(route, registered_model=registered_model, kfp_run_id=kfp_run_id)
    write_record(record, record_path)
    if mlflow_tracking_uri:
        from ctloop.components.decisions.store import log_record

        log_record(mlflow_tracking_uri, record)
    fired = ", ".join(route.triggers) or "no trigger"
    print(f"retraining route: {route.route} ({fired}): " + "; ".join(route.reasons))
    return route.route


def retrained_summary(gate_passed: bool, gate_failures: str, metrics: str, deployment: str) -> str:
    """The nested training run's outcome as the monitoring run's `retraining` output."""
    return json.dumps(
        {
            "action": "retrained",
            "gate_passed": gate_passed,
            "gate_failures": json.loads(gate_failures),
            "metrics": json.loads(metrics),
            "deployment": json.loads(deployment),
        },
        sort_keys=True,
    )


def not_retrained_summary(
    drift_share: float,
    *,
    performance_alert: bool = False,
    labelled_rows: int = 0,
    min_new_labelled_rows: int = 0,
) -> str:
    """The `retraining` output of a window that fired no trigger: what each trigger found."""
    route = retraining_route(
        False,
        RETRAIN_MODES[0],
        performance_alert=performance_alert,
        labelled_rows=labelled_rows,
        min_new_labelled_rows=min_new_labelled_rows,
    )
    reasons = [f"no drift detected (drift share {drift_share:.3f})", *route.reasons[1:]]
    return json.dumps({"action": "none", "reason": "; ".join(reasons)}, sort_keys=True)
