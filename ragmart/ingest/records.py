"""The row every landing-file reader produces, and how a bad record becomes a quarantined row.

Content never raises: every input record becomes exactly one row (``ROW_SCHEMA``), either a
valid event (``quarantine_reason`` null) or a quarantined one whose reason starts with a stable
code from ``QUARANTINE_CODES`` followed by ``": <detail>"``, the detail saying what to fix.
Problems that concern the whole file (unsupported path, unreadable file) give one row with a
null ``source_line``. A record may have several problems: they are collected (:class:`Problems`)
and the first in ``PROBLEM_ORDER`` becomes the reason, so structural problems win over the
ones they cause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

ROW_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("source_layout", pa.string()),
        ("file_sha256", pa.string()),
        ("op", pa.string()),
        ("source_op", pa.string()),
        ("change_seq", pa.int64()),
        ("commit_ts", pa.timestamp("us")),
        ("document_id", pa.string()),
        ("document_type", pa.string()),
        ("title", pa.string()),
        ("content", pa.string()),
        ("updated_at", pa.timestamp("us")),
        ("allowed_groups", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("quarantine_reason", pa.string()),
        ("raw_record", pa.string()),
    ]
)

QUARANTINE_CODES = (
    "unknown_op",
    "missing_document_id",
    "missing_change_seq",
    "invalid_json",
    "invalid_envelope",
    "invalid_timestamp",
    "invalid_utf8",
    "content_too_large",
    "unreadable_file",
    "unsupported_file",
    "timestamp_out_of_window",
)

# Which of a record's problems is reported (lowest first; a code not listed counts 0, and ties
# keep the order in which the problems were found): structural problems before the ones they
# cause.
PROBLEM_ORDER = {
    "unknown_op": 1,
    "missing_document_id": 2,
    "missing_change_seq": 3,
    "invalid_timestamp": 4,
    "timestamp_out_of_window": 4,
    "invalid_json": 5,
    "content_too_large": 6,
}

# The window of plausible timestamps (commit_ts / ts_ms and updated_at): from the Unix epoch to
# the ingestion time plus a clock-skew tolerance. A producer's clock may run a little ahead of
# ours; a commit in 2099 or in year 1 is a broken clock or a placeholder, and accepting it would
# make a document look fresh for decades (max_document_age) or stale by millennia (lag). Judged
# when the file is read, so a record quarantined for skew stays quarantined.
EARLIEST_TIMESTAMP = dt.datetime(1970, 1, 1)
DEFAULT_MAX_CLOCK_SKEW = dt.timedelta(minutes=15)

RAW_RECORD_MAX_CHARS = 2000


@dataclass(frozen=True)
class LandingRecord:
    """One row read from a landing file and where its record lies in the file: bytes
    ``[start, end)`` of a CSV record or JSON line (its line terminator included) or of a JSON
    array element, the row's index for parquet; ``None`` for a problem of the whole file."""

    row: dict
    span: tuple[int, int] | None


@dataclass
class Problems:
    """Problems found in one record, in the order found."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, code: str, detail: str) -> None:
        self.items.append((code, detail))

    def __bool__(self) -> bool:
        return bool(self.items)


def by_priority(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Problems sorted by ``PROBLEM_ORDER`` (stable: ties keep the order found)."""
    return sorted(items, key=lambda item: PROBLEM_ORDER.get(item[0], 0))


@dataclass(frozen=True)
class FileContext:
    """What every row of one file carries, and the timestamp window its records are judged by."""

    source_file: str
    source_layout: str | None
    file_sha256: str
    max_content_bytes: int
    now: dt.datetime  # naive UTC
    max_clock_skew: dt.timedelta

    def check_window(self, value: dt.datetime | None, column: str, problems: Problems) -> None:
        """Record ``timestamp_out_of_window`` when ``value`` is outside the plausible window."""
        if value is None:
            return
        if value < EARLIEST_TIMESTAMP:
            problems.add(
                "timestamp_out_of_window",
                f"{column} {value} is before 1970-01-01, the earliest accepted (a placeholder "
                "date or a broken clock; fix the producer and re-land the record)",
            )
        elif value - self.now > self.max_clock_skew:
            problems.add(
                "timestamp_out_of_window",
                f"{column} {value} is {_duration(value - self.now)} after the ingestion time "
                f"{self.now:%Y-%m-%d %H:%M:%S} UTC, beyond the clock-skew tolerance of "
                f"{_duration(self.max_clock_skew)} (fix the producer's clock, or raise "
                "max_clock_skew_minutes if its clock is known to run ahead)",
            )

    def new_row(self, line: int | None) -> dict:
        row: dict[str, Any] = dict.fromkeys(ROW_SCHEMA.names)
        row["source_file"] = self.source_file
        row["source_line"] = line
        row["source_layout"] = self.source_layout
        row["file_sha256"] = self.file_sha256
        return row

    def file_record(self, code: str, detail: str, raw: str | None = None) -> LandingRecord:
        """The one row of a problem that concerns the whole file."""
        row = self.new_row(None)
        quarantine(row, code, detail, raw)
        return LandingRecord(row, None)


def quarantine(row: dict, code: str, detail: str, raw: str | None) -> None:
    row["op"] = None
    row["quarantine_reason"] = f"{code}: {detail}"
    row["raw_record"] = None if raw is None else raw[:RAW_RECORD_MAX_CHARS]


def finish(row: dict, problems: Problems, raw: Callable[[], str]) -> dict:
    """The row, quarantined for its first problem if it has any (``raw`` gives its record)."""
    _replace_lone_surrogates(row, problems)
    if problems:
        code, detail = problems.items[0]
        quarantine(row, code, detail, raw())
    return row


def _replace_lone_surrogates(row: dict, problems: Problems) -> None:
    """JSON escapes can smuggle in lone surrogates, which are not text: quarantine them."""
    for column, value in row.items():
        values = value if isinstance(value, list) else [value]
        if not any(isinstance(v, str) and not _encodable(v) for v in values):
            continue
        cleaned = [_escape_surrogates(v) if isinstance(v, str) else v for v in values]
        row[column] = cleaned if isinstance(value, list) else cleaned[0]
        problems.add(
            "invalid_utf8",
            f"{column} contains a lone surrogate escape (e.g. \\ud800), which is not valid "
            "Unicode; fix the producer's string encoding",
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape_surrogates(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rows_to_arrow(rows: list[dict]) -> pa.Table:
    """Rows read from landing files as a table with exactly ``ROW_SCHEMA``."""
    if not rows:
        return ROW_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


# --------------------------------------------------------------------------- shared by the readers


def line_terminator(data: bytes) -> bytes:
    """The file's line terminator: a lone "\r" when the file has no "\n" at all (a classic
    Mac export, which read by "\n" would be one line, its header, and no records), else "\n"
    (or "\r\n"). In a "\n" file a lone "\r" is data, as in RFC 4180 (and whitespace in JSON):
    one stray "\r" in a first line must not turn a whole file's records into garbage."""
    return b"\r" if b"\n" not in data and b"\r" in data else b"\n"


def _duration(delta: dt.timedelta) -> str:
    minutes = delta.total_seconds() / 60
    for unit, size in (("days", 1440), ("hours", 60)):
        if minutes >= size:
            return f"{minutes / size:,.1f} {unit}"
    return f"{minutes:,.1f} minutes"


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def utf8_detail(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1]
    return f"invalid UTF-8 byte 0x{bad.hex()} at offset {exc.start} (re-export the source as UTF-8)"


def backslash(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")
