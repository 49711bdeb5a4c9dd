"""KFP component of the evaluate family: candidate vs champion on the test split."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from ctloop.components.image import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate_model(
    test: Input[Dataset],
    model: Input[Model],
    reference_profile: Input[Artifact],
    run_id: str,
    mlflow_tracking_uri: str,
    registered_model_name: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    comparison: Output[Markdown],
    evaluation: Output[Artifact],
    scored_profile: Output[Artifact],
    gate_policy: str = "",
) -> NamedTuple("EvaluateOutputs", candidate_metrics=str):
    """Score the candidate, and the current champion on the same rows, for the gate.

    Args:
        test: Held-out rows.
        model: The candidate (folder with model.json).
        reference_profile: The candidate's training profile.
        run_id: The candidate's MLflow run; metrics and the scored profile are logged to it.
        mlflow_tracking_uri: MLflow tracking server (or sqlite:/// store).
        registered_model_name: Registered model whose `champion` alias is compared with.
        metrics: Candidate metrics and median scoring time (and champion_* when a champion
            exists), for the UI.
        classification_metrics: ROC curve and confusion matrix, for the UI.
        comparison: Candidate vs champion table, for the UI.
        evaluation: Every figure as JSON (what the quality gate reads).
        scored_profile: The reference profile plus the prediction-score distribution.
        gate_policy: The quality gate's policy (JSON; empty: the task's default). When its
            "slices" section names columns, both models are also evaluated per group of them.

    Returns:
        candidate_metrics: The candidate's metrics as a JSON object.
    """
    import json

    from ctloop.components.evaluate.evaluation import run_evaluation
    from ctloop.components.evaluate.metrics import comparison_markdown
    from ctloop.components.registry import mlflow_registry

    with open(reference_profile.path) as handle:
        profile = json.load(handle)
    result, profile_with_scores = run_evaluation(
        test_path=test.path,
        model_dir=model.path,
        profile=profile,
        tracking_uri=mlflow_tracking_uri,
        registered_model_name=registered_model_name,
        gate_policy=gate_policy,
    )
    for name, value in result["candidate"].items():
        metrics.log_metric(name, value)
    for name, value in (result["champion"] or {}).items():
        metrics.log_metric(f"champion_{name}", value)
    for model, timing in (("", "candidate"), ("champion_", "champion")):
        if result["latency"][timing] is not None:
            metrics.log_metric(f"{model}scoring_median_ms", result["latency"][timing]["median_ms"])
    if "roc_curve" in result:
        points = result["roc_curve"]
        classification_metrics.log_roc_curve(
            [p["fpr"] for p in points], [p["tpr"] for p in points], [p["threshold"] for p in points]
        )
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["categories"], matrix["matrix"])
    for artifact, title in (
        (metrics, "Test metrics"),
        (classification_metrics, "ROC and confusion"),
        (comparison, "Candidate vs champion"),
    ):
        artifact.metadata["display_name"] = title
    with open(comparison.path, "w") as handle:
        handle.write(comparison_markdown(result["candidate"], result["champion"]))
    with open(evaluation.path, "w") as handle:
        json.dump(result, handle, indent=1, sort_keys=True)
    with open(scored_profile.path, "w") as handle:
        json.dump(profile_with_scores, handle, indent=1, sort_keys=True)
    mlflow_registry.log_evaluation(mlflow_tracking_uri, run_id, result, profile_with_scores)
    return (json.dumps(result["candidate"], sort_keys=True),)
