"""A canary analysis step retried after its rollback finds it done and finishes its work.

The step rolls a failing canary back, then logs its records to MLflow; when MLflow refuses,
the step fails saying the rollback WAS applied, and KFP retries it. The retry finds the
version out of service and the champion serving all traffic: it applies the rollback again
(which finishes one stopped part-way), logs the analysis and the rollback once, and returns
the same action and verdict. Run with the real step body against the Kubernetes API and
Prometheus stand-ins of `tests.test_canary_promotion`, and a real SQLite MLflow store.
"""

import pytest

from ctloop.components.canary import promotion
from ctloop.components.canary.promotion_record import analysis_trigger
from ctloop.components.canary.record_keeping import RecordNotLoggedError
from ctloop.components.decisions import store
from ctloop.components.decisions.store import records_for
from ctloop.components.deploy.inference_service import DeploymentError
from ctloop.components.registry import mlflow_registry
from ctloop.pipelines.replay import NOT_REPLAYED, replay
from tests import test_decision_log_retry as retry_tests
from tests.prometheus_standin import version_figures
from tests.test_canary_promotion import NAMESPACE, VERSION_LABEL
from tests.test_decision_log_retry import canary_step, refusing

# The service, registry, metrics and kubeconfig of the promotion tests, as fixtures here.
standin, tracking_uri = retry_tests.standin, retry_tests.tracking_uri
deployment, prometheus = retry_tests.deployment, retry_tests.prometheus
kubeconfig = retry_tests.kubeconfig


def retried_after_rollback(served, prometheus, tmp_path, monkeypatch, unlogged: str):
    """A failing canary analysed by the real step, whose rollback is applied but MLflow
    refuses the `unlogged` record once (a rollback: the analysis is logged; the analysis:
    nothing is), then KFP's retry, which must succeed: returns the records logged for version
    2, checked to be one analysis and the rollback it triggered, logged once."""
    prometheus.figures["2"] = version_figures(ok=9.0, error=1.0)  # the canary fails
    analyse = canary_step(served, prometheus, tmp_path)
    with monkeypatch.context() as refused:
        refused.setattr(store, "log_record", refusing(unlogged))
        with pytest.raises(RecordNotLoggedError, match="version 2 WAS rolled back"):
            analyse()

    assert analyse() == ("rollback", "rollback")  # KFP's retry

    spec = served.stored["spec"]
    assert spec["predictor"]["labels"][VERSION_LABEL] == "1"  # the champion serves, alone
    assert "canary" not in spec and "canaryTrafficPercent" not in spec["predictor"]
    assert served.aliases() == {"champion": "1"}
    markdown = (tmp_path / "decision.out").read_text()
    assert markdown.startswith("## Canary analysis: ROLLBACK → rollback (found done)")
    assert "Version 2 was found rolled back by an earlier try of this step" in markdown
    logged = records_for(served.tracking_uri, served.model, "2")
    assert [record.kind for record in logged] == ["canary", "rollback"]
    canary, rollback = logged
    assert canary.outcome == {"verdict": "rollback", "action": "rollback"}
    assert rollback.inputs["trigger"] == analysis_trigger(canary)
    assert rollback.outcome == {"action": "rollback", "version": "2"}
    assert analyse() == ("rollback", "rollback")  # once more: both found logged
    assert records_for(served.tracking_uri, served.model, "2") == logged
    return logged


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
def test_a_canary_step_retried_after_its_rollback_record_failed_reuses_its_analysis(
    deployment, prometheus, kubeconfig, tmp_path, monkeypatch, mode
):
    served = deployment(mode)

    canary, rollback = retried_after_rollback(
        served, prometheus, tmp_path, monkeypatch, unlogged="rollback"
    )

    assert canary.inputs["readings"]  # the first try's analysis, every reading
    assert rollback.reasons[1:] == canary.reasons == ["error_rate 0.1 > max 0.01"]


def test_a_rolled_back_canary_step_that_logged_nothing_is_recorded_as_found_by_its_retry(
    deployment, prometheus, kubeconfig, tmp_path, monkeypatch
):
    served = deployment("Standard")

    canary, _rollback = retried_after_rollback(
        served, prometheus, tmp_path, monkeypatch, unlogged="canary"
    )

    assert canary.inputs["readings"] == []  # only in the first try's log
    assert "was found rolled back, version 1 serving all traffic" in canary.reasons[0]
    assert replay(canary).status == NOT_REPLAYED  # no readings to judge again


def test_a_serverless_rollback_a_killed_try_left_pinned_is_finished_by_the_retry(
    deployment, prometheus, kubeconfig, tmp_path
):
    served = deployment("Serverless")
    promotion.roll_back(served.api, served.tracking_uri, reasons=["x"], **served.options())
    # As if the try had been killed before its last patch: the champion pinned at 0 %, and
    # version 2 not tagged yet.
    served.stored["spec"]["predictor"]["canaryTrafficPercent"] = 0
    registry = mlflow_registry.client(served.tracking_uri)
    registry.delete_model_version_tag(served.model, "2", mlflow_registry.ROLLED_BACK_TAG)

    assert canary_step(served, prometheus, tmp_path)() == ("rollback", "rollback")

    assert "canaryTrafficPercent" not in served.stored["spec"]["predictor"]
    assert (
        f"- InferenceService {NAMESPACE}/{served.name}: unpin"
        in (tmp_path / "decision.out").read_text()
    )
    assert served.version("2").tags[mlflow_registry.ROLLED_BACK_TAG].startswith("finishing")


def test_a_canary_taken_out_of_service_without_a_rollback_is_still_an_error(
    deployment, prometheus, kubeconfig, tmp_path
):
    served = deployment("Standard")
    del served.stored["spec"]["canary"]  # removed by hand: not this step's rollback

    with pytest.raises(DeploymentError, match="serves version 1 to all traffic, not version 2"):
        canary_step(served, prometheus, tmp_path)()
    assert records_for(served.tracking_uri, served.model, "2") == []
