"""The A/B analysis: the prediction log joined with delayed labels, each challenger compared with
the control, and the decision with its reasons.

Outcomes are simulated with known rates, so a test knows which variant is better and by how
much; the end-to-end tests write the log with the server's own writer.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctloop.components.decisions.record import read_record
from ctloop.components.experiment.component import analyze_ab
from ctloop.components.experiment.decision import decide, run_ab_analysis
from ctloop.components.experiment.observations import ExperimentInputError, join_observations
from ctloop.components.experiment.policy import (
    ExperimentPolicy,
    ExperimentPolicyError,
    parse_experiment_policy,
)
from ctloop.components.experiment.report import decision_markdown, decision_summary
from ctloop.serving.prediction_log import PredictionLog

CONVERSIONS = ExperimentPolicy(metric="outcome_mean", outcome_column="converted", better="higher")


def simulated(rates: dict[str, float], rows: int, seed: int = 0, labelled: float = 1.0):
    """(log, labels) tables: `rows` single-row requests per variant, converting at its rate;
    a share `labelled` of them has a label."""
    rng = np.random.default_rng(seed)
    variants = np.repeat(list(rates), rows)
    converted = rng.random(variants.size) < np.repeat(list(rates.values()), rows)
    ids = np.char.add("req-", np.arange(variants.size).astype(str))
    log = pa.table(
        {
            "request_id": ids,
            "row": np.zeros(variants.size, dtype=np.int32),
            "variant": variants,
            "model_version": variants,
            "inputs_hash": ["0" * 16] * variants.size,
            "score": rng.random(variants.size),
        }
    )
    keep = rng.random(variants.size) < labelled
    labels = pa.table({"request_id": ids[keep], "converted": converted[keep].astype(np.int64)})
    return log, labels


def analysed(rates, rows, policy=CONVERSIONS, control="1", **options):
    log, labels = simulated(rates, rows, **options)
    return decide(join_observations(log, labels, policy), control, policy)


def test_a_truly_better_challenger_is_promoted_and_its_interval_holds_the_margin():
    decision = analysed({"1": 0.10, "2": 0.12}, rows=20_000)
    assert (decision.action, decision.winner) == ("promote", "2")
    (comparison,) = decision.comparisons
    assert comparison.verdict == "better"
    assert comparison.lower <= 0.02 <= comparison.upper
    assert comparison.lower > 0
    assert any("2 is better than 1" in reason for reason in decision.reasons)


def test_equal_variants_keep_running():
    decision = analysed({"1": 0.10, "2": 0.10}, rows=20_000)
    assert (decision.action, decision.winner) == ("continue", "")
    (comparison,) = decision.comparisons
    assert comparison.verdict == "undecided"
    assert comparison.lower < 0 < comparison.upper


def test_a_truly_worse_challenger_is_rolled_back():
    decision = analysed({"1": 0.12, "2": 0.10}, rows=20_000)
    assert (decision.action, decision.winner) == ("rollback", "1")
    assert decision.comparisons[0].verdict == "worse"


def test_lower_is_better_turns_the_verdict_round():
    policy = ExperimentPolicy(metric="outcome_mean", outcome_column="converted", better="lower")
    decision = analysed({"1": 0.12, "2": 0.10}, rows=20_000, policy=policy)
    assert (decision.action, decision.winner) == ("promote", "2")


def test_too_few_labelled_rows_keep_running_whatever_the_difference():
    decision = analysed({"1": 0.1, "2": 0.9}, rows=500)
    assert decision.action == "continue"
    assert [comparison.verdict for comparison in decision.comparisons] == ["too_few_rows"]
    assert "1 labelled rows 500 < min_labelled_rows 1000" in decision.reasons


def test_with_three_variants_the_better_one_wins_at_half_the_alpha_each():
    decision = analysed({"1": 0.10, "2": 0.10, "3": 0.13}, rows=20_000)
    assert decision.alpha_per_comparison == pytest.approx(0.025)
    assert (decision.action, decision.winner) == ("promote", "3")
    verdicts = {comparison.variant: comparison.verdict for comparison in decision.comparisons}
    assert verdicts == {"2": "undecided", "3": "better"}


def test_a_worse_challenger_beside_an_undecided_one_keeps_running_and_is_named():
    decision = analysed({"1": 0.12, "2": 0.12, "3": 0.09}, rows=20_000)
    assert decision.action == "continue"
    assert any("3 is worse than 1" in r and "removed now" in r for r in decision.reasons)


def test_log_loss_prefers_the_calibrated_model():
    rng = np.random.default_rng(3)
    rows = 20_000
    truth = rng.beta(2, 8, size=2 * rows)
    label = (rng.random(truth.size) < truth).astype(np.int64)
    overconfident = 1 / (1 + np.exp(-(np.log(truth / (1 - truth)) * 1.8)))
    variants = np.repeat(["a", "b"], rows)
    ids = [f"r{number}" for number in range(truth.size)]
    log = pa.table(
        {
            "request_id": ids,
            "row": np.zeros(truth.size, dtype=np.int32),
            "variant": variants,
            "score": np.where(variants == "a", overconfident, truth),
        }
    )
    labels = pa.table({"request_id": ids, "label": label})
    policy = parse_experiment_policy("")
    decision = decide(join_observations(log, labels, policy), "a", policy)
    assert (decision.action, decision.winner) == ("promote", "b")
    assert decision.summaries["b"].mean < decision.summaries["a"].mean


def test_unlabelled_rows_and_labels_without_predictions_are_counted_not_guessed():
    log = pa.table(
        {
            "request_id": ["a", "a", "b", "c", "c", "d"],
            "row": pa.array([0, 1, 0, 0, 0, 0], pa.int32()),
            "variant": ["1", "1", "2", "1", "2", "2"],
            "model_version": ["7", "7", None, "7", None, "8"],
            "score": [0.2, 0.4, 0.6, 0.5, 0.5, 0.9],
        }
    )
    labels = pa.table(
        {
            "request_id": ["a", "a", "b", "c", "x", "d"],
            "row": [0, 1, 0, 0, 0, 0],
            "label": pa.array([1, 0, None, 1, 0, 1], pa.int64()),
        }
    )
    observations = join_observations(log, labels, parse_experiment_policy(""))
    one, two = observations.variants["1"], observations.variants["2"]
    assert (one.logged, one.labelled, one.unlabelled) == (2, 2, 0)  # "c" was logged twice
    assert (two.logged, two.labelled, two.unlabelled) == (2, 1, 1)  # "b": its label is empty
    assert observations.logged_more_than_once == 2
    assert observations.labels_without_prediction == 2  # "x", and "c" whose log rows went
    assert observations.empty_labels == 1
    assert one.values == pytest.approx([-np.log(0.2), -np.log(0.6)])
    assert two.model_versions == ("8",)


def test_the_report_shows_each_variant_the_interval_and_escapes_names():
    log, labels = simulated({"1": 0.10, "<img src=x onerror=alert(1)>": 0.12}, rows=20_000)
    decision = decide(join_observations(log, labels, CONVERSIONS), "1", CONVERSIONS)
    report = decision_markdown(decision)
    assert report.startswith("## A/B analysis: PROMOTE → &lt;img")
    assert "<img" not in report
    assert "| 1 (control) | 1 | 20000 | 20000 | 0 |" in report
    comparison = decision.comparisons[0]
    assert f"[{comparison.lower:.6g}, {comparison.upper:.6g}]" in report
    summary = decision_summary(decision)
    assert summary["variants"]["<img src=x onerror=alert(1)>"]["verdict"] == "better"
    json.dumps(summary)  # plain JSON


def write_log(root: Path, rates: dict[str, float], rows: int, seed: int = 0) -> Path:
    """The server's writer records `rows` rows per variant, in requests of 50 rows; the labels
    (0/1 conversions) go to a Parquet file; returns that file."""
    rng = np.random.default_rng(seed)
    ids, rows_in_request, outcomes = [], [], []
    with PredictionLog(str(root / "log"), rows_per_file=5_000) as log:
        for variant, rate in rates.items():
            for number in range(rows // 50):
                request_id = f"{variant}-{number}"
                frame = pd.DataFrame({"x": rng.random(50).astype(np.float32)})
                log.record(
                    request_id=request_id,
                    variant=variant,
                    model_version=variant,
                    frame=frame,
                    scores=rng.random(50),
                )
                ids += [request_id] * 50
                rows_in_request += list(range(50))
                outcomes += list((rng.random(50) < rate).astype(int))
    labels = root / "labels.parquet"
    pq.write_table(
        pa.table({"request_id": ids, "row": rows_in_request, "converted": outcomes}), labels
    )
    return labels


def test_run_ab_analysis_reads_what_the_server_wrote(tmp_path):
    labels = write_log(tmp_path, {"1": 0.10, "2": 0.13}, rows=10_000)
    assert len(list((tmp_path / "log").rglob("*.parquet"))) >= 2
    policy = json.dumps({"metric": "outcome_mean", "outcome_column": "converted"})
    decision = run_ab_analysis(str(tmp_path / "log"), str(labels), "1", policy)
    assert (decision.action, decision.winner) == ("promote", "2")
    assert decision.observations.variants["2"].labelled == 10_000


def test_the_component_writes_the_report_and_returns_action_and_winner(tmp_path):
    labels = write_log(tmp_path, {"1": 0.13, "2": 0.10}, rows=10_000)
    decision = SimpleNamespace(path=str(tmp_path / "decision.md"), metadata={})
    record = SimpleNamespace(path=str(tmp_path / "record.json"), metadata={})
    action, winner = analyze_ab.python_func(
        prediction_log_uri=str(tmp_path / "log"),
        labels_uri=str(labels),
        control_variant="1",
        decision=decision,
        record=record,
        policy='{"metric": "outcome_mean", "outcome_column": "converted"}',
    )
    assert (action, winner) == ("rollback", "1")
    kept = read_record(record.path)  # no tracking URI: the artifact only
    assert (kept.kind, kept.outcome) == ("ab", {"action": "rollback", "winner": "1"})
    assert kept.inputs["prediction_log_uri"] == str(tmp_path / "log")
    assert decision.metadata == {"display_name": "A/B analysis: rollback 1"}
    assert Path(decision.path).read_text().startswith("## A/B analysis: ROLLBACK → 1")


@pytest.mark.parametrize(
    ("log_columns", "labels_columns", "policy", "message"),
    [
        (
            {"request_id": ["a"], "row": [0], "score": [0.5]},
            {"request_id": ["a"], "label": [1]},
            "",
            "log has no column(s) ['variant']",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": ["1"], "score": [0.5]},
            {"request_id": ["a"], "outcome": [1]},
            "",
            "labels has no column(s) ['label']",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": ["1"], "score": [0.5]},
            {"request_id": ["a", "a"], "label": [1, 0]},
            "",
            "2 label rows repeat a (request_id, row), e.g. ('a', 0)",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": ["1"], "score": [0.5]},
            {"request_id": ["a"], "label": [2]},
            "",
            "column 'label' must be 0 or 1 for log loss; 1 labelled row(s) are not, e.g. 2 "
            "at request 'a' row 0",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": ["1"], "score": [1.5]},
            {"request_id": ["a"], "label": [1]},
            "",
            "column 'score' must be in [0, 1] for log loss",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": ["1"], "score": [0.5]},
            {"request_id": ["a"], "revenue": ["lots"]},
            '{"metric": "outcome_mean", "outcome_column": "revenue"}',
            "column 'revenue' must hold numbers, it holds string",
        ),
        (
            {"request_id": ["a"], "row": [0], "variant": [None], "score": [0.5]},
            {"request_id": ["a"], "label": [1]},
            "",
            "1 row(s) have no 'variant'",
        ),
    ],
)
def test_bad_tables_are_refused_naming_the_table_and_column(
    log_columns, labels_columns, policy, message
):
    with pytest.raises(ExperimentInputError) as refused:
        join_observations(
            pa.table(log_columns),
            pa.table(labels_columns),
            parse_experiment_policy(policy),
            log_name="log",
            labels_name="labels",
        )
    assert message in str(refused.value)


def test_the_control_must_be_in_the_log_beside_a_challenger():
    log, labels = simulated({"1": 0.1, "2": 0.1}, rows=10)
    observations = join_observations(log, labels, CONVERSIONS)
    with pytest.raises(ExperimentInputError, match=r"control variant '9' is not in the log; "):
        decide(observations, "9", CONVERSIONS, log_name="the log")
    alone, alone_labels = simulated({"1": 0.1}, rows=10)
    with pytest.raises(ExperimentInputError, match="only the control variant '1'"):
        decide(join_observations(alone, alone_labels, CONVERSIONS), "1", CONVERSIONS)


def test_the_default_policy_and_its_metric_dependent_direction():
    assert parse_experiment_policy("") == ExperimentPolicy()
    outcome = parse_experiment_policy('{"metric": "outcome_mean", "outcome_column": "revenue"}')
    assert (outcome.better, outcome.metric_name) == ("higher", "mean of revenue")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"metric": "auc"}', '"metric" = "auc" must be one of "log_loss", "outcome_mean"'),
        ('{"better": "higher"}', 'contradicts "metric" = "log_loss"'),
        ('{"alpha": 0.7}', "'alpha' = 0.7 must be in (0, 0.5]"),
        ('{"min_labelled_rows": 10.5}', "must be a whole number"),
        ('{"mixing_variance": 0}', "'mixing_variance' = 0 must be > 0"),
        ('{"outcome_column": ""}', "must name a column"),
        ('{"alfa": 0.1}', "unknown key(s) ['alfa']"),
        ("{", "experiment policy is not valid JSON"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(text, message):
    with pytest.raises(ExperimentPolicyError) as refused:
        parse_experiment_policy(text)
    assert message in str(refused.value)


def test_the_component_compiles_typed_and_runs_under_kfp_local(tmp_path):
    import warnings

    import yaml
    from kfp import compiler, local

    from ctloop.components.image import DEFAULT_IMAGE

    path = tmp_path / "analyze_ab.yaml"
    compiler.Compiler().compile(analyze_ab, str(path))
    spec = yaml.safe_load(path.read_text())
    component = spec["components"]["comp-analyze-ab"]
    parameters = component["inputDefinitions"]["parameters"]
    assert set(parameters) == {
        "prediction_log_uri",
        "labels_uri",
        "control_variant",
        "policy",
        "mlflow_tracking_uri",
        "registered_model_name",
        "kfp_run_id",
    }
    assert all(parameters[name]["isOptional"] for name in ("policy", "mlflow_tracking_uri"))
    assert parameters["policy"]["defaultValue"] == ""
    outputs = component["outputDefinitions"]
    assert outputs["artifacts"]["decision"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert set(outputs["parameters"]) == {"action", "winner"}
    image = spec["deploymentSpec"]["executors"]["exec-analyze-ab"]["container"]["image"]
    assert image == DEFAULT_IMAGE

    labels = write_log(tmp_path, {"1": 0.10, "2": 0.13}, rows=5_000)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        task = analyze_ab(
            prediction_log_uri=str(tmp_path / "log"),
            labels_uri=str(labels),
            control_variant="1",
            policy='{"metric": "outcome_mean", "outcome_column": "converted"}',
        )
    assert (task.outputs["action"], task.outputs["winner"]) == ("promote", "2")
    assert Path(task.outputs["decision"].path).read_text().startswith("## A/B analysis: PROMOTE")
    assert read_record(task.outputs["record"].path).outcome == {"action": "promote", "winner": "2"}
