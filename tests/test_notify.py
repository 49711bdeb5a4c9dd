"""A word when a run ends: the message, its delivery to a webhook on 127.0.0.1, and the exit
task under kfp.local.

Deliveries go to pytest-httpserver (answering 200 or 500), to a port that accepts and never
answers, and to a port where nothing listens; none of them may raise, and no log line may
carry the webhook's secret path.
"""

import json
import logging

import pytest
from kfp import compiler, dsl, local
from werkzeug import Response

from ctloop.components.notify.component import notify_run_end
from ctloop.components.notify.message import RunEnd, run_end_message, run_url
from ctloop.components.notify.run_end import run_notification
from ctloop.components.notify.webhook import WEBHOOK_ENV, masked, post_message
from tests.unanswering_endpoint import closed_port_url, silent_endpoint

SECRET_PATH = "/services/T0001/B0002/s3cr3tT0k3n"
SUCCEEDED = RunEnd(pipeline="ctloop-training", state="SUCCEEDED", run_id="r-42", run_name="nightly")
FAILED = RunEnd(
    pipeline="ctloop-monitoring",
    state="FAILED",
    run_id="r-43",
    run_name="hourly",
    failed_task="exit-handler-1",
    error_message="Task exit-handler-1 failed.",
)


def _texts(message: dict) -> str:
    return json.dumps(message["blocks"])


def _client_log(caplog) -> str:
    """What the posting side logged (the stand-in server's own access log left out)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))


# -- the message ---------------------------------------------------------------------------


def test_a_succeeded_run_says_so_with_what_was_decided_and_a_link():
    summary = json.dumps({"gate": "passed", "model_version": 7, "checks": ["auc", "slices"]})
    message = run_end_message(SUCCEEDED, summary, "https://kf.example.com/_/pipeline/")
    link = "https://kf.example.com/_/pipeline/#/runs/details/r-42"
    assert message["text"] == f"ctloop-training succeeded: run nightly ({link})"
    header, run, decided, linked = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":white_check_mark: ctloop-training succeeded",
            "emoji": True,
        },
    }
    assert [field["text"] for field in run["fields"]] == [
        "*Run*\nnightly",
        "*Run id*\n`r-42`",
        "*Status*\nSUCCEEDED",
    ]
    assert decided["text"]["text"] == (
        '*Decided*\n• *gate*: passed\n• *model_version*: 7\n• *checks*: ["auc", "slices"]'
    )
    assert linked["text"]["text"] == f"<{link}|Open the run in Kubeflow Pipelines>"


def test_a_failed_run_shows_the_error_and_no_decided_block_without_a_summary():
    message = run_end_message(FAILED)
    assert message["text"] == "ctloop-monitoring failed: run hourly"
    assert message["blocks"][0]["text"]["text"] == ":x: ctloop-monitoring failed"
    assert message["blocks"][2]["text"]["text"] == "*Error*\nTask exit-handler-1 failed."
    assert len(message["blocks"]) == 3  # no summary, no KFP UI URL: no such blocks


@pytest.mark.parametrize(
    ("state", "title", "error_shown"),
    [
        ("CACHED", ":white_check_mark: ctloop-monitoring succeeded (from cache)", False),
        ("CANCELED", ":no_entry_sign: ctloop-monitoring was cancelled", True),
        ("PAUSED", ":grey_question: ctloop-monitoring paused", True),
    ],
)
def test_every_state_kfp_may_hand_over_is_said_in_words(state, title, error_shown):
    run = RunEnd(pipeline="ctloop-monitoring", state=state, failed_task="exit-handler-1")
    blocks = run_end_message(run)["blocks"]
    assert blocks[0]["text"]["text"] == title
    shown = [block["text"]["text"] for block in blocks[2:]]
    assert shown == (["*Error*\ntask exit-handler-1 did not succeed"] if error_shown else [])


def test_run_text_is_escaped_and_cut_to_slacks_limits():
    hostile = RunEnd(pipeline="p" * 200, state="FAILED", run_name="<!channel> & co")
    message = run_end_message(hostile, '["<https://evil|click>"]' + "", "")
    blocks = message["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and blocks[0]["text"]["text"].endswith("…")
    assert blocks[1]["fields"][0]["text"] == "*Run*\n&lt;!channel&gt; &amp; co"
    assert "<https://evil" not in _texts(message)
    long_summary = run_end_message(SUCCEEDED, "x" * 5000)
    assert len(long_summary["blocks"][2]["text"]["text"]) == 3000


def test_a_plain_text_summary_is_shown_as_it_is():
    message = run_end_message(SUCCEEDED, "drift share 0.31: retrained")
    assert message["blocks"][2]["text"]["text"] == "*Decided*\ndrift share 0.31: retrained"


def test_a_summary_nested_too_deep_for_json_is_shown_as_text():
    nested = "[" * 100_000
    message = run_end_message(SUCCEEDED, nested)
    assert message["blocks"][2]["text"]["text"].startswith("*Decided*\n[[[")


def test_the_run_url_needs_a_base_url_and_a_run_id():
    assert run_url("https://kf/pipeline", "abc") == "https://kf/pipeline/#/runs/details/abc"
    assert run_url("", "abc") == "" and run_url("https://kf", "") == ""


# -- delivery ------------------------------------------------------------------------------


def test_the_message_is_posted_as_json_to_the_webhook(httpserver, capsys):
    httpserver.expect_request(SECRET_PATH, method="POST").respond_with_data("ok")
    delivery = run_notification(SUCCEEDED, url=httpserver.url_for(SECRET_PATH), summary='{"a": 1}')
    assert delivery.sent and delivery.status == 200
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.get_json() == run_end_message(SUCCEEDED, '{"a": 1}')
    out = capsys.readouterr().out
    assert out == (
        f"run-end notification (ctloop-training succeeded) sent: webhook "
        f"http://{httpserver.host}:{httpserver.port}/*** answered HTTP 200\n"
    )


def test_a_webhook_answering_500_is_retried_then_logged_without_failing(httpserver, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(SECRET_PATH).respond_with_response(Response("boom", status=500))
    delivery = run_notification(FAILED, url=httpserver.url_for(SECRET_PATH), backoff_s=0.01)
    assert not delivery.sent and delivery.status == 500
    assert len(httpserver.log) == 3
    out = capsys.readouterr().out
    assert out == (
        f"run-end notification (ctloop-monitoring failed) not sent: webhook "
        f"http://{httpserver.host}:{httpserver.port}/*** answered HTTP 500 after 3 attempts; "
        "the run's status is not affected\n"
    )
    assert "s3cr3t" not in _client_log(caplog)  # urllib3 logs each retry with the path


def test_a_webhook_answering_400_is_not_retried(httpserver):
    httpserver.expect_request(SECRET_PATH).respond_with_data("invalid_blocks", status=400)
    delivery = post_message(httpserver.url_for(SECRET_PATH), {"text": "x"}, backoff_s=0.01)
    assert (delivery.sent, delivery.status, len(httpserver.log)) == (False, 400, 1)


def test_a_webhook_that_never_answers_is_given_up_after_the_timeout_and_not_resent(capsys):
    with silent_endpoint() as endpoint:
        delivery = run_notification(SUCCEEDED, url=endpoint.url + SECRET_PATH, timeout_s=0.3)
        assert len(endpoint.connections) == 1
    assert not delivery.sent and delivery.status is None
    out = capsys.readouterr().out
    assert "not sent: webhook http://127.0.0.1:" in out and "/***: no answer within 0.3 s" in out
    assert SECRET_PATH not in out and "s3cr3t" not in out


def test_a_port_where_nothing_listens_is_tried_three_times_then_logged(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    delivery = run_notification(FAILED, url=closed_port_url() + SECRET_PATH, backoff_s=0.01)
    assert not delivery.sent
    out = capsys.readouterr().out
    assert "/***: cannot connect (3 attempts); the run's status is not affected" in out
    assert "s3cr3t" not in out + _client_log(caplog)


def test_no_webhook_configured_sends_nothing_and_says_so(monkeypatch, capsys):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    delivery = run_notification(SUCCEEDED)
    assert not delivery.sent
    assert capsys.readouterr().out == (
        "run-end notification (ctloop-training succeeded) not sent: no webhook URL configured "
        f"(webhook_url or {WEBHOOK_ENV}); the run's status is not affected\n"
    )


def test_the_webhook_may_come_from_the_environment(httpserver, monkeypatch):
    httpserver.expect_request(SECRET_PATH, method="POST").respond_with_data("ok")
    monkeypatch.setenv(WEBHOOK_ENV, httpserver.url_for(SECRET_PATH))
    assert run_notification(SUCCEEDED).sent
    assert len(httpserver.log) == 1


def test_a_url_that_is_not_http_is_refused_without_showing_it():
    delivery = post_message("hooks.slack.com" + SECRET_PATH, {"text": "x"})
    assert not delivery.sent
    assert delivery.detail == "the webhook URL is not an http(s) URL with a host: nothing sent"


@pytest.mark.parametrize(
    "url", ["https://hooks.slack.com:99999" + SECRET_PATH, "https://[::1" + SECRET_PATH]
)
def test_a_url_that_does_not_parse_is_refused_without_failing_the_step(url):
    delivery = post_message(url, {"text": "x"})
    assert not delivery.sent
    assert delivery.detail == "the webhook URL is not an http(s) URL with a host: nothing sent"
    assert masked(url) == "?://?/***"


def test_masked_keeps_scheme_host_and_port_only():
    assert masked("https://hooks.slack.com" + SECRET_PATH) == "https://hooks.slack.com/***"
    assert masked("http://user:pw@127.0.0.1:8080/x?token=1") == "http://127.0.0.1:8080/***"


# -- the component -------------------------------------------------------------------------


def test_the_component_reads_kfps_final_status(httpserver):
    httpserver.expect_request(SECRET_PATH, method="POST").respond_with_data("ok")
    status = dsl.PipelineTaskFinalStatus(
        state="FAILED",
        pipeline_job_resource_name="projects/p/locations/l/pipelineJobs/r-43",
        pipeline_task_name="exit-handler-1",
        error_code=1,
        error_message="Task exit-handler-1 failed.",
    )
    outcome = json.loads(
        notify_run_end.python_func(
            status=status,
            pipeline_name="ctloop-monitoring",
            webhook_url=httpserver.url_for(SECRET_PATH),
            run_id="r-43",
            run_name="hourly",
        )
    )
    assert outcome["sent"] is True
    ((request, _),) = httpserver.log
    assert request.get_json() == run_end_message(FAILED)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def body_step(fail: bool) -> str:
    if fail:
        raise RuntimeError("the body failed")
    return "done"


@dsl.pipeline(name="notified")
def notified(fail: bool, webhook_url: str):
    word = notify_run_end(
        pipeline_name="notified",
        webhook_url=webhook_url,
        summary='{"decided": "nothing"}',
        kfp_ui_url="https://kf.example.com/pipeline",
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    with dsl.ExitHandler(word):
        body_step(fail=fail)


def test_the_exit_task_compiles_with_the_final_status_filled_in_by_kfp(tmp_path):
    compiler.Compiler().compile(notified, str(tmp_path / "notified.yaml"))
    spec = (tmp_path / "notified.yaml").read_text()
    assert "taskFinalStatus" in spec and "ALL_UPSTREAM_TASKS_COMPLETED" in spec


@pytest.mark.parametrize(("fail", "state"), [(False, "SUCCEEDED"), (True, "FAILED")])
def test_kfp_local_runs_the_exit_handler_after_the_body_succeeds_or_fails(
    tmp_path, httpserver, fail, state
):
    httpserver.expect_request(SECRET_PATH, method="POST").respond_with_data("ok")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        raise_on_error=False,
    )
    notified(fail=fail, webhook_url=httpserver.url_for(SECRET_PATH))
    ((request, _),) = httpserver.log
    message = request.get_json()
    run_name = message["blocks"][1]["fields"][0]["text"].removeprefix("*Run*\n")
    assert run_name.startswith("notified-")  # the placeholder resolved to the local run's name
    assert message["blocks"][1]["fields"][2]["text"] == f"*Status*\n{state}"
    assert message["blocks"][-2]["text"]["text"] == "*Decided*\n• *decided*: nothing"
    if fail:
        assert message["blocks"][2]["text"]["text"] == "*Error*\nTask exit-handler-1 failed."
