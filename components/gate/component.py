"""KFP component of the gate family: the quality gate the pipeline branches on."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def quality_gate(
    evaluation: Input[Artifact],
    decision: Output[Markdown],
    record: Output[Artifact],
    policy: str = "",
    run_id: str = "",
    registered_model_name: str = "",
    mlflow_tracking_uri: str = "",
    kfp_run_id: str = "",
) -> NamedTuple("GateOutputs", passed=bool, failures=str):
    """Decide whether the candidate may be registered and deployed.

    The policy is data, like TFX's blessing: floors and ceilings per metric, the largest
    regression tolerated against the champion (skipped when there is none) and a limit on
    the candidate's median scoring time relative to the champion's, timed beside it (plus an
    absolute budget only when the policy sets one). Its "slices" section judges each group of
    the named columns alike and bounds the gaps between groups (fairness); groups below its
    min_rows are shown, not judged. Every failure names the metric (and the slice), its value
    and the threshold.

    Args:
        evaluation: The evaluation of candidate and champion.
        decision: Every check with its outcome and the per-slice figures, for the UI.
        record: The decision record (JSON): the figures read, the policy, the outcome.
        policy: Gate policy as JSON; empty uses ctloop's default for the task, e.g.
            {"thresholds": {"roc_auc": {"min": 0.75}},
             "champion_comparison": {"roc_auc": {"direction": "higher", "max_regression": 0.01}},
             "latency": {"max_ratio_to_champion": 1.5, "median_ms_max": 50},
             "slices": {"categorical": ["gender"], "max_gap": {"gender": {"tpr": 0.1}}}}.
            The evaluation must have been given the same policy.
        run_id: The candidate's MLflow run, named in the record.
        registered_model_name: The registered model the candidate is for, named in the record.
        mlflow_tracking_uri: MLflow tracking server; when set, the record is logged there too.
        kfp_run_id: The pipeline run, named in the record.

    Returns:
        passed: True when every check passed.
        failures: JSON list of the failed checks.
    """
    import json

    from ctloop.components.decisions.record import write_record
    from ctloop.components.gate.decision import decision_markdown, gate_record, run_gate

    with open(evaluation.path) as handle:
        result = json.load(handle)
    gate = run_gate(policy, result)
    with open(decision.path, "w") as handle:
        handle.write(decision_markdown(gate))
    decision.metadata["display_name"] = "Quality gate: " + ("passed" if gate.passed else "failed")
    decided = gate_record(
        policy,
        result,
        gate,
        registered_model=registered_model_name,
        run_id=run_id,
        kfp_run_id=kfp_run_id,
    )
    write_record(decided, record.path)
    record.metadata["display_name"] = "Gate decision record"
    if mlflow_tracking_uri:
        from ctloop.components.decisions.store import log_record

        log_record(mlflow_tracking_uri, decided)
    failures = [failure.to_json() for failure in gate.failures]
    return (gate.passed, json.dumps(failures, sort_keys=True))
