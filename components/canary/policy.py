"""The canary policy: what a canary must hold to be promoted, as data, and its parser.

The policy is a JSON text because KFP carries it as a pipeline parameter the UI shows and
edits; parsing it here, before any traffic is watched, makes a typo fail at once with the
section, key and value named. Every key is optional; a blank policy means
`DEFAULT_CANARY_POLICY`::

    {
      "bake_time_s": 300,          # observe this long before promoting
      "step_s": 30,                # check this often; a failed check rolls back at once
      "min_requests": 100,         # canary requests needed before any check decides
      "inconclusive": "rollback",  # too few requests after the bake time: "rollback" | "promote"
      "error_rate":     {"max": 0.05, "max_increase": 0.01},
      "latency_p99_ms": {"max": 250, "max_increase_relative": 0.5},
      "score_shift":    {"psi_max": 0.2, "ks_max": 0.1, "false_alarm_rate": 0.001}
    }

- error_rate: the share of the canary's requests that did not succeed: outcome `invalid`
  (HTTP 400) and `error` (HTTP 500) both count. The router splits the same traffic between
  the two versions, so a canary that rejects requests the primary scores (a changed feature
  schema, a tighter batch limit) is as broken for its callers as one that crashes. `max` is
  an absolute ceiling; `max_increase` the most it may exceed the primary's rate, which keeps
  callers' own bad requests (rejected by both) from failing the canary.
- latency_p99_ms: the 99th percentile of the successful requests' latency, from the latency
  histogram. `max` in milliseconds; `max_increase_relative` as a fraction of the primary's
  p99 (0.5: at most 1.5 times as slow). Both must hold when both are given.
- score_shift: how far the canary's score distribution (the score histogram's buckets) is
  from the primary's on the same traffic: PSI and the binned KS statistic of
  `ctloop.components.drift.statistics`. As in drift detection, the threshold applied is
  max(threshold, no-difference noise bound at `false_alarm_rate`) for the two row counts.

How the checks are applied and what they lead to is `ctloop.components.canary.decision`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctloop.components.json_parameter import (
    json_number,
    json_object,
    parse_json_parameter,
    reject_unknown_keys,
)

# The verdicts of an analysis; the first two are also the actions, which the policy's
# `inconclusive` chooses between.
PROMOTE = "promote"
ROLLBACK = "rollback"
INCONCLUSIVE = "inconclusive"

DEFAULT_CANARY_POLICY: dict[str, Any] = {
    "bake_time_s": 300,
    "step_s": 30,
    "min_requests": 100,
    "inconclusive": ROLLBACK,
    "error_rate": {"max_increase": 0.01},
    "latency_p99_ms": {"max_increase_relative": 0.5},
    "score_shift": {"psi_max": 0.2},
}
"""The policy a blank policy text means, as the JSON a pipeline parameter carries."""


class CanaryPolicyError(ValueError):
    """A canary policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class ErrorRateRule:
    max: float | None = None
    max_increase: float | None = None


@dataclass(frozen=True)
class LatencyRule:
    max: float | None = None
    max_increase_relative: float | None = None


@dataclass(frozen=True)
class ScoreShiftRule:
    psi_max: float | None = None
    ks_max: float | None = None
    false_alarm_rate: float = 0.001


@dataclass(frozen=True)
class CanaryPolicy:
    """A parsed, checked canary policy (shape in the module docstring)."""

    bake_time_s: float = 300.0
    step_s: float = 30.0
    min_requests: float = 100.0
    inconclusive: str = ROLLBACK
    error_rate: ErrorRateRule | None = None
    latency_p99_ms: LatencyRule | None = None
    score_shift: ScoreShiftRule | None = None


# Section -> (rule class, {key: (low, high)}); every bound is inclusive.
_SECTIONS: dict[str, tuple[type, dict[str, tuple[float, float]]]] = {
    "error_rate": (ErrorRateRule, {"max": (0.0, 1.0), "max_increase": (0.0, 1.0)}),
    "latency_p99_ms": (
        LatencyRule,
        {"max": (0.0, math.inf), "max_increase_relative": (0.0, math.inf)},
    ),
    "score_shift": (
        ScoreShiftRule,
        {"psi_max": (0.0, math.inf), "ks_max": (0.0, 1.0), "false_alarm_rate": (1e-12, 0.5)},
    ),
}
_SCALARS = {
    "bake_time_s": (0.0, math.inf),
    "step_s": (1e-3, math.inf),
    "min_requests": (0.0, math.inf),
}
_ROOT_KEYS = (*_SCALARS, "inconclusive", *_SECTIONS)


def parse_canary_policy(text: str) -> CanaryPolicy:
    """Parse and check a policy JSON text; blank means `DEFAULT_CANARY_POLICY`.

    Raises:
        CanaryPolicyError: naming the section, key and value that break the shape.
    """
    root = parse_json_parameter(
        text, "canary policy", CanaryPolicyError, default=DEFAULT_CANARY_POLICY
    )
    reject_unknown_keys(root, _ROOT_KEYS, "canary policy", CanaryPolicyError)
    scalars = {
        key: _number(root, key, "canary policy", *bounds)
        for key, bounds in _SCALARS.items()
        if key in root
    }
    inconclusive = root.get("inconclusive", ROLLBACK)
    if inconclusive not in (ROLLBACK, PROMOTE):
        raise CanaryPolicyError(
            f"canary policy: 'inconclusive' = {json.dumps(inconclusive)} must be "
            f'"{ROLLBACK}" or "{PROMOTE}" (what too few requests after the bake time leads to)'
        )
    sections = {}
    for name, (rule_class, keys) in _SECTIONS.items():
        if name not in root:
            continue
        section = json_object(root[name], f"'{name}'", CanaryPolicyError)
        reject_unknown_keys(section, tuple(keys), f"'{name}'", CanaryPolicyError)
        thresholds = [key for key in keys if key != "false_alarm_rate"]
        if not any(key in section for key in thresholds):
            raise CanaryPolicyError(f"'{name}' needs at least one of {', '.join(thresholds)}")
        sections[name] = rule_class(
            **{key: _number(section, key, name, *keys[key]) for key in keys if key in section}
        )
    return CanaryPolicy(**scalars, inconclusive=inconclusive, **sections)


def _number(section: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    return json_number(section[key], f"{where}: {key!r}", CanaryPolicyError, low=low, high=high)
