"""The DMS layout: ``dms/*.csv`` and ``dms/*.parquet``, as AWS DMS writes them.

Columns ``Op`` (I/U/D), ``commit_ts``, ``change_seq``, then the source table's columns
(``document_id``, ``document_type``, ``title``, ``content``, ``updated_at``, optional
``allowed_groups``), matched case-insensitively. A file without an ``Op`` column is a full load
(every row an insert). Any further column is kept in ``metadata``. DMS writes NULL as an unquoted
empty CSV field.

CSV is split into RFC 4180 records at the byte level (:func:`_split_csv`), so one bad byte or
one broken quote spoils only its own record, and each record keeps its byte span: the purge
removes a record by cutting its bytes, every other byte kept. A parquet record's span is its row
index, and the purge writes the file anew without those rows (:func:`without_parquet_rows`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ragmart.ingest.records import (
    FileContext,
    LandingRecord,
    Problems,
    backslash,
    by_priority,
    clip,
    finish,
    line_terminator,
    utf8_detail,
)
from ragmart.ingest.values import (
    DOCUMENT_COLUMNS,
    as_int64,
    as_text,
    as_timestamp,
    fill_document,
    raw_json,
)

# DMS columns read into the row (lower case); any other column goes to metadata
_KNOWN = frozenset(("op", "commit_ts", "change_seq", *DOCUMENT_COLUMNS, "allowed_groups"))


def read_csv(ctx: FileContext, data: bytes) -> list[LandingRecord]:
    """Each record of a DMS CSV file as a row, with its byte span (a byte-order mark included
    in none). A file without a usable header is one ``unreadable_file`` row."""
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
                f"CSV header has {utf8_detail(exc)}",
                backslash(header_record.raw),
            )
        ]
    if header_record.error:
        return [
            ctx.file_record(
                "unreadable_file",
                f"CSV header: {header_record.error}",
                backslash(header_record.raw),
            )
        ]
    if not any(header):
        return [
            ctx.file_record(
                "unreadable_file",
                "file is empty (its first line, the header, is blank); expected a header",
                backslash(header_record.raw),
            )
        ]
    names = [name or f"column_{i + 1}" for i, name in enumerate(header)]
    keys = [name.lower() for name in names]
    has_op_column = "op" in keys
    rows = []
    for record in body:
        problems = Problems()
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
                problems.add("invalid_utf8", f"column {name!r} has {utf8_detail(exc)}")
                value = None
            if value == "" and not quoted:
                value = None  # DMS writes NULL as an unquoted empty field
            if key in _KNOWN and key not in values:
                values[key] = value
            else:
                extras[name if name not in extras else f"{name}#{len(extras) + 1}"] = value
        row = _event(
            ctx,
            record.line,
            values,
            extras,
            has_op_column,
            problems,
            lambda record=record: backslash(record.raw),
        )
        rows.append(LandingRecord(row, (bom + record.start, bom + record.end)))
    return rows


def read_parquet(ctx: FileContext, data: bytes) -> list[LandingRecord]:
    """Each row of a DMS parquet file as a row, its span its index; a file the reader cannot
    read is one ``unreadable_file`` row."""
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
                f"cannot read parquet file ({type(exc).__name__}: {clip(str(exc), 200)}); "
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
            if key in _KNOWN and key not in values:
                values[key] = value
            else:
                extras[name] = value
        row = _event(
            ctx,
            index,
            values,
            extras,
            has_op_column,
            Problems(),
            lambda record=record: raw_json(record),
        )
        rows.append(LandingRecord(row, (index - 1, index)))
    return rows


def _event(
    ctx: FileContext,
    line: int | None,
    values: Mapping[str, Any],
    extras: Mapping[str, Any],
    has_op_column: bool,
    problems: Problems,
    raw: Callable[[], str],
) -> dict:
    """One DMS record (CSV or parquet) as a row; ``values`` is keyed by lower-case column."""
    row = ctx.new_row(line)
    if has_op_column:
        source_op = as_text(values.get("op"), "Op", problems)
        row["source_op"] = source_op
        op = (source_op or "").strip().upper()
        if op in ("I", "U", "D"):
            row["op"] = op
        else:
            problems.add("unknown_op", f"Op {source_op or ''!r} is not I, U or D")
    else:
        row["op"] = "I"  # a DMS full load carries no Op column: every row is an insert
    fill_document(row, values, extras, problems, ctx.max_content_bytes)
    row["change_seq"] = as_int64(values.get("change_seq"), "change_seq", problems)
    row["commit_ts"] = as_timestamp(values.get("commit_ts"), "commit_ts", problems, required=True)
    ctx.check_window(row["commit_ts"], "commit_ts", problems)
    ctx.check_window(row["updated_at"], "updated_at", problems)
    problems.items = by_priority(problems.items)
    return finish(row, problems, raw)


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


def _split_csv(data: bytes) -> list[_CsvRecord]:
    """RFC 4180 records at the byte level, so one bad byte cannot spoil its neighbours."""
    records: list[_CsvRecord] = []
    nl = line_terminator(data)
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


def without_parquet_rows(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """The parquet file written anew, with the same schema, without the rows of ``spans``
    (records of :func:`read_parquet`: ``(index, index + 1)``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    keep = [True] * table.num_rows
    for index, _ in spans:
        keep[index] = False
    out = io.BytesIO()
    pq.write_table(table.filter(pa.array(keep)), out)
    return out.getvalue()
