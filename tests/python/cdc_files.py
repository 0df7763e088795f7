"""Tiny landing files and documents for tests.

A test writes its CDC events as dicts (``op``, ``seq``, ``document_id`` and optional
``document_type``, ``title``, ``content``, ``allowed_groups``); they are encoded by the same
encoders that write the bundled sample (tools/cdc_files.py), so a test file and a sample file
of the same layout differ only in their events. Event ``seq`` is the change sequence and, in
minutes after BASE_TS, the commit and update time.
"""

from __future__ import annotations

import datetime as dt

from tools.cdc_files import Document, Event, encode_debezium, encode_dms_csv

BASE_TS = dt.datetime(2026, 11, 2, 9, 0, 0)
_DEBEZIUM_OPS = {"c": "I", "r": "I", "u": "U", "d": "D"}


def ts(seq: int) -> dt.datetime:
    return BASE_TS + dt.timedelta(minutes=seq)


def document(title: str, sections: dict[str, list[str]]) -> str:
    parts = [f"# {title}", ""]
    for heading, paragraphs in sections.items():
        parts += [f"## {heading}", ""]
        for paragraph in paragraphs:
            parts += [paragraph, ""]
    return "\n".join(parts)


def paragraph(topic: str, n: int, words: int = 60) -> str:
    """A deterministic paragraph of about `words` words about `topic`."""
    vocabulary = (
        "employees managers approval request days policy company budget travel leave "
        "security access review incident report data customer refund vendor contract "
        "training equipment office remote schedule payroll benefits exception deadline"
    ).split()
    body = [vocabulary[(n * 7 + i * 3 + len(topic)) % len(vocabulary)] for i in range(words)]
    return f"{topic} rule {n}: " + " ".join(body) + "."


def _event(row: dict, op: str) -> Event:
    """One test row as an event; an update or delete carries the row as its before image too."""
    groups = row.get("allowed_groups")
    doc = Document(
        document_id=row["document_id"],
        document_type=row.get("document_type", "policy"),
        title=row.get("title", row["document_id"]),
        content=row.get("content", ""),
        updated_at=ts(row["seq"]),
        allowed_groups=None if groups is None else tuple(groups),
        extra=(),
    )
    return Event(op, row["op"], row["seq"], ts(row["seq"]), doc, None if op == "I" else doc)


def dms_csv(rows: list[dict]) -> str:
    """rows: dicts with op (I/U/D), seq, document_id and optional fields."""
    return encode_dms_csv([_event(row, row["op"]) for row in rows]).decode("utf-8")


def debezium_jsonl(rows: list[dict]) -> str:
    """rows: dicts with op (c/u/d/r), seq, document_id and optional fields."""
    events = [_event(row, _DEBEZIUM_OPS[row["op"]]) for row in rows]
    return encode_debezium(events).decode("utf-8")
