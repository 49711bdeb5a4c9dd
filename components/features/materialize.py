"""Keeping the online store fresh: load the latest feature values up to a time into SQLite.

Incremental: each run loads what changed since the previous one (Feast records how far each
feature view got), so a scheduled step costs only the new rows. That record is also why an end
in the future is refused: the next run would start from it, and the values written in between
would never reach the online store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ctloop.components.features.repo import open_store


def materialization_end(text: str) -> datetime:
    """The end a step's `end` parameter names: an ISO 8601 time with a zone; empty: now (UTC)."""
    if not text:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(
            f"materialization end {text!r} is not an ISO 8601 time with a zone ({error})"
        ) from error


def materialize(repo_dir: str, end: datetime) -> dict[str, str]:
    """Materialize every feature view up to `end` (timezone-aware); {view: up to when}."""
    if end.tzinfo is None:
        raise ValueError(f"materialization end {end.isoformat()} has no time zone; give UTC")
    now = datetime.now(UTC)
    if end > now:
        raise ValueError(
            f"materialization end {end.isoformat()} is in the future (now {now.isoformat()}): "
            "the next materialization would start there and never load the values written "
            "before it; give a time up to now"
        )
    store = open_store(repo_dir)
    store.materialize_incremental(end_date=end)
    return {
        view.name: view.most_recent_end_time.isoformat()
        for view in store.list_feature_views(allow_cache=False)
    }
