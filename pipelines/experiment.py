"""The A/B analysis pipeline: judge the running experiment on its outcomes, then act.

Scheduled (e.g. daily) while an experiment started by the "ab" rollout strategy runs: the
prediction log is joined with the outcome labels that have arrived and each challenger is
compared with the control by an always-valid sequential test, so checking every day does not
inflate false winners. The decision is visible here as a `dsl.If`:

- promote: the winning challenger takes all traffic and becomes the champion;
- rollback: the control won: every challenger variant is removed and recorded as rolled back;
- continue: nothing changes; the next scheduled run looks again.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from ctloop.components.image import DEFAULT_IMAGE
from ctloop.pipelines.catalog import catalog
from ctloop.pipelines.placement import NETWORK_RETRY, Retry

PIPELINE_NAME = "ctloop-ab-analysis"


class ExperimentOutputs(NamedTuple):
    """What the analysis decided: "promote", "rollback" or "continue", and the winner."""

    action: str
    winner: str


def build_experiment_pipeline(
    image: str = DEFAULT_IMAGE, network_retry: Retry = NETWORK_RETRY
) -> BaseComponent:
    """The A/B analysis pipeline with every task in `image`; every step reads or changes
    MLflow, Kubernetes or object storage and is retried with `network_retry`."""
    c = catalog(image)
    retried = network_retry.apply

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def ab_analysis(
        prediction_log_uri: str = "",
        labels_uri: str = "",
        ab_policy: str = "",
        control_variant: str = "",
        registered_model_name: str = "ctloop-model",
        mlflow_tracking_uri: str = "http://mlflow.kubeflow.svc.cluster.local:5000",
        inference_service_name: str = "ctloop-model",
        namespace: str = "",
        deployment_mode: str = "Serverless",
    ) -> ExperimentOutputs:
        """Compare the A/B variants on their outcomes; promote the winner, roll back the
        challengers, or keep the experiment running.

        Args:
            prediction_log_uri: The variants' prediction log (the rollout's
                prediction_log_uri).
            labels_uri: Outcome labels (Parquet or CSV): request_id, optional row, and the
                outcome column the policy names.
            ab_policy: A/B analysis policy as JSON; empty uses the default (log loss).
            control_variant: The control's variant name; empty: the champion's version.
            registered_model_name: Registered model in MLflow.
            mlflow_tracking_uri: MLflow tracking server.
            inference_service_name: KServe InferenceService running the experiment.
            namespace: Namespace of the InferenceService (empty: the pipeline's).
            deployment_mode: KServe mode of the service: "Serverless" or "Standard".
        """
        # Where each decision is recorded: the registry, and this KFP run.
        recorded = {
            "registered_model_name": registered_model_name,
            "mlflow_tracking_uri": mlflow_tracking_uri,
            "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        }
        service = {
            "inference_service_name": inference_service_name,
            "namespace": namespace,
            "deployment_mode": deployment_mode,
            **recorded,
        }
        control = retried(
            c["resolve_control_variant"](
                control_variant=control_variant,
                registered_model_name=registered_model_name,
                mlflow_tracking_uri=mlflow_tracking_uri,
            ).set_display_name("control variant")
        )
        analysed = retried(
            c["analyze_ab"](
                prediction_log_uri=prediction_log_uri,
                labels_uri=labels_uri,
                control_variant=control.output,
                policy=ab_policy,
                **recorded,
            ).set_display_name("A/B analysis")
        )

        with dsl.If(analysed.outputs["action"] == "promote", name="challenger-won"):
            retried(
                c["promote_version"](
                    model_version=analysed.outputs["winner"],
                    trigger=analysed.outputs["record"],
                    **service,
                ).set_display_name("promote winner")
            )
        with dsl.Elif(analysed.outputs["action"] == "rollback", name="control-won"):
            retried(
                c["roll_back_variants"](
                    reason=f"A/B analysis: control variant {control.output} won",
                    trigger=analysed.outputs["record"],
                    **service,
                ).set_display_name("roll back challengers")
            )

        return ExperimentOutputs(
            action=analysed.outputs["action"], winner=analysed.outputs["winner"]
        )

    return ab_analysis
