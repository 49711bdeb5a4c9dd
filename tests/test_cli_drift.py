"""`ctloop drift` on the Telco churn table: quiet on random halves, loud on real shifts."""

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from ctloop.pipelines.cli import main
from tests.registered_champion import churn_champion

MEASURES = ("psi", "js_distance", "ks_statistic", "missing_rate_change", "severity", "drifted")


@pytest.fixture(scope="module")
def halves(tmp_path_factory, telco_churn_parquet) -> tuple[Path, Path]:
    """Two random halves of the Telco churn table."""
    folder = tmp_path_factory.mktemp("halves")
    telco = pq.read_table(telco_churn_parquet)
    order = np.random.default_rng(3).permutation(telco.num_rows)
    pq.write_table(telco.take(order[:3500]), folder / "reference.parquet")
    pq.write_table(telco.take(order[3500:]), folder / "current.parquet")
    return folder / "reference.parquet", folder / "current.parquet"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, telco_churn_parquet):
    return churn_champion(tmp_path_factory.mktemp("champion"), telco_churn_parquet)


def _drift(tmp_path: Path, reference, current, *options: str) -> tuple[int, dict | None]:
    out = tmp_path / "out"
    code = main(
        [
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(current),
            "--json",
            str(out / "drift.json"),
            "--html",
            str(out / "drift.html"),
            *options,
        ]
    )
    document = out / "drift.json"
    return code, json.loads(document.read_text()) if document.exists() else None


def _with_tenure_plus_two_years(table, path: Path) -> Path:
    tenure = pc.add(table.column("tenure"), 24)
    pq.write_table(table.set_column(table.schema.get_field_index("tenure"), "tenure", tenure), path)
    return path


def test_random_halves_are_not_flagged(tmp_path, halves, capsys):
    code, figures = _drift(tmp_path, *halves, "--target", "churn")
    assert code == 0
    assert figures["drift_detected"] is False and figures["drifted_features"] == []
    assert figures["drift_share"] == 0.0
    assert "churn" not in figures["features"] and len(figures["features"]) == 19
    tenure = figures["features"]["tenure"]
    assert set(MEASURES) <= set(tenure) and tenure["ks_method"] == "exact"
    assert set(figures["features"]["contract"]) >= {"psi", "js_distance", "cramers_v"}
    assert json.loads(capsys.readouterr().out)["drift_detected"] is False
    assert (tmp_path / "out" / "drift.html").read_text().startswith("<!DOCTYPE html>")


def test_month_to_month_customers_only_are_flagged_with_contract_first(
    tmp_path, halves, telco_churn_parquet
):
    telco = pq.read_table(telco_churn_parquet)
    current = tmp_path / "month_to_month.csv"
    month_to_month = telco.filter(pc.equal(telco.column("contract"), "Month-to-month"))
    month_to_month.to_pandas().to_csv(current, index=False)
    code, figures = _drift(tmp_path, halves[0], current)
    assert code == 0 and figures["drift_detected"] is True
    assert figures["drifted_features"][0] == "contract"
    assert figures["features"]["contract"]["unseen_share"] == 0.0
    assert figures["features"]["contract"]["cramers_v"] > 0.5
    assert figures["drift_share"] > figures["drift_share_threshold"]


def test_shifted_tenure_is_named_and_a_policy_weighting_it_flags_the_table(tmp_path, halves):
    current = _with_tenure_plus_two_years(pq.read_table(halves[1]), tmp_path / "shifted.parquet")
    code, figures = _drift(tmp_path, halves[0], current, "--target", "churn")
    assert code == 0 and figures["drifted_features"] == ["tenure"]
    assert figures["drift_detected"] is False  # one feature of 19 is below the 0.3 share
    policy = '{"feature_weights": {"tenure": 3, "contract": 1}, "drift_share": 0.5}'
    code, figures = _drift(tmp_path, halves[0], current, "--policy", policy)
    assert code == 0 and figures["drift_detected"] is True
    assert figures["drift_share"] == pytest.approx(0.75)


def test_with_the_model_scores_drift_too_and_quality_is_compared(tmp_path, champion):
    reference = tmp_path / "reference.parquet"
    pq.write_table(champion.reference, reference)
    current = _with_tenure_plus_two_years(champion.current, tmp_path / "shifted.parquet")
    options = ("--target", "churn", "--model-uri", str(champion.folder))
    code, figures = _drift(tmp_path, reference, current, *options)
    assert code == 0 and figures["drifted_features"] == ["tenure"]
    assert figures["prediction"]["drifted"] is True and figures["drift_detected"] is True
    performance = figures["performance"]
    assert performance["labelled_rows"] == champion.current.num_rows
    assert performance["log_loss_change"] == pytest.approx(
        performance["log_loss"] - performance["log_loss_baseline"]
    )
    assert any("row_id" in note for note in figures["notes"])  # not in the profile: not compared
    unshifted = tmp_path / "current.parquet"
    pq.write_table(champion.current, unshifted)
    code, figures = _drift(tmp_path, reference, unshifted, *options)
    assert figures["drift_detected"] is False and figures["prediction"]["drifted"] is False


def test_a_profile_file_replaces_profiling_the_reference(tmp_path, halves, champion):
    profile = champion.folder / "reference_profile.json"
    code, figures = _drift(tmp_path, *halves, "--profile", str(profile), "--target", "churn")
    assert code == 0 and set(figures["features"]) == set(
        json.loads(profile.read_text())["features"]
    )


def _without_tenure(tmp_path: Path, halves) -> str:
    path = tmp_path / "no_tenure.parquet"
    pq.write_table(pq.read_table(halves[1]).drop_columns(["tenure"]), path)
    return str(path)


def _not_numbers(tmp_path: Path, halves) -> str:
    table = pq.read_table(halves[1])
    text = pc.cast(table.column("monthly_charges"), "string")
    text = pc.if_else(
        pc.equal(pc.bit_wise_and(pc.cast(table.column("tenure"), "int64"), 1), 1), "n/a", text
    )
    path = tmp_path / "text_charges.parquet"
    pq.write_table(
        table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges", text),
        path,
    )
    return str(path)


@pytest.mark.parametrize(
    ("current", "options", "expected"),
    [
        (lambda tmp, halves: str(tmp / "absent.parquet"), (), ["--current", "absent.parquet"]),
        (_without_tenure, (), ["--current", "'tenure'"]),
        (_not_numbers, (), ["--current", "'monthly_charges'", "not numbers"]),
        (lambda tmp, halves: str(halves[1]), ("--policy", '{"drift_share": 2}'), ["drift_share"]),
        (lambda tmp, halves: str(halves[1]), ("--policy", "{tenure: 1}"), ["not valid JSON"]),
        (
            lambda tmp, halves: str(halves[1]),
            ("--policy", '{"features": {"tenur": {"psi": 0.1}}}'),
            ["'tenur'"],
        ),
        (lambda tmp, halves: str(halves[1]), ("--profile", "nowhere.json"), ["nowhere.json"]),
    ],
    ids=[
        "missing-file",
        "missing-column",
        "text-in-numeric-column",
        "policy-out-of-range",
        "policy-not-json",
        "policy-unknown-feature",
        "missing-profile",
    ],
)
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    tmp_path, halves, capsys, current, options, expected
):
    code, figures = _drift(tmp_path, halves[0], current(tmp_path, halves), *options)
    error = capsys.readouterr().err.strip()
    assert code == 2 and figures is None
    assert error.startswith("ctloop drift: ") and len(error.splitlines()) == 1
    assert all(part in error for part in expected), error
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_model_without_a_reference_profile_is_refused_in_one_line(tmp_path, halves, capsys):
    """A bare booster file serves (by position), but drift needs the profile it was trained
    with: nothing to compare the tables with is bad input, and nothing is written."""
    booster = xgb.train(
        {"objective": "binary:logistic"},
        xgb.DMatrix(np.array([[0.0], [1.0]]), label=[0, 1], feature_names=["tenure"]),
        num_boost_round=2,
    )
    folder = tmp_path / "bare"
    folder.mkdir()
    booster.save_model(str(folder / "model.json"))
    code, figures = _drift(tmp_path, halves[0], halves[1], "--model-uri", str(folder))
    error = capsys.readouterr().err.strip()
    assert code == 2 and figures is None
    assert error.startswith("ctloop drift: ") and len(error.splitlines()) == 1
    assert "reference_profile.json" in error
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
