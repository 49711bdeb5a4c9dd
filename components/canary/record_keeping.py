"""Keeping a rollout step's decision records: its artifacts first, then MLflow, never lost.

A step writes each record to its artifact file, whole, before anything is logged; with a
tracking URI it then logs each one (`ctloop.components.decisions.store.log_record`). When
logging fails the step fails (a decision missing from MLflow is a hole in `ctloop audit`, so
it must not pass silently), and:

- every record is printed, whole, to the step's log: KFP keeps a failed step's log, but may
  not keep its output artifacts;
- the error says what was already applied (a promotion or rollback done before its record
  could be logged): the service and the registry have changed, and a retry finds the action
  done, changes nothing and is recorded as such.

The error is a `RecordNotLoggedError` (a RuntimeError: a failing environment).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ctloop.components.decisions.record import DecisionRecord, write_record


class RecordNotLoggedError(RuntimeError):
    """Decision records that could not be logged to MLflow: what was applied, and where the
    records are instead."""


def keep_records(
    kept: Sequence[tuple[DecisionRecord, str]],
    tracking_uri: str,
    *,
    applied: str = "",
    log: Callable[[str, DecisionRecord], str] | None = None,
) -> list[str]:
    """Write each (record, path) (an empty path: not written), then log every record to
    MLflow when `tracking_uri` is set; returns the MLflow run ids (none without a URI).

    Args:
        applied: What the step did before its records were kept (`promotion_record.
            applied_text`); empty when it changed nothing.
        log: Logs one record; default `store.log_record`.

    Raises:
        RecordNotLoggedError: logging failed; the message says what was applied.
    """
    for record, path in kept:
        if path:
            write_record(record, path)
    if not tracking_uri:
        return []
    if log is None:
        from ctloop.components.decisions.store import log_record as log
    try:
        return [log(tracking_uri, record) for record, _path in kept]
    except Exception as error:  # whatever failed, the message must say what was applied
        for record, _path in kept:
            print(record.to_json(), file=sys.stderr)
        ids = ", ".join(f"{record.kind} {record.id}" for record, _path in kept)
        done = f"{applied}, but " if applied else ""
        raise RecordNotLoggedError(
            f"{done}its decision record(s) ({ids}) could not be logged to MLflow: {error}; "
            "they are printed whole above (and written to the record file(s) asked for)"
        ) from error
