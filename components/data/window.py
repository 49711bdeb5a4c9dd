"""Which production window a monitoring run reads: a URI template filled in at run time.

A recurring run passes the same parameters every time, so the window's URI is a template
such as `s3://lake/churn/dt={date}/` filled in from the run's own clock: `{date}` (YYYY-MM-DD),
`{year}`, `{month}`, `{day}`, `{hour}` (zero-padded, UTC), `window_offset_days` back (1 =
yesterday's partition, the usual choice for a nightly run). Using the clock rather than KFP's
scheduled-time placeholder keeps one definition for scheduled, manual and local runs (the
placeholder does not resolve under kfp.local); with no catch-up the two agree.
"""

from __future__ import annotations

import datetime as dt
import string

FIELDS = ("date", "year", "month", "day", "hour")


class WindowTemplateError(ValueError):
    """A window URI template with a field other than `FIELDS`, or malformed braces."""


def window_uri(template: str, now: dt.datetime, offset_days: int = 0) -> str:
    """`template` with its fields filled from `now` (UTC) minus `offset_days`."""
    moment = now.astimezone(dt.UTC) - dt.timedelta(days=offset_days)
    values = {
        "date": moment.strftime("%Y-%m-%d"),
        "year": f"{moment.year:04d}",
        "month": f"{moment.month:02d}",
        "day": f"{moment.day:02d}",
        "hour": f"{moment.hour:02d}",
    }
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise WindowTemplateError(f"window URI template {template!r}: {error}") from error
    unknown = sorted({name for name in names if name not in FIELDS})
    if unknown:
        raise WindowTemplateError(
            f"window URI template {template!r}: unknown field(s) {unknown}; use {list(FIELDS)}"
        )
    return template.format(**values)
