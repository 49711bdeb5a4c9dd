import math

import numpy as np
import pytest

from ctloop.components.evaluate.metrics import (
    MetricsError,
    average_precision,
    classification_metrics,
    comparison_markdown,
    confusion_matrix,
    regression_metrics,
    roc_auc,
    roc_curve,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_classification_metrics_match_hand_computed_values():
    result = classification_metrics(Y, S)
    expected_log_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert result == pytest.approx(
        {
            "roc_auc": 0.75,
            "pr_auc": 0.5 * 1.0 + 0.5 * (2 / 3),
            "log_loss": expected_log_loss,
            "accuracy": 0.75,
            "precision": 1.0,
            "recall": 0.5,
            "f1": 2 / 3,
            "brier": (0.01 + 0.16 + 0.4225 + 0.04) / 4,
        }
    )
    assert all(type(value) is float for value in result.values())


def test_threshold_moves_the_decision_metrics():
    result = classification_metrics(Y, S, threshold=0.3)
    assert result["recall"] == 1.0
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["roc_auc"] == 0.75


def test_precision_is_zero_when_nothing_is_predicted_positive():
    result = classification_metrics(Y, S, threshold=0.99)
    assert result["precision"] == 0.0
    assert result["f1"] == 0.0


def test_log_loss_stays_finite_for_confident_mistakes():
    assert math.isfinite(classification_metrics([0, 1], [1.0, 0.0])["log_loss"])


def test_tied_scores_count_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 1, 1], [0.2, 0.2, 0.9]) == pytest.approx(0.75)


def test_auc_matches_brute_force_pairwise_count_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    scores = np.round(rng.random(400) * 0.5 + 0.3 * y, 2)  # rounded: plenty of ties
    positives, negatives = scores[y == 1], scores[y == 0]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    brute_force = (wins + 0.5 * ties) / (positives.size * negatives.size)
    assert roc_auc(y, scores) == pytest.approx(brute_force, abs=1e-12)


def test_average_precision_of_a_perfect_ranking_is_one():
    assert average_precision([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0


@pytest.mark.parametrize(
    ("y", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], r"binary labels must be 0 or 1, found \[2.0\]"),
        ([0, 1], [0.1], r"labels \(2\) and scores \(1\) differ in length"),
        ([1, 1], [0.1, 0.2], "ROC AUC needs both classes; labels have 2 positive"),
        ([0, 1], [0.1, float("nan")], "scores contain NaN"),
        ([0, 1], [0.1, 1.2], r"probabilities in \[0, 1\], found range \[0.1, 1.2\]"),
        ([], [], "no rows"),
    ],
)
def test_classification_metrics_reject_bad_input(y, scores, message):
    with pytest.raises(MetricsError, match=message):
        classification_metrics(y, scores)


def test_regression_metrics_match_hand_computed_values():
    result = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert result == pytest.approx({"rmse": math.sqrt(1 / 3), "mae": 1 / 3, "r2": 0.5})


def test_r2_of_a_constant_target_is_finite():
    assert regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"] == 1.0
    assert regression_metrics([2.0, 2.0], [1.0, 2.0])["r2"] == 0.0


def test_roc_curve_of_tiny_example():
    assert roc_curve(Y, S) == [
        {"fpr": 0.0, "tpr": 0.0, "threshold": 1.0},
        {"fpr": 0.0, "tpr": 0.5, "threshold": 0.8},
        {"fpr": 0.5, "tpr": 0.5, "threshold": 0.4},
        {"fpr": 0.5, "tpr": 1.0, "threshold": 0.35},
        {"fpr": 1.0, "tpr": 1.0, "threshold": 0.1},
    ]


def test_long_roc_curve_is_thinned_keeping_ends_and_order():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=5000)
    scores = np.clip(rng.random(5000) * 0.8 + 0.2 * y, 0, 1)
    scores[0] = 1.0
    curve = roc_curve(y, scores, max_points=200)
    assert 150 < len(curve) <= 200
    assert (curve[0]["fpr"], curve[0]["tpr"]) == (0.0, 0.0)
    assert (curve[-1]["fpr"], curve[-1]["tpr"]) == (1.0, 1.0)
    thresholds = [p["threshold"] for p in curve]
    assert all(math.isfinite(t) for t in thresholds)
    assert thresholds[0] > 1.0
    assert thresholds == sorted(thresholds, reverse=True)
    fprs = [p["fpr"] for p in curve]
    assert fprs == sorted(fprs)


def test_confusion_matrix_counts_actual_rows_and_predicted_columns():
    assert confusion_matrix(Y, S, 0.5) == (["0", "1"], [[2, 0], [1, 1]])
    assert confusion_matrix(Y, S, 0.3) == (["0", "1"], [[1, 1], [0, 2]])


def test_confusion_matrix_uses_original_label_names():
    assert confusion_matrix(Y, S, 0.5, {"Yes": 1, "No": 0})[0] == ["No", "Yes"]
    assert confusion_matrix(Y, S, 0.5, ["No", "Yes"])[0] == ["No", "Yes"]


def test_confusion_matrix_rejects_label_names_not_covering_both_classes():
    with pytest.raises(MetricsError, match="must name class 0 and class 1 once each"):
        confusion_matrix(Y, S, 0.5, {"No": 0, "Maybe": 2})


def test_comparison_table_shows_delta_against_champion():
    table = comparison_markdown(
        {"roc_auc": 0.85, "log_loss": 0.4}, {"roc_auc": 0.84, "log_loss": 0.45, "brier": 0.1}
    )
    lines = table.splitlines()
    assert lines[0] == "| metric | candidate | champion | delta |"
    assert "| roc_auc | 0.8500 | 0.8400 | +0.0100 |" in lines
    assert "| log_loss | 0.4000 | 0.4500 | -0.0500 |" in lines
    assert "| brier | — | 0.1000 | — |" in lines


def test_comparison_without_champion_says_so():
    table = comparison_markdown({"roc_auc": 0.85}, None)
    assert "no champion yet" in table
    assert "| roc_auc | 0.8500 |" in table
