"""A retried step logs each of its decision records once.

KFP retries a step that failed, and a step that logs two records (an analysis, then the
promotion or rollback it led to) fails when the second cannot be logged: the retry must not log
the first again, or `ctloop audit` shows that decision twice. The records are logged to a real
SQLite MLflow store; the canary step runs against the Kubernetes API stand-in of
`tests.test_canary_promotion`.
"""

import json
from types import SimpleNamespace

import pytest

from ctloop.components.canary.component import analyze_canary
from ctloop.components.canary.promotion_record import analysis_trigger
from ctloop.components.canary.record_keeping import RecordNotLoggedError, keep_records
from ctloop.components.decisions import store
from ctloop.components.decisions.record import new_record
from ctloop.components.decisions.store import (
    DECISIONS_EXPERIMENT,
    ID_TAG,
    log_record,
    records_for,
)
from ctloop.components.registry import mlflow_registry
from tests import test_canary_promotion as promotion_tests
from tests.test_canary_promotion import NAMESPACE

# The service, registry, metrics and kubeconfig of the promotion tests, as fixtures here.
standin, tracking_uri = promotion_tests.standin, promotion_tests.tracking_uri
deployment, prometheus = promotion_tests.deployment, promotion_tests.prometheus
kubeconfig = promotion_tests.kubeconfig


def shadow_decision(model: str, kfp_run_id: str = "run-7", rows: int = 1200):
    return new_record(
        "shadow",
        subject={"registered_model": model, "model_version": "2", "kfp_run_id": kfp_run_id},
        inputs={"rows": rows, "disagreement_rate": 0.01},
        policy="",
        outcome={"verdict": "go_on", "action": "go_on"},
        reasons=["disagreement_rate 0.01 <= max 0.02"],
    )


def shadow_then_promotion_step(tracking_uri: str, model: str, log=log_record) -> None:
    """What a two-record step does on every try: decide, build both records, keep them."""
    analysis = shadow_decision(model)
    promotion = new_record(
        "promotion",
        subject={"registered_model": model, "model_version": "2", "kfp_run_id": "run-7"},
        inputs={"trigger": analysis_trigger(analysis), "version": "2"},
        policy="",
        outcome={"action": "promote", "version": "2"},
        reasons=["shadow analysis go_on"],
    )
    keep_records(
        [(analysis, ""), (promotion, "")], tracking_uri, applied="v2 WAS promoted", log=log
    )


def refusing(kind: str):
    """`log_record`, except that MLflow refuses the first record of `kind`."""
    refused = []

    def log(uri, record):
        if record.kind == kind and not refused:
            refused.append(record)
            raise store.DecisionStoreError("MLflow answered 503")
        return log_record(uri, record)

    return log


def test_a_step_retried_after_its_second_record_failed_logs_each_record_once(tracking_uri):
    with pytest.raises(RecordNotLoggedError, match="v2 WAS promoted"):
        shadow_then_promotion_step(tracking_uri, "retried", log=refusing("promotion"))
    shadow_then_promotion_step(tracking_uri, "retried")  # KFP's retry

    logged = records_for(tracking_uri, "retried")
    assert [record.kind for record in logged] == ["shadow", "promotion"]
    assert logged[1].inputs["trigger"]["record_id"] == logged[0].id


def canary_step(served, prometheus, tmp_path):
    """The real `analyze_canary` step body on `served`'s canary, version 2, in KFP run run-42:
    each call is one try, returning (action, verdict) and leaving its Markdown in
    `tmp_path`/decision.out."""

    def analyse():
        outputs = {
            name: SimpleNamespace(path=str(tmp_path / f"{name}.out"), metadata={})
            for name in ("decision", "record", "action_record")
        }
        return analyze_canary.python_func(
            model_version="2",
            prometheus_url=prometheus.url,
            registered_model_name=served.model,
            mlflow_tracking_uri=served.tracking_uri,
            inference_service_name=served.name,
            namespace=NAMESPACE,
            deployment_mode=served.mode,
            policy=json.dumps(
                {"bake_time_s": 0.3, "step_s": 0.3, "min_requests": 1, "error_rate": {"max": 0.01}}
            ),
            metrics_model_name="churn",
            timeout_s=5,
            kfp_run_id="run-42",
            **outputs,
        )

    return analyse


def test_a_retried_canary_step_keeps_its_analysis_and_logs_the_promotion_once(
    deployment, prometheus, kubeconfig, tmp_path, monkeypatch
):
    served = deployment("Standard")
    analyse = canary_step(served, prometheus, tmp_path)

    with monkeypatch.context() as refused:
        refused.setattr(store, "log_record", refusing("promotion"))
        with pytest.raises(RecordNotLoggedError, match="version 2 WAS promoted"):
            analyse()
    assert analyse() == ("promote", "promote")  # the retry finds version 2 promoted
    markdown = (tmp_path / "decision.out").read_text()
    assert markdown.startswith("## Canary analysis: PROMOTE → promote (found done)")

    logged = records_for(served.tracking_uri, served.model, "2")
    assert [record.kind for record in logged] == ["canary", "promotion"]
    canary, promotion = logged
    assert canary.outcome == {"verdict": "promote", "action": "promote"}  # the real analysis
    assert promotion.inputs["trigger"] == analysis_trigger(canary)
    assert promotion.outcome == {"action": "promote", "version": "2"}
    assert analyse() == ("promote", "promote")  # once more: both found logged
    assert records_for(served.tracking_uri, served.model, "2") == logged


def test_a_run_a_killed_try_left_unfinished_is_marked_killed_and_the_record_logged(
    tracking_uri,
):
    record = shadow_decision("killed")
    client = mlflow_registry.client(tracking_uri)
    experiment = mlflow_registry.ensure_experiment(tracking_uri, DECISIONS_EXPERIMENT)
    orphan = client.create_run(experiment, tags={ID_TAG: record.id}).info.run_id  # then killed

    run_id = log_record(tracking_uri, record)

    assert run_id != orphan
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(run_id).info.status == "FINISHED"
    assert records_for(tracking_uri, "killed") == [record]
    assert log_record(tracking_uri, shadow_decision("killed")) == run_id  # logged: found


def test_the_same_figures_are_separate_decisions_in_another_kfp_run_or_outside_one(
    tracking_uri,
):
    first, again = shadow_decision("separate"), shadow_decision("separate")
    assert first.id == again.id  # one decision, taken twice by a retried step
    other_run = shadow_decision("separate", kfp_run_id="run-8")
    other_figures = shadow_decision("separate", rows=1300)
    by_hand = [shadow_decision("separate", kfp_run_id=""), shadow_decision("separate", "")]
    assert len({first.id, other_run.id, other_figures.id, *(r.id for r in by_hand)}) == 5

    for record in (first, again, other_run, other_figures, *by_hand):
        log_record(tracking_uri, record)

    assert len(records_for(tracking_uri, "separate")) == 5
