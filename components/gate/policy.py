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
      "latency": {"max_ratio_to_champion": 1.5, "median_ms_max": 50.0},
      "slices": {                          # binary tasks: the same, per group of a column
        "categorical": ["contract", "female"],
        "numeric": {"tenure": 4},           # cut into 4 quantile bins of the test rows
        "min_rows": 30,                     # smaller groups are reported, not judged
        "thresholds": {"roc_auc": {"min": 0.6}},
        "champion_comparison": {"tpr": {"direction": "higher", "max_regression": 0.05}},
        "max_gap": {"female": {"tpr": 0.1, "selection_rate": 0.15}},
        "unjudged_gap": "fail"              # a gap that cannot be measured fails (default: skip)
      }
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

`slices` looks inside the test rows (`ctloop.components.evaluate.slices` computes the figures
and `ctloop.components.gate.slice_checks` judges them): a model can be good overall and bad
for one group. `categorical` columns make a group of each value, `numeric` ones (column ->
number of bins, 2 to 50) are cut at the test rows' quantiles, the champion's rows at the same cut
points; missing values are a group of their own. Every group of at least `min_rows` rows
(default 30) must meet `thresholds` and not regress against the champion's same group beyond
`champion_comparison`; their metrics are those of `SLICE_METRICS`. `max_gap` bounds, per
slice column, the largest difference between its judged groups in true-positive rate (equal
opportunity), false-positive rate or selection rate (demographic parity), each in [0, 1]. A
gap needs two judged groups with the metric defined; when there are fewer (one group holds
nearly every row, `min_rows` is above the test rows), `unjudged_gap` says what happens: "skip"
(the default) reports the check as skipped, "fail" fails it, for teams whose fairness rules
must never be turned off by the data. The evaluation must be given the same policy, so that it
slices the columns the gate judges.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
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


SLICE_METRICS = ("roc_auc", "accuracy", "tpr", "fpr", "selection_rate")
"""What a slice's `thresholds` and `champion_comparison` may name: the figures of each group."""
GAP_METRICS = ("tpr", "fpr", "selection_rate")
"""What `max_gap` may bound: rates whose difference between groups is a fairness measure."""
DEFAULT_MIN_SLICE_ROWS = 30
MAX_SLICE_BINS = 50
"""The most quantile bins a numeric slice column may ask for: as many groups as a categorical
column may have (`slice_metrics`' max_categories); more would be groups too small to judge, and
a mistyped huge count would make the cut points alone fill the memory."""


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
class SlicePolicy:
    """Which columns to slice and what each group, and the gap between groups, must meet."""

    categorical: tuple[str, ...] = ()
    numeric: dict[str, int] = field(default_factory=dict)
    min_rows: int = DEFAULT_MIN_SLICE_ROWS
    thresholds: dict[str, Bounds] = field(default_factory=dict)
    champion_comparison: dict[str, ChampionRule] = field(default_factory=dict)
    max_gap: dict[str, dict[str, float]] = field(default_factory=dict)
    unjudged_gap: str = "skip"
    """What a `max_gap` rule that cannot be measured does: "skip" or "fail"."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Every slice column, categorical ones first."""
        return (*self.categorical, *self.numeric)

    def to_json(self) -> dict[str, Any]:
        """The section as parsed (defaults filled in), as the evaluation records it."""
        document = asdict(self)
        document["categorical"] = list(self.categorical)
        return document


@dataclass(frozen=True)
class GatePolicy:
    """A parsed, checked gate policy."""

    thresholds: dict[str, Bounds]
    champion_comparison: dict[str, ChampionRule]
    latency: LatencyRule | None = None
    slices: SlicePolicy | None = None


_SECTIONS = ("thresholds", "champion_comparison", "latency", "slices")
_SLICE_KEYS = (
    "categorical",
    "numeric",
    "min_rows",
    "thresholds",
    "champion_comparison",
    "max_gap",
    "unjudged_gap",
)
UNJUDGED_GAP = ("skip", "fail")
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
    slices = None
    if "slices" in root:
        if task == "regression":
            raise GatePolicyError("'slices' judge binary classifiers only; the task is regression")
        slices = _slice_policy(root["slices"])
    return GatePolicy(
        thresholds=thresholds, champion_comparison=comparison, latency=latency, slices=slices
    )


def _slice_policy(value: Any) -> SlicePolicy:
    section = json_object(value, "'slices'", GatePolicyError)
    reject_unknown_keys(section, _SLICE_KEYS, "'slices'", GatePolicyError)
    categorical = section.get("categorical", [])
    if not isinstance(categorical, list) or not all(isinstance(c, str) and c for c in categorical):
        raise GatePolicyError(
            f"slices.categorical = {json.dumps(categorical)} must be a list of column names"
        )
    numeric = {
        column: _count(bins, f"slices.numeric.{column}", minimum=2, maximum=MAX_SLICE_BINS)
        for column, bins in json_object(
            section.get("numeric", {}), "slices.numeric", GatePolicyError
        ).items()
    }
    columns = [*categorical, *numeric]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise GatePolicyError(f"slices: column(s) {repeated} named more than once")
    if not columns:
        raise GatePolicyError("'slices' names no column: give 'categorical' or 'numeric'")
    rules = {}
    for key in ("thresholds", "champion_comparison"):
        rules[key] = json_object(section.get(key, {}), f"slices.{key}", GatePolicyError)
        reject_unknown_keys(rules[key], SLICE_METRICS, f"slices.{key}", GatePolicyError)
    return SlicePolicy(
        categorical=tuple(categorical),
        numeric=numeric,
        min_rows=_count(section.get("min_rows", DEFAULT_MIN_SLICE_ROWS), "slices.min_rows"),
        thresholds={m: _bounds(m, r, "slices.thresholds") for m, r in rules["thresholds"].items()},
        champion_comparison={
            m: _champion_rule(m, r, "slices.champion_comparison")
            for m, r in rules["champion_comparison"].items()
        },
        max_gap=_max_gaps(section.get("max_gap", {}), columns),
        unjudged_gap=_unjudged_gap(section.get("unjudged_gap", "skip")),
    )


def _unjudged_gap(value: Any) -> str:
    if value not in UNJUDGED_GAP:
        raise GatePolicyError(
            f"slices.unjudged_gap = {json.dumps(value)} must be one of {', '.join(UNJUDGED_GAP)}"
        )
    return value


def _max_gaps(value: Any, columns: list[str]) -> dict[str, dict[str, float]]:
    section = json_object(value, "slices.max_gap", GatePolicyError)
    unsliced = [column for column in section if column not in columns]
    if unsliced:
        raise GatePolicyError(
            f"slices.max_gap names column(s) {unsliced} that are not slice columns; "
            f"slice columns: {', '.join(columns)}"
        )
    gaps = {}
    for column, bounds in section.items():
        where = f"slices.max_gap.{column}"
        bounds = json_object(bounds, where, GatePolicyError)
        reject_unknown_keys(bounds, GAP_METRICS, where, GatePolicyError)
        gaps[column] = {
            metric: json_number(bound, f"{where}.{metric}", GatePolicyError, low=0.0, high=1.0)
            for metric, bound in bounds.items()
        }
    return gaps


def _count(value: Any, where: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number of at least `minimum` and at most `maximum` (true and 2.5 are refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        most = "" if maximum is None else f" and <= {maximum}"
        raise GatePolicyError(
            f"{where} = {json.dumps(value)} must be a whole number >= {minimum}{most}"
        )
    return value


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


def _bounds(metric: str, rule: Any, section: str = "thresholds") -> Bounds:
    where = f"{section}.{metric}"
    rule = json_object(rule, where, GatePolicyError)
    reject_unknown_keys(rule, ("min", "max"), where, GatePolicyError)
    bounds = Bounds(min=_number(rule, "min", where), max=_number(rule, "max", where))
    if bounds.min is None and bounds.max is None:
        raise GatePolicyError(f"{where} needs 'min' or 'max' (or both)")
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        raise GatePolicyError(f"{where}: min {bounds.min:g} is greater than max {bounds.max:g}")
    return bounds


def _champion_rule(metric: str, rule: Any, section: str = "champion_comparison") -> ChampionRule:
    where = f"{section}.{metric}"
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
