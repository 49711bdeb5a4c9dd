"""Drift thresholds written as data (`ctloop.components.drift.detection` applies them).

Policy JSON (every key optional, a blank text is the default policy; thresholds given for a
feature override the default ones)::

    {
      "default":    {"psi": 0.2, "js_distance": 0.1, "ks_statistic": 0.1, "cramers_v": 0.1,
                     "unseen_share": 0.01, "missing_rate_change": 0.05},
      "features":   {"tenure": {"psi": 0.3}, "customer_id": {"psi": null, "js_distance": null}},
      "prediction": {"ks_statistic": 0.05},
      "feature_weights": {"tenure": 0.4, "contract": 0.3},
      "drift_share": 0.3,
      "false_alarm_rate": 0.001,
      "include_prediction": true,
      "all_missing_drifts": true,
      "performance": {"estimated_roc_auc": {"min": 0.7}, "estimated_log_loss": {"max": 0.6},
                      "max_drop": {"roc_auc": 0.05, "accuracy": 0.03}}
    }

A threshold of null switches that measure off for the feature (it is still reported). A
feature is drifted when any measure exceeds its threshold; the dataset has drifted when the
share of drifted features, weighted by `feature_weights` when given (features it does not
name then weigh 0, as a feature with no importance would), exceeds `drift_share`, or, with
`include_prediction`, when the model's score distribution drifted, or, with
`all_missing_drifts`, when a feature the reference has values of is missing in every row of
the window (and weighs above 0): the model then sees none of it, which is a broken upstream
field or join rather than a shift of the population, and one such feature among thirty would
otherwise stay far below `drift_share`.

Why these defaults. Every threshold is an effect size, so a decision means the same at 1k
rows and at 100M (p-values would flag any trivial difference on large windows):

- psi 0.2: the credit-scoring convention (< 0.1 stable, 0.1-0.25 some shift, > 0.25 major);
  0.2 is where practitioners act. A 0.5-std mean shift of a normal feature scores ~0.24
  over ten quantile bins.
- js_distance 0.1, in bits (base 2): for small shifts PSI ~ 8 ln2 JS^2, so this fires at
  PSI ~0.055, well below the PSI rule; it is what catches spread changes that PSI misses
  (std x1.5 scores JS ~0.19 but PSI ~0.19 < 0.2). Evidently's default is the same number
  but not the same threshold: Evidently 0.7.23 calls scipy's `jensenshannon` with base=None,
  the natural log, where a distance is sqrt(ln 2) ~ 0.83 of the same distance in bits, so its
  0.1 is ~0.12 in bits and ctloop's 0.1 is the stricter of the two.
- ks_statistic 0.1: the CDFs differ by ten percentage points somewhere, i.e. a tenth of the
  population crossed some quantile; a 0.5-std mean shift gives 0.20.
- cramers_v 0.1: Cohen's "small" effect (w = 0.1) for category shares; doubling the share of
  one category of ten gives ~0.13.
- unseen_share 0.01: 1 % of non-missing values in categories the model never saw (they all
  reach the model as one unknown category).
- missing_rate_change 0.05: five percentage points more (or fewer) missing values, usually a
  broken upstream join or field.
- drift_share 0.3: retraining is cheap next to a model quietly degrading, so a third of the
  features drifting (one of three, three of ten) is enough.

The `performance` section bounds the model's quality as estimated from its scores on the window
(`performance_estimate`; the profile must carry the test split's calibration): a floor or
ceiling on an estimated metric (`estimated_roc_auc`, `estimated_accuracy`, `estimated_log_loss`,
each with `min` and/or `max`), and the largest worsening against the test split's metric
(`max_drop`: a fall of roc_auc or accuracy, a rise of log_loss). It decides the performance
alert, not drift; empty (the default), it decides nothing.

Small windows are noisy: `false_alarm_rate` (per measure, feature and window; default 0.001)
sets how often sampling alone may cross a threshold; detection raises each threshold to the
noise bound for that rate at the window's and the reference's sizes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ctloop.components.data.calibration import LABEL_METRICS
from ctloop.components.json_parameter import (
    json_number,
    json_object,
    parse_json_parameter,
    reject_unknown_keys,
)


class DriftPolicyError(ValueError):
    """A drift policy that is not valid JSON, breaks the policy's shape, or names no feature."""


@dataclass(frozen=True)
class Thresholds:
    """Effect-size thresholds of one feature (None: the measure decides nothing)."""

    psi: float | None = 0.2
    js_distance: float | None = 0.1
    ks_statistic: float | None = 0.1
    cramers_v: float | None = 0.1
    unseen_share: float | None = 0.01
    missing_rate_change: float | None = 0.05


@dataclass(frozen=True)
class PerformanceBounds:
    """Bounds on the estimated quality (None: no bound).

    Attributes:
        estimated: Per metric, the (min, max) its estimate must lie within.
        max_drop: Per metric, the most it may worsen from the test split's value.
    """

    estimated: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    max_drop: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.estimated or self.max_drop)


@dataclass(frozen=True)
class DriftPolicy:
    """A parsed, checked drift policy (shape and defaults in the module docstring)."""

    default: Thresholds = field(default_factory=Thresholds)
    features: dict[str, Thresholds] = field(default_factory=dict)
    prediction: Thresholds = field(default_factory=Thresholds)
    feature_weights: dict[str, float] | None = None
    drift_share: float = 0.3
    false_alarm_rate: float = 0.001
    include_prediction: bool = True
    all_missing_drifts: bool = True
    performance: PerformanceBounds = field(default_factory=PerformanceBounds)

    def thresholds(self, feature: str) -> Thresholds:
        return self.features.get(feature, self.default)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_THRESHOLD_KEYS = tuple(item.name for item in fields(Thresholds))
# PSI is unbounded above; every other measure is a share or a distance in [0, 1].
_THRESHOLD_MAXIMUM = {key: (math.inf if key == "psi" else 1.0) for key in _THRESHOLD_KEYS}
_ROOT_KEYS = (
    "default",
    "features",
    "prediction",
    "feature_weights",
    "drift_share",
    "false_alarm_rate",
    "include_prediction",
    "all_missing_drifts",
    "performance",
)
_PERFORMANCE_KEYS = (*(f"estimated_{name}" for name in LABEL_METRICS), "max_drop")


def parse_drift_policy(text: str) -> DriftPolicy:
    """Parse and check a policy JSON text (shape in the module docstring); blank is the
    default policy.

    Raises:
        DriftPolicyError: naming the key, the value and the rule it breaks.
    """
    root = parse_json_parameter(text, "drift policy", DriftPolicyError, default={})
    reject_unknown_keys(root, _ROOT_KEYS, "drift policy", DriftPolicyError)
    default = _thresholds(root.get("default", {}), Thresholds(), "default")
    features = {
        name: _thresholds(rule, default, f"features.{name}")
        for name, rule in json_object(
            root.get("features", {}), "features", DriftPolicyError
        ).items()
    }
    prediction = _thresholds(root.get("prediction", {}), default, "prediction")
    weights = None
    if "feature_weights" in root:
        weights = {
            name: _number(value, f"feature_weights.{name}", low=0.0, high=math.inf)
            for name, value in json_object(
                root["feature_weights"], "feature_weights", DriftPolicyError
            ).items()
        }
        if not weights or sum(weights.values()) <= 0:
            raise DriftPolicyError(
                f"feature_weights = {json.dumps(root['feature_weights'])} must give at least "
                "one feature a weight above 0"
            )
    return DriftPolicy(
        default=default,
        features=features,
        prediction=prediction,
        feature_weights=weights,
        drift_share=_number(
            root.get("drift_share", 0.3), "drift_share", low=0.0, high=1.0, high_open=True
        ),
        false_alarm_rate=_number(
            root.get("false_alarm_rate", 0.001),
            "false_alarm_rate",
            low=0.0,
            high=0.5,
            low_open=True,
            high_open=True,
        ),
        include_prediction=_flag(root, "include_prediction"),
        all_missing_drifts=_flag(root, "all_missing_drifts"),
        performance=_performance(root.get("performance", {})),
    )


def _performance(section: Any) -> PerformanceBounds:
    """The `performance` section: estimated_<metric> {min, max}, max_drop {metric: amount}.
    ROC AUC and accuracy lie in [0, 1]; log loss is unbounded above."""
    section = json_object(section, "performance", DriftPolicyError)
    reject_unknown_keys(section, _PERFORMANCE_KEYS, "performance", DriftPolicyError)
    estimated = {}
    for name in LABEL_METRICS:
        key = f"estimated_{name}"
        if key not in section:
            continue
        where = f"performance.{key}"
        rule = json_object(section[key], where, DriftPolicyError)
        reject_unknown_keys(rule, ("min", "max"), where, DriftPolicyError)
        if not rule:
            raise DriftPolicyError(f"{where} needs a min or a max")
        high = math.inf if name == "log_loss" else 1.0
        low, top = (
            None
            if rule.get(side) is None
            else _number(rule[side], f"{where}.{side}", low=0.0, high=high)
            for side in ("min", "max")
        )
        if low is not None and top is not None and low > top:
            raise DriftPolicyError(f"{where}: min {low:g} is above max {top:g}")
        estimated[name] = (low, top)
    drops = json_object(section.get("max_drop", {}), "performance.max_drop", DriftPolicyError)
    reject_unknown_keys(drops, LABEL_METRICS, "performance.max_drop", DriftPolicyError)
    max_drop = {
        name: _number(value, f"performance.max_drop.{name}", low=0.0, high=math.inf)
        for name, value in drops.items()
    }
    return PerformanceBounds(estimated=estimated, max_drop=max_drop)


def _flag(root: dict[str, Any], key: str) -> bool:
    """A true/false key of the policy, true when absent."""
    value = root.get(key, True)
    if not isinstance(value, bool):
        raise DriftPolicyError(f"{key} = {json.dumps(value)} must be true or false")
    return value


def _thresholds(rule: Any, base: Thresholds, where: str) -> Thresholds:
    rule = json_object(rule, where, DriftPolicyError)
    reject_unknown_keys(rule, _THRESHOLD_KEYS, where, DriftPolicyError)
    values = {
        key: None
        if value is None
        else _number(value, f"{where}.{key}", low=0.0, high=_THRESHOLD_MAXIMUM[key], low_open=True)
        for key, value in rule.items()
    }
    return replace(base, **values)


def _number(value: Any, where: str, **bounds: float | bool) -> float:
    """`json_number` with this module's error and its interval wording ("must be in (0, 1]")."""
    return json_number(value, where, DriftPolicyError, interval_notation=True, **bounds)
