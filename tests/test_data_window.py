"""Window URI templates: a recurring run picks its window from its own clock."""

import datetime as dt

import pytest

from ctloop.components.data.window import WindowTemplateError, window_uri

NOW = dt.datetime(2026, 3, 1, 2, 30, tzinfo=dt.UTC)


def test_fields_are_filled_from_the_clock_minus_the_offset():
    template = "s3://lake/churn/dt={date}/y={year}/m={month}/d={day}/h={hour}.parquet"
    assert window_uri(template, NOW, offset_days=1) == (
        "s3://lake/churn/dt=2026-02-28/y=2026/m=02/d=28/h=02.parquet"
    )


def test_the_clock_is_read_in_utc():
    local = dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert window_uri("{date}T{hour}", local) == "2026-02-28T22"


def test_a_uri_without_fields_is_returned_unchanged():
    assert window_uri("/data/window.parquet", NOW, offset_days=7) == "/data/window.parquet"


@pytest.mark.parametrize(
    ("template", "message"),
    [("s3://x/{week}.parquet", r"unknown field\(s\) \['week'\]"), ("s3://x/{date", "expected")],
)
def test_a_malformed_template_names_the_problem(template, message):
    with pytest.raises(WindowTemplateError, match=message):
        window_uri(template, NOW)
