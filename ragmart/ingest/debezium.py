"""The Debezium layout: ``debezium/*.jsonl`` (or ``.json``), as Debezium writes change events.

One envelope per line, optionally wrapped as ``{"payload": {...}}`` by Kafka Connect; a
``.json`` file may also hold one JSON array of envelopes (or a single envelope). ``c``/``r`` ->
I, ``u`` -> U, ``d`` -> D (document fields taken from ``before``); ``source.lsn`` is the change
sequence, ``ts_ms`` the commit time. Fields of the document image beyond the source table's
columns are kept in ``metadata``.

Each record keeps its byte span (a line with its terminator, or an array element), so the purge
removes a record by cutting its bytes; an array keeps its other elements and its separators
(:func:`without_array_elements`).
"""

from __future__ import annotations

import json
from typing import Any

from ragmart.ingest.records import (
    FileContext,
    LandingRecord,
    Problems,
    backslash,
    by_priority,
    clip,
    finish,
    line_terminator,
    quarantine,
    utf8_detail,
)
from ragmart.ingest.values import DOCUMENT_COLUMNS, as_int64, as_timestamp, fill_document

_OPS = {"c": "I", "r": "I", "u": "U", "d": "D"}


def read(ctx: FileContext, data: bytes, *, whole_file_json: bool) -> list[LandingRecord]:
    """Each envelope of a Debezium file as a row, with its byte span: one per line, or (with
    ``whole_file_json``, a ``.json`` file) the elements of a JSON array if the file is one."""
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        # like an empty CSV: a producer that died before writing, or a file still being created
        shown = "0 bytes" if not data else "only blank lines"
        return [ctx.file_record("unreadable_file", f"file is empty ({shown}); expected envelopes")]
    if whole_file_json:
        elements = _json_array_elements(data)
        if elements is not None:
            return [
                LandingRecord(_event(ctx, line, value, raw_text), span)
                for line, value, raw_text, span in elements
            ]
    rows = []
    offset = 0
    newline = line_terminator(data)
    for index, raw_line in enumerate(data.split(newline), start=1):
        span = (offset, min(offset + len(raw_line) + len(newline), len(data)))
        offset = span[1]
        if not raw_line.strip():
            continue  # blank lines are not records
        line_bytes = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = ctx.new_row(index)
            quarantine(
                row, "invalid_utf8", f"line has {utf8_detail(exc)}", backslash(line_bytes)
            )
            rows.append(LandingRecord(row, span))
            continue
        try:
            value = json.loads(text.lstrip("\ufeff"))
        except (ValueError, RecursionError) as exc:
            row = ctx.new_row(index)
            detail = f"line is not valid JSON ({clip(str(exc), 120)}); expected one envelope"
            quarantine(row, "invalid_json", detail + " per line", text)
            rows.append(LandingRecord(row, span))
            continue
        rows.append(LandingRecord(_event(ctx, index, value, text), span))
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


def _event(ctx: FileContext, line: int, value: Any, raw_text: str) -> dict:
    """One envelope as a row. Problems of the envelope itself come first, in the order found;
    then those of the document, its change sequence and its commit time, by priority."""
    row = ctx.new_row(line)
    problems = Problems()

    def raw() -> str:
        return raw_text

    envelope = value
    if isinstance(envelope, dict) and "payload" in envelope and "op" not in envelope:
        envelope = envelope["payload"]
        if envelope is None:
            problems.add("invalid_envelope", "payload is null (a Kafka tombstone); not an event")
            return finish(row, problems, raw)
    if not isinstance(envelope, dict):
        kind = "null" if envelope is None else type(envelope).__name__
        problems.add(
            "invalid_envelope",
            f"expected a JSON object with op/before/after/ts_ms/source, got a {kind}",
        )
        return finish(row, problems, raw)
    if "op" not in envelope:
        problems.add("invalid_envelope", "envelope has no 'op' field (expected c, r, u or d)")
        return finish(row, problems, raw)
    source_op = envelope["op"]
    row["source_op"] = source_op if isinstance(source_op, str) else clip(json.dumps(source_op))
    op = _OPS.get(source_op) if isinstance(source_op, str) else None
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
    extras = {k: v for k, v in doc.items() if k not in DOCUMENT_COLUMNS and k != "allowed_groups"}
    source = envelope.get("source")
    lsn = source.get("lsn") if isinstance(source, dict) else None
    seq_problems = Problems()
    if lsn is None:
        seq_problems.add("missing_change_seq", "source.lsn is missing; events are ordered by it")
    else:
        row["change_seq"] = as_int64(lsn, "source.lsn", seq_problems)
    ts_problems = Problems()
    if "ts_ms" not in envelope or envelope["ts_ms"] is None:
        ts_problems.add("invalid_timestamp", "ts_ms is missing; it is the commit time")
    else:
        row["commit_ts"] = as_timestamp(
            envelope["ts_ms"], "ts_ms", ts_problems, required=True, unit="ms"
        )
        ctx.check_window(row["commit_ts"], "ts_ms", ts_problems)
    doc_problems = Problems()
    fill_document(row, doc, extras, doc_problems, ctx.max_content_bytes)
    ctx.check_window(row["updated_at"], "updated_at", doc_problems)
    problems.items += by_priority(doc_problems.items + seq_problems.items + ts_problems.items)
    return finish(row, problems, raw)


def without_array_elements(data: bytes, spans: list[tuple[int, int]]) -> bytes | None:
    """A JSON array file without the elements of ``spans``, its other elements joined by its
    first separator (a single envelope: the file emptied of it); ``None`` if the file is not a
    JSON array or single object (it is JSON lines)."""
    elements = _json_array_elements(data)
    if elements is None:
        return None
    places = [span for *_, span in elements]
    kept = [data[a:b] for a, b in places if (a, b) not in set(spans)]
    separator = data[places[0][1] : places[1][0]] if len(places) > 1 else b",\n"
    return data[: places[0][0]] + separator.join(kept) + data[places[-1][1] :]
