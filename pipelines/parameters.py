"""Pipeline arguments from the command line: `--param key=value`, typed by the pipeline.

The pipeline's own parameter types decide how a value is read (an Integer parameter
gets an int, a List a JSON list), so a typo fails here, naming the parameter, instead
of as a type error deep inside a step.
"""

import importlib
import json

from kfp.dsl.base_component import BaseComponent

from ctloop.components.image import SERVING_RUNTIME
from ctloop.pipelines.rollout import AB, CANARY, ROLLOUT_STRATEGIES
from ctloop.pipelines.training import SINGLE, TRAINERS, TRAINJOB


class ParameterError(ValueError):
    """A `--param` that names no parameter or whose value does not fit its type."""


def _coerce(name: str, kfp_type: str, text: str):
    try:
        if kfp_type == "Integer":
            return int(text)
        if kfp_type == "Float":
            return float(text)
        if kfp_type == "Boolean":
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ValueError("expected true or false")
            return lowered == "true"
        if kfp_type in ("List", "Struct"):
            value = json.loads(text)
            expected = list if kfp_type == "List" else dict
            if not isinstance(value, expected):
                raise ValueError(f"expected a JSON {expected.__name__}")
            return value
    except ValueError as error:
        raise ParameterError(
            f"--param {name}={text!r}: not a valid {kfp_type} ({error})"
        ) from error
    return text


IR_TYPES = {
    "STRING": "String",
    "NUMBER_INTEGER": "Integer",
    "NUMBER_DOUBLE": "Float",
    "BOOLEAN": "Boolean",
    "LIST": "List",
    "STRUCT": "Struct",
}
"""Compiled pipeline spec (`parameterType`) → the SDK type names `_coerce` reads."""


def parse_params(pipeline: BaseComponent, pairs: list[str]) -> dict:
    """`["min_rows=500", "drop_columns=[\\"id\\"]"]` → typed arguments for `pipeline`."""
    inputs = pipeline.component_spec.inputs or {}
    return parse_typed_params({name: spec.type for name, spec in inputs.items()}, pairs)


def compiled_parameter_types(pipeline_spec: dict) -> dict[str, str]:
    """Parameter name → SDK type name, read from a compiled pipeline spec (as KFP stores it)."""
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)  # with a platform spec beside it
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: IR_TYPES.get(p.get("parameterType"), "String") for name, p in parameters.items()}


def parse_typed_params(types: dict[str, str], pairs: list[str]) -> dict:
    """Typed arguments from `key=value` pairs, given each parameter's SDK type name."""
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ParameterError(f"--param {pair!r}: expected key=value")
        if name not in types:
            raise ParameterError(
                f"--param {name}: the pipeline has no such parameter; known: "
                + ", ".join(sorted(types))
            )
        arguments[name] = _coerce(name, types[name], text)
    return arguments


JSON_PARSERS = {
    "hyperparameters": ("ctloop.components.train.hyperparameters", "parse_hyperparameters"),
    "gate_policy": ("ctloop.components.gate.policy", "parse_gate_policy"),
    "drift_policy": ("ctloop.components.drift.policy", "parse_drift_policy"),
    "canary_policy": ("ctloop.components.canary.policy", "parse_canary_policy"),
    "shadow_policy": ("ctloop.components.shadow.policy", "parse_shadow_policy"),
    "ab_policy": ("ctloop.components.experiment.policy", "parse_experiment_policy"),
    "serving_capacity": ("ctloop.components.deploy.serving_capacity", "parse_serving_capacity"),
}
"""JSON parameter -> (module, parser). A parser is imported only when its parameter is given:
some of these modules import XGBoost or the Kubernetes client, which cost a run that sets none
of them seconds before its inputs are even looked at."""
TASK_PARSERS = ("hyperparameters", "gate_policy")
"""The parsers whose defaults and rules depend on the task."""


def check_json_arguments(arguments: dict) -> None:
    """Parse the JSON-valued pipeline parameters now, before any step runs.

    The steps parse them again where they are used; checking here means a typo in a
    policy fails in a second with the key and rule named, not after a training run. Each
    parser reads a blank text as its default, so a blank value is checked like any other.
    A gate policy's metrics must be ones the evaluation reports for the task: the gate
    alone would find a misspelt one only after training, as a failed check. The rollout
    parameters are checked together first (`check_rollout_arguments`), and so are the
    trainer's (`check_trainer_arguments`).
    """
    check_rollout_arguments(arguments)
    check_trainer_arguments(arguments)
    task = arguments.get("task", "binary")
    for name, (module, function) in JSON_PARSERS.items():
        if name not in arguments:
            continue
        parse = getattr(importlib.import_module(module), function)
        parsed = parse(arguments[name], task) if name in TASK_PARSERS else parse(arguments[name])
        if name == "gate_policy":
            _check_gate_metrics(parsed, task)


def evaluation_metric_names(task: str) -> list[str]:
    """The metrics the evaluation reports for `task`, read off the functions that compute
    them (scored on two rows), so the list cannot fall behind them."""
    import numpy as np

    from ctloop.components.evaluate.metrics import classification_metrics, regression_metrics

    if task == "binary":
        return sorted(classification_metrics(np.array([0, 1]), np.array([0.25, 0.75])))
    return sorted(regression_metrics(np.array([0.0, 1.0]), np.array([0.0, 1.0])))


def _check_gate_metrics(policy, task: str) -> None:
    known = evaluation_metric_names(task)
    for section, rules in (
        ("thresholds", policy.thresholds),
        ("champion_comparison", policy.champion_comparison),
    ):
        unknown = [metric for metric in rules if metric not in known]
        if unknown:
            raise ParameterError(
                f"--param gate_policy: {section}.{unknown[0]}: the {task} evaluation has no "
                f"metric {unknown[0]!r}; it reports {', '.join(known)}"
            )


def check_rollout_arguments(arguments: dict) -> None:
    """Refuse a rollout the deploy step would refuse only after training: an unknown strategy,
    an A/B share that leaves the champion nothing, an A/B rollout without a prediction log,
    or a shadow or A/B rollout on a serving runtime other than ctloop's (which does not know
    the shadow and variant arguments). Parameters not given keep the pipeline's defaults.
    """
    strategy = arguments.get("rollout_strategy", CANARY)
    if strategy not in ROLLOUT_STRATEGIES:
        raise ParameterError(
            f"--param rollout_strategy={strategy!r}: not one of {', '.join(ROLLOUT_STRATEGIES)}"
        )
    percent = arguments.get("ab_traffic_percent", 50)
    if not 1 <= percent <= 99:
        raise ParameterError(
            f"--param ab_traffic_percent={percent}: outside 1..99 (the champion keeps the rest)"
        )
    if strategy == CANARY:
        return
    runtime = arguments.get("serving_runtime", SERVING_RUNTIME)
    if runtime != SERVING_RUNTIME:
        raise ParameterError(
            f"--param rollout_strategy={strategy}: needs ctloop's serving runtime "
            f"{SERVING_RUNTIME!r}, not serving_runtime={runtime!r}: only ctloop's predictor "
            "runs a shadow or tags and logs A/B variants"
        )
    if strategy == AB and not arguments.get("prediction_log_uri"):
        raise ParameterError(
            "--param rollout_strategy=ab: needs --param prediction_log_uri=<path or URI> "
            "where the variants log their predictions for the A/B analysis"
        )


def check_trainer_arguments(arguments: dict) -> None:
    """Refuse a trainer the train step would refuse only once the data is split: an unknown
    one, a TrainJob with nowhere to publish its model, or one without a worker."""
    trainer = arguments.get("trainer", SINGLE)
    if trainer not in TRAINERS:
        raise ParameterError(f"--param trainer={trainer!r}: not one of {', '.join(TRAINERS)}")
    if trainer != TRAINJOB:
        return
    if not arguments.get("trainjob_output_uri"):
        raise ParameterError(
            "--param trainer=trainjob: needs --param trainjob_output_uri=<folder URI>, e.g. "
            "s3://bucket/ctloop/trainjobs, which the TrainJob's workers write the model to and "
            "the pipeline reads it back from"
        )
    nodes = arguments.get("trainjob_nodes", 2)
    if nodes < 1:
        raise ParameterError(f"--param trainjob_nodes={nodes}: a TrainJob needs at least 1 node")
    gpus = arguments.get("trainjob_gpus_per_node", 1)
    if gpus < 0:
        raise ParameterError(f"--param trainjob_gpus_per_node={gpus}: below 0")


def check_local_trainer(arguments: dict) -> None:
    """Refuse `trainer=trainjob` in a kfp.local run, which trains in one process only."""
    if arguments.get("trainer", SINGLE) != SINGLE:
        raise ParameterError(
            f"--param trainer={arguments['trainer']}: a local run trains in one process only "
            "(trainer=single); a TrainJob needs a cluster with Kubeflow Trainer (--host)"
        )
