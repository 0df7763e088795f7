"""Parse one CDC landing file into typed event rows; bad records are quarantined, never dropped.

Two producer layouts land side by side (paths relative to the landing dir):

* ``dms/*.csv`` and ``dms/*.parquet``: AWS-DMS style. Columns ``Op`` (I/U/D), ``commit_ts``,
  ``change_seq``, then the source table's columns (``document_id``, ``document_type``, ``title``,
  ``content``, ``updated_at``, optional ``allowed_groups``). A file without an ``Op`` column is
  a full load (every row an insert). Any further column is kept in ``metadata``.
* ``debezium/*.jsonl`` (or ``.json``): one Debezium envelope per line, optionally wrapped as
  ``{"payload": {...}}`` by Kafka Connect. ``c``/``r`` -> I, ``u`` -> U, ``d`` -> D (document
  fields taken from ``before``); ``source.lsn`` is the change sequence, ``ts_ms`` the commit time.

:func:`parse_landing_file` never raises on file content: every input record becomes exactly one
row, either a valid event (``quarantine_reason`` null) or a quarantined one whose reason starts
with a stable code (``unknown_op``, ``missing_document_id``, ...) followed by ``": <detail>"``.
Problems that concern the whole file (unsupported path, unreadable file) give one row with a
null ``source_line``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Mapping
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

# The window of plausible timestamps (commit_ts / ts_ms and updated_at): from the Unix epoch to
# the ingestion time plus a clock-skew tolerance. A producer's clock may run a little ahead of
# ours; a commit in 2099 or in year 1 is a broken clock or a placeholder, and accepting it would
# make a document look fresh for decades (max_document_age) or stale by millennia (lag). Judged
# when the file is read, so a record quarantined for skew stays quarantined.
EARLIEST_TIMESTAMP = dt.datetime(1970, 1, 1)
DEFAULT_MAX_CLOCK_SKEW = dt.timedelta(minutes=15)

RAW_RECORD_MAX_CHARS = 2000
LAYOUT_EXTENSIONS = {"dms": (".csv", ".parquet"), "debezium": (".jsonl", ".json")}

# Source-table columns mapped to row columns; matched case-insensitively in DMS files.
_DOCUMENT_COLUMNS = ("document_id", "document_type", "title", "content", "updated_at")
_DMS_KNOWN = frozenset(("op", "commit_ts", "change_seq", *_DOCUMENT_COLUMNS, "allowed_groups"))
_DEBEZIUM_OPS = {"c": "I", "r": "I", "u": "U", "d": "D"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1)

_TIMESTAMP_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d+))?)?)?"
    r"\s*(?P<tz>[zZ]|UTC|[+-]\d{2}(?::?\d{2})?)?"
)
_INT_RE = re.compile(r"[+-]?\d+")


# --------------------------------------------------------------------------- public API


def parse_landing_file(
    relative_path: str,
    data: bytes,
    *,
    max_content_bytes: int = 1_000_000,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> list[dict]:
    """Parse one landed file into event rows (dicts keyed by ``ROW_SCHEMA.names``).

    ``relative_path`` is the path under the landing dir (``dms/0001_x.csv``); its top folder
    picks the layout and its extension the format. Content problems never raise: they become
    quarantined rows. Timestamps after ``now`` (naive UTC, default the current time) plus
    ``max_clock_skew``, or before 1970, are quarantined as ``timestamp_out_of_window``.
    """
    return [record.row for record in landing_records(
        relative_path, data, max_content_bytes=max_content_bytes, now=now,
        max_clock_skew=max_clock_skew)]


@dataclass(frozen=True)
class LandingRecord:
    """One row of :func:`parse_landing_file` and where its record lies in the file: bytes
    ``[start, end)`` of a CSV record or JSON line (its line terminator included) or of a JSON
    array element, the row's index for parquet; ``None`` for a problem of the whole file."""

    row: dict
    span: tuple[int, int] | None


def landing_records(
    relative_path: str,
    data: bytes,
    *,
    max_content_bytes: int = 1_000_000,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> list[LandingRecord]:
    """:func:`parse_landing_file`'s rows with their records' places (see
    :func:`without_records`, which removes records from a file: the compliance purge)."""
    path = relative_path.replace("\\", "/").lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    parts = path.split("/")
    layout = parts[0] if len(parts) > 1 and parts[0] in LAYOUT_EXTENSIONS else None
    ctx = _FileContext(
        source_file=relative_path,
        source_layout=layout,
        file_sha256=hashlib.sha256(data).hexdigest(),
        max_content_bytes=max_content_bytes,
        now=now or dt.datetime.now(dt.UTC).replace(tzinfo=None),
        max_clock_skew=max_clock_skew,
    )
    name = parts[-1].lower()
    ext = name[name.rfind(".") :] if "." in name else ""
    if layout is None:
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} is not under dms/ or debezium/ (move it into the folder of "
                "the producer that wrote it)",
            )
        ]
    if len(parts) > 2:
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} is in a subfolder of {layout}/, which ingestion does not "
                f"read (move it into {layout}/ itself)",
            )
        ]
    if ext not in LAYOUT_EXTENSIONS[layout]:
        allowed = ", ".join(LAYOUT_EXTENSIONS[layout])
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} has extension {ext or '(none)'!r}; {layout}/ accepts {allowed}",
            )
        ]
    if ext == ".csv":
        return _parse_dms_csv(ctx, data)
    if ext == ".parquet":
        return _parse_dms_parquet(ctx, data)
    return _parse_debezium(ctx, data, whole_file_json=ext == ".json")


def rows_to_arrow(rows: list[dict]) -> pa.Table:
    """Rows from :func:`parse_landing_file` as a table with exactly ``ROW_SCHEMA``."""
    if not rows:
        return ROW_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def without_records(relative_path: str, data: bytes, drop: list[LandingRecord]) -> bytes:
    """The file's bytes minus the records ``drop`` (from :func:`landing_records` of the same
    bytes), every other byte kept: a CSV keeps its header, byte-order mark and line endings, a
    JSON array stays an array (the kept elements joined by its first separator); a parquet file
    is written anew with the remaining rows and the same schema. Records named by file-level
    problems (no span) cannot be removed one by one and are ignored."""
    spans = sorted({record.span for record in drop if record.span is not None})
    if not spans:
        return data
    name = relative_path.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        keep = [True] * table.num_rows
        for index, _ in spans:
            keep[index] = False
        out = io.BytesIO()
        pq.write_table(table.filter(pa.array(keep)), out)
        return out.getvalue()
    elements = _json_array_elements(data) if name.endswith(".json") else None
    if elements is not None:
        places = [span for *_, span in elements]
        kept = [data[a:b] for a, b in places if (a, b) not in set(spans)]
        separator = data[places[0][1]:places[1][0]] if len(places) > 1 else b",\n"
        return data[: places[0][0]] + separator.join(kept) + data[places[-1][1] :]
    out = bytearray()
    position = 0
    for start, end in spans:  # records do not overlap: CSV records and JSON lines
        out += data[position:start]
        position = end
    out += data[position:]
    return bytes(out)


# --------------------------------------------------------------------------- row building


@dataclass(frozen=True)
class _FileContext:
    source_file: str
    source_layout: str | None
    file_sha256: str
    max_content_bytes: int
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW

    def check_window(self, value: dt.datetime | None, column: str, problems: _Problems) -> None:
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

    def file_problem(self, code: str, detail: str, raw: str | None = None) -> dict:
        row = self.new_row(None)
        _quarantine(row, code, detail, raw)
        return row

    def file_record(self, code: str, detail: str, raw: str | None = None) -> LandingRecord:
        return LandingRecord(self.file_problem(code, detail, raw), None)


def _quarantine(row: dict, code: str, detail: str, raw: str | None) -> None:
    row["op"] = None
    row["quarantine_reason"] = f"{code}: {detail}"
    row["raw_record"] = None if raw is None else raw[:RAW_RECORD_MAX_CHARS]


@dataclass
class _Problems:
    """Problems found in one record; the first one added becomes the quarantine reason."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, code: str, detail: str) -> None:
        self.items.append((code, detail))

    def __bool__(self) -> bool:
        return bool(self.items)


def _finish(row: dict, problems: _Problems, raw: Callable[[], str]) -> dict:
    _replace_lone_surrogates(row, problems)
    if problems:
        code, detail = problems.items[0]
        _quarantine(row, code, detail, raw())
    return row


def _replace_lone_surrogates(row: dict, problems: _Problems) -> None:
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


def _fill_document(
    row: dict,
    doc: Mapping[str, Any],
    extras: Mapping[str, Any],
    problems: _Problems,
    max_content_bytes: int,
    where: str,
) -> None:
    """Type the source table's columns into ``row``; problems are recorded, not raised."""
    for column in ("document_id", "document_type", "title", "content"):
        row[column] = _text(doc.get(column), f"{where}{column}", problems)
    document_id = row["document_id"]
    if document_id is None or not document_id.strip():
        shown = "missing" if document_id is None else f"blank ({document_id!r})"
        problems.add(
            "missing_document_id",
            f"{where}document_id is {shown}; every event, deletes included, must name its document",
        )
    row["updated_at"] = _timestamp(doc.get("updated_at"), f"{where}updated_at", problems)
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


# --------------------------------------------------------------------------- value typing


def _text(value: Any, column: str, problems: _Problems) -> str | None:
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
            problems.add("invalid_utf8", f"{column} has {_utf8_detail(exc)}")
            return None
    kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    problems.add("invalid_envelope", f"{column} holds {kind}, expected text")
    return None


def _int64(value: Any, column: str, problems: _Problems) -> int | None:
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


def _epoch(number: int, column: str, problems: _Problems, unit: str | None) -> dt.datetime | None:
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


def _timestamp(
    value: Any, column: str, problems: _Problems, *, required: bool = False, unit: str | None = None
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


def _groups(value: Any, problems: _Problems) -> list[str] | None:
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
                f"allowed_groups {_clip(text)!r} is not a valid JSON array ({exc}); write "
                '["hr","managers"] or hr;managers',
            )
            return None
    if not isinstance(items, list | tuple) or not all(
        item is None or isinstance(item, str | int) and not isinstance(item, bool) for item in items
    ):
        code = "invalid_json" if isinstance(value, str) else "invalid_envelope"
        problems.add(code, f"allowed_groups {_clip(repr(value))} is not a list of group names")
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


def _raw_json(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)[:RAW_RECORD_MAX_CHARS]


def _duration(delta: dt.timedelta) -> str:
    minutes = delta.total_seconds() / 60
    for unit, size in (("days", 1440), ("hours", 60)):
        if minutes >= size:
            return f"{minutes / size:,.1f} {unit}"
    return f"{minutes:,.1f} minutes"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _utf8_detail(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1]
    return f"invalid UTF-8 byte 0x{bad.hex()} at offset {exc.start} (re-export the source as UTF-8)"


def _backslash(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- DMS


def _dms_event(
    ctx: _FileContext,
    line: int | None,
    values: Mapping[str, Any],
    extras: Mapping[str, Any],
    has_op_column: bool,
    problems: _Problems,
    raw: Callable[[], str],
) -> dict:
    """One DMS record (CSV or parquet) as a row; ``values`` is keyed by lower-case column."""
    row = ctx.new_row(line)
    if has_op_column:
        source_op = _text(values.get("op"), "Op", problems)
        row["source_op"] = source_op
        op = (source_op or "").strip().upper()
        if op in ("I", "U", "D"):
            row["op"] = op
        else:
            problems.add("unknown_op", f"Op {source_op or ''!r} is not I, U or D")
    else:
        row["op"] = "I"  # a DMS full load carries no Op column: every row is an insert
    _fill_document(row, values, extras, problems, ctx.max_content_bytes, where="")
    row["change_seq"] = _int64(values.get("change_seq"), "change_seq", problems)
    row["commit_ts"] = _timestamp(values.get("commit_ts"), "commit_ts", problems, required=True)
    ctx.check_window(row["commit_ts"], "commit_ts", problems)
    ctx.check_window(row["updated_at"], "updated_at", problems)
    problems.items.sort(key=lambda item: _DMS_PRIORITY.get(item[0], 0))
    return _finish(row, problems, raw)


# Order in which a DMS record's problems are reported (structural problems first).
_DMS_PRIORITY = {
    "unknown_op": 1,
    "missing_document_id": 2,
    "missing_change_seq": 3,
    "invalid_timestamp": 4,
    "timestamp_out_of_window": 4,
    "invalid_json": 5,
    "content_too_large": 6,
}


@dataclass
class _CsvRecord:
    line: int  # 1-based physical line where the record starts
    raw: bytes  # the record's bytes without its line terminator
    start: int  # byte offsets of the record in the data, its line terminator included
    end: int
    fields: list[tuple[bytes, bool]]  # (value, was_quoted)
    error: str | None

    @property
    def is_blank(self) -> bool:
        return self.fields == [(b"", False)]


_UNQUOTED_END = {b"\n": re.compile(rb"[,\n]"), b"\r": re.compile(rb"[,\r]")}


def _newline(data: bytes) -> bytes:
    """The file's line terminator: a lone "\r" when the file has no "\n" at all (a classic
    Mac export, which read by "\n" would be one line, its header, and no records), else "\n"
    (or "\r\n"). In a "\n" file a lone "\r" is data, as in RFC 4180 (and whitespace in JSON):
    one stray "\r" in a first line must not turn a whole file's records into garbage."""
    return b"\r" if b"\n" not in data and b"\r" in data else b"\n"


def _split_csv(data: bytes) -> list[_CsvRecord]:
    """RFC 4180 records at the byte level, so one bad byte cannot spoil its neighbours."""
    records: list[_CsvRecord] = []
    nl = _newline(data)
    unquoted_end = _UNQUOTED_END[nl]
    n = len(data)
    pos = 0
    line = 1
    while pos < n:
        start, start_line = pos, line
        fields: list[tuple[bytes, bool]] = []
        error: str | None = None
        while True:
            if pos < n and data[pos] == 0x22:  # quoted field
                buf = bytearray()
                pos += 1
                while True:
                    quote = data.find(b'"', pos)
                    if quote == -1:
                        buf += data[pos:]
                        line += data.count(nl, pos)
                        pos = n
                        error = error or (
                            f"unterminated quoted field starting on line {start_line} runs to "
                            'the end of the file (close the quote or escape it as "")'
                        )
                        break
                    buf += data[pos:quote]
                    line += data.count(nl, pos, quote)
                    if quote + 1 < n and data[quote + 1] == 0x22:
                        buf += b'"'
                        pos = quote + 2
                        continue
                    pos = quote + 1
                    break
                at_end = pos >= n or data[pos] in b"," + nl or data[pos : pos + 2] == b"\r\n"
                if not at_end:
                    error = error or (
                        f"malformed quoting on line {line}: text follows a closing quote "
                        '(quote the whole field and double inner quotes as "")'
                    )
                    match = unquoted_end.search(data, pos)
                    end = match.start() if match else n
                    tail = data[pos:end]
                    if end < n and data[end] == 0x0A and tail.endswith(b"\r"):
                        tail = tail[:-1]
                    buf += tail
                    pos = end
                fields.append((bytes(buf), True))
            else:
                match = unquoted_end.search(data, pos)
                end = match.start() if match else n
                value = data[pos:end]
                if end < n and data[end] == 0x0A and value.endswith(b"\r"):
                    value = value[:-1]
                fields.append((value, False))
                pos = end
            if pos >= n:
                record_end = n
                break
            if data[pos] == 0x2C:  # comma: another field follows (possibly empty at EOF)
                pos += 1
                if pos >= n:
                    fields.append((b"", False))
                    record_end = n
                    break
                continue
            # line terminator
            record_end = pos - 1 if pos > start and data[pos - 1] == 0x0D else pos
            if nl == b"\r":
                record_end = pos
            elif data[pos] == 0x0D:  # "\r\n" right after a closing quote
                record_end = pos
                pos += 1
            pos += 1
            line += 1
            break
        records.append(_CsvRecord(start_line, data[start:record_end], start, pos, fields, error))
    return records


def _parse_dms_csv(ctx: _FileContext, data: bytes) -> list[LandingRecord]:
    if not data:
        return [ctx.file_record("unreadable_file", "file is empty (0 bytes); expected a header")]
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    data = data[bom:]
    records = [r for r in _split_csv(data) if not r.is_blank]
    if not records:
        return [ctx.file_record("unreadable_file", "file has no header row (only blank lines)")]
    header_record, body = records[0], records[1:]
    try:
        header = [value.decode("utf-8").strip() for value, _quoted in header_record.fields]
    except UnicodeDecodeError as exc:
        return [
            ctx.file_record(
                "unreadable_file",
                f"CSV header has {_utf8_detail(exc)}",
                _backslash(header_record.raw),
            )
        ]
    if header_record.error:
        return [
            ctx.file_record(
                "unreadable_file",
                f"CSV header: {header_record.error}",
                _backslash(header_record.raw),
            )
        ]
    if not any(header):
        return [
            ctx.file_record(
                "unreadable_file",
                "file is empty (its first line, the header, is blank); expected a header",
                _backslash(header_record.raw),
            )
        ]
    names = [name or f"column_{i + 1}" for i, name in enumerate(header)]
    keys = [name.lower() for name in names]
    has_op_column = "op" in keys
    rows = []
    for record in body:
        problems = _Problems()
        if record.error:
            problems.add("unreadable_file", record.error)
        if len(record.fields) != len(names):
            problems.add(
                "unreadable_file",
                f"record has {len(record.fields)} fields, header has {len(names)} (check the "
                "quoting of embedded commas and newlines)",
            )
        values: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for name, key, (raw_value, quoted) in zip(names, keys, record.fields, strict=False):
            try:
                value: str | None = raw_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add("invalid_utf8", f"column {name!r} has {_utf8_detail(exc)}")
                value = None
            if value == "" and not quoted:
                value = None  # DMS writes NULL as an unquoted empty field
            if key in _DMS_KNOWN and key not in values:
                values[key] = value
            else:
                extras[name if name not in extras else f"{name}#{len(extras) + 1}"] = value
        row = _dms_event(
            ctx,
            record.line,
            values,
            extras,
            has_op_column,
            problems,
            lambda record=record: _backslash(record.raw),
        )
        rows.append(LandingRecord(row, (bom + record.start, bom + record.end)))
    return rows


def _parse_dms_parquet(ctx: _FileContext, data: bytes) -> list[LandingRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
        columns = []
        for column in table.columns:
            if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
                column = column.cast(pa.timestamp("us", column.type.tz), safe=False)
            columns.append(column)
        table = pa.table(columns, names=table.column_names)
        records = table.to_pylist()
    except Exception as exc:  # any reader failure is data, not a crash
        return [
            ctx.file_record(
                "unreadable_file",
                f"cannot read parquet file ({type(exc).__name__}: {_clip(str(exc), 200)}); "
                "re-land a complete copy",
            )
        ]
    names = table.column_names
    keys = [name.strip().lower() for name in names]
    has_op_column = "op" in keys
    rows = []
    for index, record in enumerate(records, start=1):
        values: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for name, key in zip(names, keys, strict=True):
            value = record.get(name)
            if key in _DMS_KNOWN and key not in values:
                values[key] = value
            else:
                extras[name] = value
        row = _dms_event(
            ctx,
            index,
            values,
            extras,
            has_op_column,
            _Problems(),
            lambda record=record: _raw_json(record),
        )
        rows.append(LandingRecord(row, (index - 1, index)))
    return rows


# --------------------------------------------------------------------------- Debezium


def _parse_debezium(
    ctx: _FileContext, data: bytes, *, whole_file_json: bool
) -> list[LandingRecord]:
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        # like an empty CSV: a producer that died before writing, or a file still being created
        shown = "0 bytes" if not data else "only blank lines"
        return [ctx.file_record("unreadable_file", f"file is empty ({shown}); expected envelopes")]
    if whole_file_json:
        elements = _json_array_elements(data)
        if elements is not None:
            return [
                LandingRecord(_debezium_event(ctx, line, value, raw_text, problems=_Problems()),
                              span)
                for line, value, raw_text, span in elements
            ]
    rows = []
    offset = 0
    newline = _newline(data)
    for index, raw_line in enumerate(data.split(newline), start=1):
        span = (offset, min(offset + len(raw_line) + len(newline), len(data)))
        offset = span[1]
        if not raw_line.strip():
            continue  # blank lines are not records
        line_bytes = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        problems = _Problems()
        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = ctx.new_row(index)
            _quarantine(
                row, "invalid_utf8", f"line has {_utf8_detail(exc)}", _backslash(line_bytes)
            )
            rows.append(LandingRecord(row, span))
            continue
        try:
            value = json.loads(text.lstrip("\ufeff"))
        except (ValueError, RecursionError) as exc:
            row = ctx.new_row(index)
            detail = f"line is not valid JSON ({_clip(str(exc), 120)}); expected one envelope"
            _quarantine(row, "invalid_json", detail + " per line", text)
            rows.append(LandingRecord(row, span))
            continue
        rows.append(LandingRecord(_debezium_event(ctx, index, value, text, problems), span))
    return rows


def _json_array_elements(data: bytes) -> list[tuple[int, Any, str, tuple[int, int]]] | None:
    """A whole-file JSON array (or single object) as (line, value, text, byte span); None if it
    is not."""
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return None
    bom = len(data) - len(text.encode("utf-8"))
    elements = _json_array_texts(text)
    if elements is None:
        return None
    out = []
    chars = byte = 0  # byte offsets from char offsets, in one pass (elements are in order)
    for line, value, start, end in elements:
        byte += len(text[chars:start].encode("utf-8"))
        first = byte
        byte += len(text[start:end].encode("utf-8"))
        chars = end
        out.append((line, value, text[start:end], (bom + first, bom + byte)))
    return out


def _json_array_texts(text: str) -> list[tuple[int, Any, int, int]] | None:
    """(line, value, start, end) of each element of a JSON array text, or of a single object."""
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            start = len(text) - len(stripped)
            value, end = decoder.raw_decode(text, start)
            if text[end:].strip():
                return None  # more than one object: a JSON-lines file
            return [(text.count("\n", 0, start) + 1, value, start, end)]
        if not stripped.startswith("["):
            return None
        pos = len(text) - len(stripped) + 1
        elements = []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos < len(text) and text[pos] == "]" and not elements:
                pos += 1
                break
            value, end = decoder.raw_decode(text, pos)
            elements.append((text.count("\n", 0, pos) + 1, value, pos, end))
            pos = end
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            return None
        return elements if not text[pos:].strip() else None
    except (ValueError, RecursionError):
        return None


def _debezium_event(
    ctx: _FileContext, line: int, value: Any, raw_text: str, problems: _Problems
) -> dict:
    row = ctx.new_row(line)

    def raw() -> str:
        return raw_text

    envelope = value
    if isinstance(envelope, dict) and "payload" in envelope and "op" not in envelope:
        envelope = envelope["payload"]
        if envelope is None:
            problems.add("invalid_envelope", "payload is null (a Kafka tombstone); not an event")
            return _finish(row, problems, raw)
    if not isinstance(envelope, dict):
        kind = "null" if envelope is None else type(envelope).__name__
        problems.add(
            "invalid_envelope",
            f"expected a JSON object with op/before/after/ts_ms/source, got a {kind}",
        )
        return _finish(row, problems, raw)
    if "op" not in envelope:
        problems.add("invalid_envelope", "envelope has no 'op' field (expected c, r, u or d)")
        return _finish(row, problems, raw)
    source_op = envelope["op"]
    row["source_op"] = source_op if isinstance(source_op, str) else _clip(json.dumps(source_op))
    op = _DEBEZIUM_OPS.get(source_op) if isinstance(source_op, str) else None
    if op is None:
        problems.add("unknown_op", f"op {source_op!r} is not c, r, u or d")
    else:
        row["op"] = op
    images = {}
    for side in ("before", "after"):
        image = envelope.get(side)
        if image is not None and not isinstance(image, dict):
            problems.add(
                "invalid_envelope",
                f"'{side}' must be an object or null, got {type(image).__name__}",
            )
            image = None
        images[side] = image
    wanted = "before" if op == "D" else "after"
    doc = images[wanted]
    if doc is None and op is not None:
        problems.add(
            "invalid_envelope",
            f"op {source_op!r} needs the document in '{wanted}', which is null or missing",
        )
    if doc is None:
        doc = images["after"] or images["before"] or {}
    extras = {k: v for k, v in doc.items() if k not in _DOCUMENT_COLUMNS and k != "allowed_groups"}
    source = envelope.get("source")
    lsn = source.get("lsn") if isinstance(source, dict) else None
    seq_problems = _Problems()
    if lsn is None:
        seq_problems.add("missing_change_seq", "source.lsn is missing; events are ordered by it")
    else:
        row["change_seq"] = _int64(lsn, "source.lsn", seq_problems)
    ts_problems = _Problems()
    if "ts_ms" not in envelope or envelope["ts_ms"] is None:
        ts_problems.add("invalid_timestamp", "ts_ms is missing; it is the commit time")
    else:
        row["commit_ts"] = _timestamp(
            envelope["ts_ms"], "ts_ms", ts_problems, required=True, unit="ms"
        )
        ctx.check_window(row["commit_ts"], "ts_ms", ts_problems)
    doc_problems = _Problems()
    _fill_document(row, doc, extras, doc_problems, ctx.max_content_bytes, where="")
    ctx.check_window(row["updated_at"], "updated_at", doc_problems)
    ordered = sorted(
        doc_problems.items + seq_problems.items + ts_problems.items,
        key=lambda item: _DEBEZIUM_PRIORITY.get(item[0], 0),
    )
    problems.items.extend(ordered)
    return _finish(row, problems, raw)


_DEBEZIUM_PRIORITY = {
    "invalid_envelope": 0,
    "invalid_utf8": 0,
    "missing_document_id": 2,
    "missing_change_seq": 3,
    "invalid_timestamp": 4,
    "timestamp_out_of_window": 4,
    "invalid_json": 5,
    "content_too_large": 6,
}
