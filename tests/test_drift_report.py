import json
import re
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from ctloop.components.data.profile import reference_profile, with_prediction_distribution
from ctloop.components.drift.detection import detect_drift
from ctloop.components.drift.report import render_html
from ctloop.components.drift.window_profile import prediction_counts, window_profile


def _wide_table(rows: int, seed: int, shift: float) -> pa.Table:
    """25 numeric and 25 categorical features (60 levels); the first 20 of each shift."""
    rng = np.random.default_rng(seed)
    columns = {}
    for i in range(25):
        columns[f"num_{i:02d}"] = rng.normal(shift if i < 20 else 0.0, 1.0, rows)
        weights = np.linspace(1.0, 1.0 + (3.0 * shift if i < 20 else 0.0), 60)
        levels = np.array([f"<level {j}> & co" for j in range(60)])
        columns[f"cat_{i:02d}"] = levels[rng.choice(60, rows, p=weights / weights.sum())]
    return pa.table(columns)


@pytest.fixture(scope="module")
def drifted():
    reference = _wide_table(5_000, seed=0, shift=0.0)
    features = reference.column_names
    categorical = [name for name in features if name.startswith("cat_")]
    profile = reference_profile(reference, "y", "binary", features, categorical, None)
    profile = with_prediction_distribution(profile, np.random.default_rng(1).random(5_000))
    window = window_profile(_wide_table(5_000, seed=2, shift=1.0).to_batches(), profile)
    scores = prediction_counts(profile, np.random.default_rng(3).beta(5.0, 2.0, 5_000))
    result = detect_drift(profile, window, scores_window=scores)
    return result, profile, window, scores


def test_html_report_is_self_contained_and_small_for_fifty_features(drifted):
    result, profile, window, scores = drifted
    page = render_html(result, profile, window, scores_window=scores)
    assert len(result.drifted_features) == 40
    assert len(page.encode()) < 300_000
    assert page.count("<svg") == 41  # 40 drifted features + the model score
    assert not re.search(
        r"<script|<link|@import|url\(|src=|https?://(?!www\.w3\.org/2000/svg)", page
    )
    assert "&lt;level 59&gt; &amp; co" in page and "<level 59>" not in page


def test_html_report_lists_features_by_severity(drifted):
    result, profile, window, scores = drifted
    page = render_html(result, profile, window, scores_window=scores)
    table = page[page.index("<h2>Features</h2>") : page.index("<h2>Drifted distributions</h2>")]
    listed = re.findall(r"<tr(?: class='bad')?><td>([a-z_0-9]+)</td>", table)
    by_severity = sorted(result.features, key=lambda name: -result.features[name]["severity"])
    assert listed == by_severity
    assert set(listed[:40]) == set(result.drifted_features)


def test_json_result_has_the_documented_fields_and_no_nan(drifted):
    result, *_ = drifted
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert document["drift_detected"] is True
    assert document["drifted_features"] == sorted(
        document["drifted_features"], key=lambda name: -document["features"][name]["severity"]
    )
    expected = {
        "kind", "psi", "js_distance", "ks_statistic", "ks_error_bound", "chi_square",
        "cramers_v", "unseen_share", "missing_rate_reference", "missing_rate_current",
        "drifted", "reasons",
    }  # fmt: skip
    for entry in document["features"].values():
        assert expected <= entry.keys()
    assert document["prediction"]["drifted"] is True
    assert document["rows"] == 5_000


def test_html_report_says_which_features_are_missing_in_every_row(drifted):
    result, profile, window, scores = drifted
    features = {name: dict(entry) for name, entry in result.features.items()}
    features["cat_24"].update(all_missing=True, reasons=["missing in all 5000 rows"])
    features["cat_23"].update(all_missing=True, weight=0.0)
    page = render_html(replace(result, features=features), profile, window, scores_window=scores)
    assert "<p>Missing in every row of the window: cat_24; each makes the window drift" in page
    assert "cat_23;" not in page
    assert "Missing in every row" not in render_html(result, profile, window, scores_window=scores)
