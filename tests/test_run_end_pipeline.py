"""A pipeline that ends with a word: the body inside a dsl.ExitHandler, its parameters kept,
compiled and run through kfp.local with a webhook on 127.0.0.1."""

from typing import NamedTuple

import pytest
from kfp import compiler, dsl, local

from ctloop.components.notify.component import notify_run_end
from ctloop.pipelines.monitoring import build_monitoring_pipeline
from ctloop.pipelines.run_end import with_run_end_word
from ctloop.pipelines.training import build_training_pipeline
from tests.compiled_spec import pipeline_spec

HOOK = "/hooks/run-end"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def count_rows(rows: int, fail: bool) -> int:
    if fail:
        raise ValueError(f"{rows} rows: too few")
    return rows


class BodyOutputs(NamedTuple):
    rows: int


@dsl.pipeline(name="counting", description="Count the rows.")
def counting(rows: int = 3, fail: bool = False) -> BodyOutputs:
    """Count the rows.

    Args:
        rows: How many rows.
        fail: Whether the step fails.
    """
    return BodyOutputs(rows=count_rows(rows=rows, fail=fail).output)


def _compiled(pipeline, tmp_path) -> dict:
    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    return pipeline_spec(tmp_path / "p.yaml")


def test_the_notified_pipeline_keeps_the_bodys_name_and_parameters_and_adds_the_words(tmp_path):
    spec = _compiled(
        with_run_end_word(counting, notify_run_end, webhook_secret="chat-webhook"), tmp_path
    )
    assert spec["pipelineInfo"]["name"] == "counting"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert sorted(parameters) == ["fail", "kfp_ui_url", "rows", "webhook_url"]
    assert parameters["rows"]["defaultValue"] == 3 and parameters["rows"]["description"] == (
        "How many rows."
    )
    assert parameters["webhook_url"]["defaultValue"] == ""
    assert parameters["kfp_ui_url"]["description"].startswith("Base URL of the KFP UI")
    word = spec["root"]["dag"]["tasks"]["notify-run-end"]
    assert word["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    status = word["inputs"]["parameters"]["status"]
    assert status == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert spec["root"]["dag"]["tasks"]["exit-handler-1"]["taskInfo"]["name"] == "run"
    assert word["cachingOptions"] == {}  # never cached
    executor = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (secret,) = executor["exec-notify-run-end"]["secretAsEnv"]
    assert secret["secretName"] == "chat-webhook" and secret["optional"] is True
    assert secret["keyToEnv"] == [{"secretKey": "url", "envVar": "CTLOOP_NOTIFY_WEBHOOK_URL"}]


def test_a_body_with_a_parameter_of_the_same_name_is_refused():
    @dsl.pipeline(name="clash")
    def clash(webhook_url: str = ""):
        count_rows(rows=1, fail=False)

    with pytest.raises(ValueError, match=r"clash already has parameter\(s\) \['webhook_url'\]"):
        with_run_end_word(clash, notify_run_end)


@pytest.mark.parametrize(("fail", "state"), [(False, "SUCCEEDED"), (True, "FAILED")])
def test_the_word_arrives_after_the_body_ran_under_kfp_local(tmp_path, httpserver, fail, state):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        raise_on_error=False,
    )
    notified = with_run_end_word(counting, notify_run_end, summary="rows counted")
    notified(rows=5, fail=fail, webhook_url=httpserver.url_for(HOOK))
    ((request, _),) = httpserver.log
    message = request.get_json()
    assert message["text"].startswith(f"counting {'failed' if fail else 'succeeded'}: run ")
    assert message["blocks"][1]["fields"][2]["text"] == f"*Status*\n{state}"
    assert message["blocks"][-1]["text"]["text"] == "*Decided*\nrows counted"


@pytest.mark.parametrize("build", [build_training_pipeline, build_monitoring_pipeline])
def test_the_training_and_monitoring_pipelines_wrap_with_every_parameter_described(tmp_path, build):
    body = build()
    spec = _compiled(with_run_end_word(body, notify_run_end), tmp_path)
    body_spec = _compiled(body, tmp_path)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == {*body.component_spec.inputs, "webhook_url", "kfp_ui_url"}
    assert [
        name for name, parameter in parameters.items() if not parameter.get("description")
    ] == []
    assert sorted(spec["root"]["dag"]["tasks"]) == ["exit-handler-1", "notify-run-end"]
    # The body's Kubernetes settings (the train step's GPU nodes) come along unchanged.
    executors = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, settings in body_spec["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"
    ].items():
        assert executors[name] == settings
