"""Lineage helpers: which dbt invocation is writing, and when."""

from __future__ import annotations

import datetime as dt


def current_invocation_id() -> str:
    """The id of the dbt invocation running in this process ('' outside dbt)."""
    try:
        from dbt_common.events.functions import get_invocation_id
    except ImportError:  # pragma: no cover - dbt is always installed with ragmart
        return ""
    return str(get_invocation_id() or "")


def utc_now() -> dt.datetime:
    """Naive UTC timestamp with microseconds, the project's timestamp convention."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
