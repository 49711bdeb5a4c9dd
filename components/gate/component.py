"""KFP component of the gate family: the quality gate the pipeline branches on."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def quality_gate(
    evaluation: Input[Artifact],
    decision: Output[Markdown],
    policy: str = "",
) -> NamedTuple("GateOutputs", passed=bool, failures=str):
    """Decide whether the candidate may be registered and deployed.

    The policy is data, like TFX's blessing: floors and ceilings per metric, the largest
    regression tolerated against the champion (skipped when there is none) and a limit on
    the candidate's median scoring time relative to the champion's, timed beside it (plus an
    absolute budget only when the policy sets one). Every failure names the metric, its value
    and the threshold.

    Args:
        evaluation: The evaluation of candidate and champion.
        decision: Every check with its outcome, for the UI.
        policy: Gate policy as JSON; empty uses ctloop's default for the task, e.g.
            {"thresholds": {"roc_auc": {"min": 0.75}},
             "champion_comparison": {"roc_auc": {"direction": "higher", "max_regression": 0.01}},
             "latency": {"max_ratio_to_champion": 1.5, "median_ms_max": 50}}.

    Returns:
        passed: True when every check passed.
        failures: JSON list of the failed checks.
    """
    import json

    from ctloop.components.gate.decision import decision_markdown, run_gate

    with open(evaluation.path) as handle:
        result = json.load(handle)
    gate = run_gate(policy, result)
    with open(decision.path, "w") as handle:
        handle.write(decision_markdown(gate))
    decision.metadata["display_name"] = "Quality gate: " + ("passed" if gate.passed else "failed")
    failures = [failure.to_json() for failure in gate.failures]
    return (gate.passed, json.dumps(failures, sort_keys=True))
