"""Whether and how a monitoring run retrains, and the one-line JSON each outcome reports.

The monitoring pipeline branches on `retraining_route` at the pipeline level (`dsl.If` /
`dsl.Elif` / `dsl.Else`), so the UI shows which branch ran; every branch ends in a JSON
summary with an `action`, which the pipeline returns as one output (`dsl.OneOf`).
"""

from __future__ import annotations

import json

RETRAIN_MODES = ("nested", "api")
"""nested: the training pipeline runs inside the monitoring run (local runs, small clusters);
api: a separate run of the uploaded training pipeline is started through the KFP API."""


class RetrainModeError(ValueError):
    """A retraining mode that is neither "nested" nor "api"."""


def retraining_route(drift_detected: bool, mode: str) -> str:
    """ "nested" or "api" when the window drifted, "none" otherwise; the mode is checked always."""
    if mode not in RETRAIN_MODES:
        raise RetrainModeError(f"retrain_mode {mode!r}: expected one of {RETRAIN_MODES}")
    return mode if drift_detected else "none"


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


def not_retrained_summary(drift_share: float) -> str:
    """The `retraining` output of a window that did not drift."""
    return json.dumps(
        {"action": "none", "reason": f"no drift detected (drift share {drift_share:.3f})"},
        sort_keys=True,
    )
