import pytest

from ctloop.components.train import hyperparameters
from ctloop.components.train.hyperparameters import (
    DEFAULT_HYPERPARAMETERS,
    HyperparameterError,
    parse_hyperparameters,
    resolve_device,
)


def test_defaults_depend_on_task():
    binary = parse_hyperparameters("", "binary")
    regression = parse_hyperparameters("{}", "regression")
    assert binary["objective"] == "binary:logistic"
    assert binary["eval_metric"] == ["auc", "logloss"]
    assert regression["objective"] == "reg:squarederror"
    assert regression["eval_metric"] == ["rmse"]
    for params in (binary, regression):
        assert params["max_depth"] == 6
        assert params["eta"] == 0.1
        assert params["num_boost_round"] == 500
        assert params["early_stopping_rounds"] == 30
        assert params["tree_method"] == "hist"
        assert params["max_bin"] == 256


def test_overrides_merge_over_defaults_without_touching_them():
    params = parse_hyperparameters(
        '{"max_depth": 8, "eta": 0.05, "eval_metric": "auc", "early_stopping_rounds": null}',
        "binary",
    )
    assert params["max_depth"] == 8
    assert params["eta"] == 0.05
    assert params["eval_metric"] == ["auc"]
    assert params["early_stopping_rounds"] is None
    assert params["subsample"] == 0.9
    assert DEFAULT_HYPERPARAMETERS["binary"]["max_depth"] == 6


def test_integer_given_for_float_parameter_becomes_float():
    assert parse_hyperparameters('{"eta": 1}', "binary")["eta"] == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"max_depth": 8,', "not valid JSON: Expecting property name"),
        ('{"max_depth" 8}', "line 1 column 14 (char 13)"),
        ("[1, 2]", "hyperparameters must be a JSON object, got [1, 2]"),
        ('{"max_dpeth": 3}', "unknown hyperparameter 'max_dpeth'; allowed keys: "),
        ('{"device": "cuda"}', "unknown hyperparameter 'device'"),
        ('{"max_depth": 2.5}', "'max_depth' = 2.5 must be an integer, got float"),
        ('{"max_depth": true}', "'max_depth' = True must be an integer, got bool"),
        ('{"eta": "fast"}', "'eta' = 'fast' must be a number, got str"),
        ('{"eta": NaN}', "'eta' = nan must be finite"),
        ('{"eta": 0}', "'eta' = 0.0 must be in (0, 1]"),
        ('{"eta": 1.5}', "'eta' = 1.5 must be in (0, 1]"),
        ('{"max_depth": -1}', "'max_depth' = -1 must be >= 0"),
        ('{"subsample": 0}', "'subsample' = 0.0 must be in (0, 1]"),
        ('{"num_boost_round": 0}', "'num_boost_round' = 0 must be >= 1"),
        ('{"num_boost_round": null}', "'num_boost_round' must not be null"),
        ('{"tree_method": "exact"}', "'tree_method' = 'exact' must be hist"),
        ('{"objective": "reg:squarederror"}', "does not fit task 'binary'"),
        ('{"eval_metric": []}', "'eval_metric' = [] must be a metric name or a non-empty list"),
    ],
)
def test_bad_hyperparameters_are_rejected_with_key_value_and_rule(text, message):
    with pytest.raises(HyperparameterError) as raised:
        parse_hyperparameters(text, "binary")
    assert message in str(raised.value)


def test_unknown_task_is_rejected():
    with pytest.raises(HyperparameterError, match="task 'multiclass' is not supported"):
        parse_hyperparameters("{}", "multiclass")


def test_explicit_devices_pass_through():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda") == "cuda"


def test_unknown_device_is_rejected():
    with pytest.raises(HyperparameterError, match="device 'gpu' is not supported"):
        resolve_device("gpu")


def test_auto_device_is_cpu_when_cuda_is_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_device("auto") == "cpu"


def test_auto_device_is_cuda_when_build_and_gpu_allow(monkeypatch):
    monkeypatch.setattr(hyperparameters, "_gpu_visible", lambda: True)
    monkeypatch.setattr(hyperparameters.xgboost, "build_info", lambda: {"USE_CUDA": True})
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(hyperparameters.xgboost, "build_info", lambda: {"USE_CUDA": False})
    assert resolve_device("auto") == "cpu"
