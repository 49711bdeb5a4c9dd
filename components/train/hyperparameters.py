"""XGBoost hyperparameters: task defaults, a checked JSON override, and the training device.

A pipeline run takes its hyperparameters as one JSON string. A typo in a key or a value out of
range would otherwise surface as an opaque XGBoost error deep inside a GPU job (or, worse, be
ignored), so every key is checked here against an explicit allow-list with its type and range
before any data is read.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xgboost

from ctloop.components.json_parameter import parse_json_parameter

TASKS = ("binary", "regression")
DEVICES = ("auto", "cuda", "cpu")


class HyperparameterError(ValueError):
    """A hyperparameter text, key, value or device that cannot be used for training."""


def _task_defaults(task: str) -> dict[str, Any]:
    binary = task == "binary"
    return {
        "objective": "binary:logistic" if binary else "reg:squarederror",
        "eval_metric": ["auc", "logloss"] if binary else ["rmse"],
        "max_depth": 6,
        "eta": 0.1,
        "num_boost_round": 500,
        "early_stopping_rounds": 30,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "min_child_weight": 1.0,
        "reg_lambda": 1.0,
        "max_cat_to_onehot": 4,
        "tree_method": "hist",
        "seed": 0,
        "max_bin": 256,
    }


DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {task: _task_defaults(task) for task in TASKS}
"""Defaults per task. The last `eval_metric` is the one early stopping watches."""

_OBJECTIVES = {
    # Evaluation and the gate read binary scores as probabilities, so only the logistic
    # objective fits that task.
    "binary": ("binary:logistic",),
    "regression": (
        "reg:squarederror",
        "reg:absoluteerror",
        "reg:pseudohubererror",
        "reg:squaredlogerror",
        "reg:gamma",
        "reg:tweedie",
        "count:poisson",
    ),
}


@dataclass(frozen=True)
class _Rule:
    kind: type  # int, float or str ("eval_metric" is special-cased)
    check: Callable[[Any], bool] | None = None
    description: str = ""
    nullable: bool = False


def _open_closed(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: low < v <= high


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


_RULES: dict[str, _Rule] = {
    "objective": _Rule(str),
    "eval_metric": _Rule(list),
    "eta": _Rule(float, _open_closed(0.0, 1.0), "in (0, 1]"),
    "max_depth": _Rule(int, _at_least(0), ">= 0 (0 means no limit, lossguide only)"),
    "max_leaves": _Rule(int, _at_least(0), ">= 0"),
    "num_boost_round": _Rule(int, _at_least(1), ">= 1"),
    "early_stopping_rounds": _Rule(int, _at_least(1), ">= 1 (null disables)", nullable=True),
    "subsample": _Rule(float, _open_closed(0.0, 1.0), "in (0, 1]"),
    "colsample_bytree": _Rule(float, _open_closed(0.0, 1.0), "in (0, 1]"),
    "colsample_bylevel": _Rule(float, _open_closed(0.0, 1.0), "in (0, 1]"),
    "colsample_bynode": _Rule(float, _open_closed(0.0, 1.0), "in (0, 1]"),
    "min_child_weight": _Rule(float, _at_least(0.0), ">= 0"),
    "gamma": _Rule(float, _at_least(0.0), ">= 0"),
    "reg_lambda": _Rule(float, _at_least(0.0), ">= 0"),
    "reg_alpha": _Rule(float, _at_least(0.0), ">= 0"),
    "max_delta_step": _Rule(float, _at_least(0.0), ">= 0"),
    "scale_pos_weight": _Rule(float, lambda v: v > 0, "> 0"),
    "base_score": _Rule(float),
    "max_cat_to_onehot": _Rule(int, _at_least(1), ">= 1"),
    "max_cat_threshold": _Rule(int, _at_least(1), ">= 1"),
    "max_bin": _Rule(int, _at_least(2), ">= 2"),
    "grow_policy": _Rule(str, lambda v: v in ("depthwise", "lossguide"), "depthwise or lossguide"),
    # The trainer builds QuantileDMatrix objects, which only the histogram method consumes.
    "tree_method": _Rule(
        str, lambda v: v == "hist", "hist (the streamed QuantileDMatrix needs it)"
    ),
    "num_parallel_tree": _Rule(int, _at_least(1), ">= 1"),
    "nthread": _Rule(int, _at_least(0), ">= 0 (0 means all cores)"),
    "seed": _Rule(int),
    "tweedie_variance_power": _Rule(float, lambda v: 1.0 < v < 2.0, "in (1, 2)"),
    "huber_slope": _Rule(float, lambda v: v > 0, "> 0"),
}


def parse_hyperparameters(text: str, task: str) -> dict[str, Any]:
    """Merge a JSON object of overrides over the task's defaults and check every value.

    Args:
        text: A JSON object such as `{"max_depth": 8, "eta": 0.05}`; empty or blank means
            "defaults only".
        task: "binary" or "regression".

    Returns:
        A new dict: the defaults with the overrides applied (`eval_metric` always a list).

    Raises:
        HyperparameterError: naming the key, the value and the rule it breaks.
    """
    if task not in TASKS:
        raise HyperparameterError(f"task {task!r} is not supported; expected one of {TASKS}")
    params = dict(DEFAULT_HYPERPARAMETERS[task])
    params["eval_metric"] = list(params["eval_metric"])
    overrides = parse_json_parameter(text, "hyperparameters", HyperparameterError, default={})
    for key, value in overrides.items():
        params[key] = _checked(key, value, task)
    return params


def _checked(key: str, value: Any, task: str) -> Any:
    rule = _RULES.get(key)
    if rule is None:
        raise HyperparameterError(
            f"unknown hyperparameter {key!r}; allowed keys: {', '.join(sorted(_RULES))}"
        )
    if value is None:
        if rule.nullable:
            return None
        raise HyperparameterError(f"hyperparameter {key!r} must not be null")
    if key == "eval_metric":
        return _checked_eval_metric(value)
    if key == "objective":
        if value not in _OBJECTIVES[task]:
            raise HyperparameterError(
                f"hyperparameter 'objective' = {value!r} does not fit task {task!r}; "
                f"allowed: {', '.join(_OBJECTIVES[task])}"
            )
        return value
    value = _checked_type(key, value, rule.kind)
    if rule.check is not None and not rule.check(value):
        raise HyperparameterError(f"hyperparameter {key!r} = {value!r} must be {rule.description}")
    return value


def _checked_type(key: str, value: Any, kind: type) -> Any:
    # JSON booleans are Python ints; they are never a meaningful number of anything here.
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str and isinstance(value, str):
        return value
    if kind is int and is_number and isinstance(value, int):
        return value
    if kind is float and is_number:
        if not math.isfinite(value):
            raise HyperparameterError(f"hyperparameter {key!r} = {value!r} must be finite")
        return float(value)
    expected = {int: "an integer", float: "a number", str: "a string"}[kind]
    raise HyperparameterError(
        f"hyperparameter {key!r} = {value!r} must be {expected}, got {type(value).__name__}"
    )


def _checked_eval_metric(value: Any) -> list[str]:
    metrics = [value] if isinstance(value, str) else value
    if (
        not isinstance(metrics, list)
        or not metrics
        or not all(isinstance(m, str) and m for m in metrics)
    ):
        raise HyperparameterError(
            f"hyperparameter 'eval_metric' = {value!r} must be a metric name or a non-empty "
            "list of metric names (the last one drives early stopping)"
        )
    return list(metrics)


def resolve_device(device: str) -> str:
    """Turn the pipeline's device choice into XGBoost's `device` parameter.

    "auto" picks "cuda" only when this XGBoost build has CUDA support *and* a GPU is visible
    to the process, so the same image trains on GPU nodes and still runs on a laptop.

    Raises:
        HyperparameterError: for anything other than "auto", "cuda" or "cpu".
    """
    if device not in DEVICES:
        raise HyperparameterError(f"device {device!r} is not supported; expected one of {DEVICES}")
    if device != "auto":
        return device
    return "cuda" if xgboost.build_info().get("USE_CUDA") and _gpu_visible() else "cpu"


def _gpu_visible() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is not None:
        try:
            listing = subprocess.run(
                [nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return listing.returncode == 0 and "GPU" in listing.stdout
    return os.path.exists("/dev/nvidia0")
