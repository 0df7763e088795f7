"""How a retrieval contract's values are read and written: durations, dates, lists bound as
JSON, SQL text literals, a chunk's completeness level, and caller input cut short before it is
echoed in a message."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(minutes?|mins?|hours?|h|days?|d|weeks?|w)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"min": 60, "h": 3600, "d": 86400, "w": 604800}


def clip(value: object, limit: int = 60) -> str:
    """`value` as text, cut to `limit` characters (caller input echoed in a message)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_list(values: Sequence[str] | None) -> str | None:
    """A list parameter as JSON text (the Python path binds lists as text, see sql.py)."""
    return None if values is None else json.dumps([str(v) for v in values])


def parse_duration(value: object) -> dt.timedelta:
    """'30 days', '12 hours', '90 minutes', '2 weeks' (or a number of days) -> timedelta."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a positive duration")
        return dt.timedelta(days=value)
    if isinstance(value, dt.timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("a duration such as '30 days', '12 hours', '90 minutes' or '2 weeks'")
    amount = float(match.group(1))
    unit = match.group(2).lower()
    key = "min" if unit.startswith("min") else unit[0]
    if amount <= 0:
        raise ValueError("a positive duration")
    return dt.timedelta(seconds=amount * _UNIT_SECONDS[key])


def as_datetime(value: object) -> dt.datetime:
    """A date or timestamp (ISO text too) as a naive UTC datetime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return as_datetime(dt.datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError("a date or timestamp such as 2026-01-01 or 2026-01-01T09:00:00")


def sql_text(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_quoted(value: str) -> str:
    """SQL text showing the value of the SQL expression `value` quoted ('x'), or null."""
    quote = "''''"  # a SQL literal holding one single quote
    return f"coalesce({quote} || cast({value} as varchar) || {quote}, 'null')"


def completeness_sql(alias: str = "chunks") -> str:
    """A chunk's completeness (fragment < paragraph < section) from the chunker's columns;
    the column `completeness` of every result, and what min_chunk_completeness compares."""
    return f"""case
            when {alias}.is_split_paragraph is null
                or {alias}.section_chunk_count is null
                or {alias}.section_chunk_index is null
                or {alias}.section_chunk_index < 0
                or {alias}.section_chunk_index >= {alias}.section_chunk_count
                or {alias}.is_split_paragraph then 'fragment'
            when {alias}.section_chunk_count = 1 then 'section'
            else 'paragraph'
        end"""
