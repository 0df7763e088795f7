"""Source values typed into row columns; what cannot be typed is recorded as a problem.

Producers spell the same value many ways: a change sequence as an int, a float or a string; a
timestamp as ISO 8601 text with or without an offset, as epoch seconds, milli-, micro- or
nanoseconds, or as a parquet timestamp; ``allowed_groups`` as a list, a JSON array or a
``;``/``,``-separated string. Each is typed here once, for every layout; a value that cannot be
typed adds a problem (see :mod:`ragmart.ingest.records`), never an exception.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ragmart.ingest.records import RAW_RECORD_MAX_CHARS, Problems, clip, utf8_detail

# The source table's columns mapped to row columns of the same name.
DOCUMENT_COLUMNS = ("document_id", "document_type", "title", "content", "updated_at")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1)

_TIMESTAMP_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d+))?)?)?"
    r"\s*(?P<tz>[zZ]|UTC|[+-]\d{2}(?::?\d{2})?)?"
)
_INT_RE = re.compile(r"[+-]?\d+")


def fill_document(
    row: dict,
    doc: Mapping[str, Any],
    extras: Mapping[str, Any],
    problems: Problems,
    max_content_bytes: int,
) -> None:
    """Type the source table's columns into ``row``; problems are recorded, not raised."""
    for column in ("document_id", "document_type", "title", "content"):
        row[column] = as_text(doc.get(column), column, problems)
    document_id = row["document_id"]
    if document_id is None or not document_id.strip():
        shown = "missing" if document_id is None else f"blank ({document_id!r})"
        problems.add(
            "missing_document_id",
            f"document_id is {shown}; every event, deletes included, must name its document",
        )
    row["updated_at"] = as_timestamp(doc.get("updated_at"), "updated_at", problems)
    row["allowed_groups"] = _groups(doc.get("allowed_groups"), problems)
    row["metadata"] = _metadata(extras)
    content = row["content"]
    if content is not None:
        size = len(content.encode("utf-8", "surrogatepass"))
        if size > max_content_bytes:
            row["content"] = None
            problems.add(
                "content_too_large",
                f"content of {document_id!r} is {size} bytes, over the limit of "
                f"{max_content_bytes} (raise max_content_bytes or split the document)",
            )


def as_text(value: Any, column: str, problems: Problems) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add("invalid_utf8", f"{column} has {utf8_detail(exc)}")
            return None
    kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    problems.add("invalid_envelope", f"{column} holds {kind}, expected text")
    return None


def as_int64(value: Any, column: str, problems: Problems) -> int | None:
    number: int | None = None
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.add(
            "missing_change_seq", f"{column} is empty; events are ordered by it, so it is required"
        )
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        problems.add("missing_change_seq", f"{column} {value!r} is not an integer")
        return None
    if not _INT64_MIN <= number <= _INT64_MAX:
        problems.add("missing_change_seq", f"{column} {value!r} is outside the int64 range")
        return None
    return number


def _epoch(number: int, column: str, problems: Problems, unit: str | None) -> dt.datetime | None:
    """Epoch number to naive UTC; without ``unit`` the unit is decided by magnitude."""
    if unit is None:
        size = abs(number)
        unit = (
            "ns" if size >= 10**17 else "us" if size >= 10**14 else "ms" if size >= 10**11 else "s"
        )
    micros = {"ns": number // 1000, "us": number, "ms": number * 1000, "s": number * 1_000_000}[
        unit
    ]
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        problems.add(
            "invalid_timestamp", f"{column} {number!r} ({unit} since epoch) is out of range"
        )
        return None


def as_timestamp(
    value: Any, column: str, problems: Problems, *, required: bool = False, unit: str | None = None
) -> dt.datetime | None:
    """A timestamp (string, epoch number or datetime) as naive UTC; offsets are applied."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.add("invalid_timestamp", f"{column} is missing; it is required")
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            try:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:
                problems.add("invalid_timestamp", f"{column} {value!r} is out of range in UTC")
                return None
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _epoch(value, column, problems, unit)
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return _epoch(int(text), column, problems, unit)
        parsed = _parse_timestamp_text(text)
        if parsed is not None:
            return parsed
    problems.add(
        "invalid_timestamp",
        f"{column} {value!r} is not a timestamp (expected e.g. '2026-11-02 09:15:00', ISO 8601 "
        "with an optional offset, or epoch milli/microseconds)",
    )
    return None


def _parse_timestamp_text(text: str) -> dt.datetime | None:
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    try:
        date = dt.date.fromisoformat(match["date"])
        value = dt.datetime(
            date.year,
            date.month,
            date.day,
            int(match["h"] or 0),
            int(match["m"] or 0),
            int(match["s"] or 0),
            int(frac),
        )
        tz = match["tz"]
        if tz and tz not in ("Z", "z", "UTC"):
            digits = tz[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            value = value - offset if tz[0] == "+" else value + offset
    except (ValueError, OverflowError):
        return None
    return value


def _groups(value: Any, problems: Problems) -> list[str] | None:
    """allowed_groups: a list, a JSON array string, or a ';'/','-separated string."""
    if value is None:
        return None
    items: Any = value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not text.startswith("["):
            sep = ";" if ";" in text else ","
            return [part.strip() for part in text.split(sep) if part.strip()]
        try:
            items = json.loads(text)
        except (ValueError, RecursionError) as exc:
            problems.add(
                "invalid_json",
                f"allowed_groups {clip(text)!r} is not a valid JSON array ({exc}); write "
                '["hr","managers"] or hr;managers',
            )
            return None
    if not isinstance(items, list | tuple) or not all(
        item is None or isinstance(item, str | int) and not isinstance(item, bool) for item in items
    ):
        code = "invalid_json" if isinstance(value, str) else "invalid_envelope"
        problems.add(code, f"allowed_groups {clip(repr(value))} is not a list of group names")
        return None
    return [str(item) for item in items if item is not None]


def _metadata(extras: Mapping[str, Any]) -> str | None:
    if not extras:
        return None
    return json.dumps(
        {str(k): _jsonable(v) for k, v in extras.items()}, ensure_ascii=False, allow_nan=False
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def raw_json(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)[:RAW_RECORD_MAX_CHARS]

