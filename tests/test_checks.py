import html
import json
import math

import pytest

from ctloop.components.checks import (
    Check,
    at_least,
    at_most,
    checks_table,
    format_number,
    is_finite_number,
    limit_check,
    markdown_text,
)

HOSTILE = "<img src=x onerror=alert(1)> a|b [x](javascript:alert(1)) `c` \\ \"q\" 's' &amp;"


def test_check_json_keeps_the_gate_artifacts_keys():
    check = Check("threshold", "roc_auc", 0.612, 0.7, "roc_auc 0.612 < min 0.7", passed=False)
    assert check.to_json() == {
        "check": "threshold",
        "metric": "roc_auc",
        "value": 0.612,
        "threshold": 0.7,
        "rule": "roc_auc 0.612 < min 0.7",
        "passed": False,
        "skipped": False,
    }
    assert json.loads(json.dumps(check.to_json())) == check.to_json()


def test_check_json_carries_the_baseline_only_when_there_is_one():
    check = Check("error_rate", "error_rate", 0.1, 0.01, "rule", passed=False, baseline=0.0)
    assert check.to_json()["baseline"] == 0.0


def test_numbers_print_with_six_significant_digits():
    assert format_number(0.79996) == "0.79996"
    assert format_number(1.02 / 10.02) == "0.101796"
    assert format_number(50.0) == "50"
    assert format_number(150000.0) == "150000"


@pytest.mark.parametrize(
    ("value", "finite"),
    [(1, True), (0.5, True), (None, False), (True, False), ("0.5", False), (math.nan, False)],
)
def test_only_finite_int_and_float_are_numbers(value, finite):
    assert is_finite_number(value) is finite


def test_a_figure_exactly_on_its_limit_passes_despite_float_noise():
    assert 0.8 - 0.795 > 0.005
    assert at_most(0.8 - 0.795, 0.005)
    assert at_least(0.795, 0.8 - 0.005)
    assert not at_most(0.0051, 0.005)
    assert not at_least(0.79, 0.8)


def test_limit_check_states_the_relation_that_held():
    ceiling = limit_check("latency", "p95_ms", 120.5, 50.0, limit_name="max", unit=" ms")
    assert not ceiling.passed
    assert ceiling.rule == "p95_ms 120.5 ms > max 50 ms"
    assert (ceiling.value, ceiling.threshold) == (120.5, 50.0)
    floor = limit_check("threshold", "roc_auc", 0.612, 0.7, upper=False, limit_name="min")
    assert floor.rule == "roc_auc 0.612 < min 0.7" and not floor.passed
    met = limit_check("threshold", "roc_auc", 0.8, 0.7, upper=False, limit_name="min")
    assert met.rule == "roc_auc 0.8 >= min 0.7" and met.passed


def test_limit_check_names_the_figure_and_adds_a_note():
    check = limit_check(
        "score_shift", "psi", 0.05, 0.2, label="score psi", note=" between 10 and 20 scores"
    )
    assert check.passed and check.subject == "psi"
    assert check.rule == "score psi 0.05 <= 0.2 between 10 and 20 scores"


def test_table_lists_every_check_with_its_result():
    checks = [
        Check("threshold", "roc_auc", 0.612, 0.7, "roc_auc 0.612 < min 0.7", passed=False),
        Check("champion_comparison", "roc_auc", 0.612, None, "skipped", True, skipped=True),
        Check("threshold", "log_loss", None, 0.6, "log_loss is missing", passed=False),
        Check("latency", "p95_ms", 5.0, 50.0, "p95_ms 5 ms <= max 50 ms", passed=True),
    ]
    assert checks_table(checks).splitlines() == [
        "| check | metric | value | threshold | result | rule |",
        "| --- | --- | ---: | ---: | --- | --- |",
        "| threshold | roc_auc | 0.612 | 0.7 | **FAIL** | roc_auc 0.612 &lt; min 0.7 |",
        "| champion_comparison | roc_auc | 0.612 | — | skipped | skipped |",
        "| threshold | log_loss | — | 0.6 | **FAIL** | log_loss is missing |",
        "| latency | p95_ms | 5 | 50 | pass | p95_ms 5 ms &lt;= max 50 ms |",
    ]


def test_table_shows_the_baseline_in_its_own_column_when_asked():
    check = Check("error_rate", "error_rate", 0.1, 0.01, "r", passed=False, baseline=0.0)
    lines = checks_table([check], value_header="canary", baseline_header="primary").splitlines()
    assert lines[0] == "| check | metric | canary | primary | threshold | result | rule |"
    assert lines[1] == "| --- | --- | ---: | ---: | ---: | --- | --- |"
    assert lines[2] == "| error_rate | error_rate | 0.1 | 0 | 0.01 | **FAIL** | r |"


def test_markdown_text_shows_data_literally_and_renders_no_tag_link_or_cell():
    shown = markdown_text(HOSTILE)
    assert not set(shown) & set("<>|[]`\\\"'")
    # What a Markdown renderer shows is the original text, character for character.
    assert html.unescape(shown) == HOSTILE
    assert markdown_text("a\nb\r\nc") == "a b  c"


def test_table_escapes_names_and_rules_from_policies_and_data():
    subject = "<img src=x onerror=alert(1)>|x"
    check = Check("threshold", subject, 0.5, 0.7, f"{subject} 0.5 < min 0.7", passed=False)
    row = checks_table([check]).splitlines()[2]
    assert "<img" not in row
    assert row.count("|") == 7  # six cells: no pipe from the name split the row
    assert row.startswith("| threshold | &lt;img src=x onerror=alert(1)&gt;&#124;x | 0.5 |")
