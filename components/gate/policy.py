"""The quality gate's policy: what a candidate must meet, written as data.

Modelled on TFX Evaluator's blessing: value thresholds on the candidate's own metrics, change
thresholds (with a direction and a tolerance) against the current champion, and a limit on
scoring time (`ctloop.components.gate.decision` applies them).

Policy JSON (every section optional; metric names are the keys of the evaluation's metrics;
a blank text means the task's `DEFAULT_GATE_POLICY`)::

    {
      "thresholds": {                      # value thresholds: at least one of min / max
        "roc_auc":  {"min": 0.7},
        "log_loss": {"max": 0.6}
      },
      "champion_comparison": {             # change thresholds against the champion
        "roc_auc":  {"direction": "higher", "max_regression": 0.01},
        "log_loss": {"direction": "lower",  "max_regression": 0.02},
        "rmse":     {"direction": "lower",  "max_regression_relative": 0.02}
      },
      "latency": {"max_ratio_to_champion": 1.5, "median_ms_max": 50.0}
    }

`direction` says which way is better. `max_regression` is the absolute amount the candidate
may be worse than the champion, `max_regression_relative` the same as a fraction of the
champion's value; both are >= 0, both must hold when both are given, and 0 applies when
neither is.

Latency is the median time of scoring a 1000-row batch, candidate and champion timed in the
same process with their calls interleaved (`ctloop.components.evaluate.latency`).
`max_ratio_to_champion` (> 0) bounds the candidate's median at that multiple of the
champion's (skipped, and said so, when there is no champion); `median_ms_max` is an absolute
budget in milliseconds, applied only when a policy sets it, since an absolute figure measures
the node as much as the model. The defaults set only the ratio: on a node whose CPUs are
shared, a fixed budget refused good first models.
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

DEFAULT_GATE_POLICY: dict[str, dict[str, Any]] = {
    "binary": {
        "thresholds": {"roc_auc": {"min": 0.6}, "log_loss": {"max": 0.7}},
        "champion_comparison": {"roc_auc": {"direction": "higher", "max_regression": 0.005}},
        "latency": {"max_ratio_to_champion": 1.5},
    },
    "regression": {
        "champion_comparison": {"rmse": {"direction": "lower", "max_regression_relative": 0.02}},
        "latency": {"max_ratio_to_champion": 1.5},
    },
}
"""Default policy per task, as the JSON a pipeline parameter carries (`json.dumps` it)."""


class GatePolicyError(ValueError):
    """A gate policy text that is not valid JSON or breaks the policy's shape."""


@dataclass(frozen=True)
class Bounds:
    """Value thresholds of one metric."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ChampionRule:
    """How much worse than the champion one metric may get."""

    direction: str
    max_regression: float | None = None
    max_regression_relative: float | None = None


@dataclass(frozen=True)
class LatencyRule:
    """Limits on the candidate's median scoring time: a multiple of the champion's, and an
    absolute budget in milliseconds."""

    max_ratio_to_champion: float | None = None
    median_ms_max: float | None = None


@dataclass(frozen=True)
class GatePolicy:
    """A parsed, checked gate policy."""

    thresholds: dict[str, Bounds]
    champion_comparison: dict[str, ChampionRule]
    latency: LatencyRule | None = None


_SECTIONS = ("thresholds", "champion_comparison", "latency")
_DIRECTIONS = ("higher", "lower")
_LATENCY_KEYS = ("max_ratio_to_champion", "median_ms_max")


def parse_gate_policy(text: str, task: str | None = None) -> GatePolicy:
    """Parse and check a policy JSON text (shape in the module docstring).

    Args:
        text: Policy JSON, or blank for `DEFAULT_GATE_POLICY[task]`.
        task: The evaluation's task, whose default a blank text means.

    Raises:
        GatePolicyError: naming the section, metric, key and value that break the shape, or
            the task when the text is blank and the task has no default.
    """
    if not text.strip() and task not in DEFAULT_GATE_POLICY:
        raise GatePolicyError(
            f"no policy given and evaluation task {task!r} has no default; "
            f"defaults exist for {', '.join(DEFAULT_GATE_POLICY)}"
        )
    root = parse_json_parameter(
        text, "gate policy", GatePolicyError, default=DEFAULT_GATE_POLICY.get(task, {})
    )
    reject_unknown_keys(root, _SECTIONS, "gate policy", GatePolicyError)
    thresholds = {
        metric: _bounds(metric, rule)
        for metric, rule in json_object(
            root.get("thresholds", {}), "'thresholds'", GatePolicyError
        ).items()
    }
    comparison = {
        metric: _champion_rule(metric, rule)
        for metric, rule in json_object(
            root.get("champion_comparison", {}), "'champion_comparison'", GatePolicyError
        ).items()
    }
    latency = None
    if "latency" in root:
        section = json_object(root["latency"], "'latency'", GatePolicyError)
        reject_unknown_keys(section, _LATENCY_KEYS, "'latency'", GatePolicyError)
        latency = LatencyRule(
            max_ratio_to_champion=_number(
                section, "max_ratio_to_champion", "latency", minimum=0.0, open_minimum=True
            ),
            median_ms_max=_number(section, "median_ms_max", "latency", minimum=0.0),
        )
    return GatePolicy(thresholds=thresholds, champion_comparison=comparison, latency=latency)


def _number(
    section: Mapping[str, Any],
    key: str,
    where: str,
    *,
    minimum: float = -math.inf,
    open_minimum: bool = False,
) -> float | None:
    if key not in section:
        return None
    return json_number(
        section[key], f"{where}: {key!r}", GatePolicyError, low=minimum, low_open=open_minimum
    )


def _bounds(metric: str, rule: Any) -> Bounds:
    where = f"thresholds.{metric}"
    rule = json_object(rule, where, GatePolicyError)
    reject_unknown_keys(rule, ("min", "max"), where, GatePolicyError)
    bounds = Bounds(min=_number(rule, "min", where), max=_number(rule, "max", where))
    if bounds.min is None and bounds.max is None:
        raise GatePolicyError(f"{where} needs 'min' or 'max' (or both)")
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        raise GatePolicyError(f"{where}: min {bounds.min:g} is greater than max {bounds.max:g}")
    return bounds


def _champion_rule(metric: str, rule: Any) -> ChampionRule:
    where = f"champion_comparison.{metric}"
    rule = json_object(rule, where, GatePolicyError)
    reject_unknown_keys(
        rule, ("direction", "max_regression", "max_regression_relative"), where, GatePolicyError
    )
    direction = rule.get("direction")
    if direction not in _DIRECTIONS:
        raise GatePolicyError(
            f'{where}: \'direction\' = {json.dumps(direction)} must be "higher" or "lower" '
            "(which way the metric improves)"
        )
    return ChampionRule(
        direction=direction,
        max_regression=_number(rule, "max_regression", where, minimum=0.0),
        max_regression_relative=_number(rule, "max_regression_relative", where, minimum=0.0),
    )
