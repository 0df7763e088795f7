"""CDC landing files written the way AWS DMS and Debezium write them: the one set of encoders.

The sample generator (``tools/sample.py``) writes the bundled landing zone with them, and the
tests (``tests/python/cdc_files.py``) their landing files, so what the readers in
``ragmart.ingest`` are tested on is what the sample holds. An :class:`Event` is one committed
change of one row of the source table ``documents`` (a :class:`Document`); the encoders turn a
sequence of events into the bytes of one landing file, and nothing here depends on the clock:
the same events give the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_DMS_COLUMNS = (
    "Op",
    "commit_ts",
    "change_seq",
    "document_id",
    "document_type",
    "title",
    "content",
    "updated_at",
    "allowed_groups",
)
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class Document:
    """A document's state as the source table holds it (one row of ``documents``)."""

    document_id: str
    document_type: str
    title: str
    content: str
    updated_at: dt.datetime
    allowed_groups: tuple[str, ...] | None
    extra: tuple[tuple[str, str], ...]  # further source columns: source_path, other front matter

    @property
    def word_count(self) -> int:
        return len(self.content.split())

    def columns(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "document_type": self.document_type,
            "title": self.title,
            "content": self.content,
            "updated_at": self.updated_at,
            "allowed_groups": None if self.allowed_groups is None else list(self.allowed_groups),
            **dict(self.extra),
        }


@dataclass(frozen=True)
class Event:
    op: str  # I, U, D
    source_op: str  # Debezium op: r, c, u, d
    change_seq: int
    commit_ts: dt.datetime  # naive UTC
    document: Document  # the row after the change (for D: the last values)
    before: Document | None


def ts_text(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _ts_offset(value: dt.datetime, hours: int) -> str:
    local = value + dt.timedelta(hours=hours)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"


def _epoch_us(value: dt.datetime) -> int:
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def _extra_columns(events: Iterable[Event]) -> list[str]:
    return sorted({k for e in events for k, _v in e.document.extra})


def encode_dms_csv(
    events: Sequence[Event], *, with_op: bool = True, groups: str = "json", offset_hours: int = 0
) -> bytes:
    """DMS CSV (RFC 4180). groups: 'json' (["a","b"]), 'semicolon' or 'comma'."""
    extras = _extra_columns(events)
    header = [c for c in _DMS_COLUMNS if with_op or c != "Op"] + extras
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)

    def ts(value: dt.datetime) -> str:
        return _ts_offset(value, offset_hours) if offset_hours else ts_text(value)

    for e in events:
        doc = e.document
        if doc.allowed_groups is None:
            acl = ""
        elif groups == "json" or not doc.allowed_groups:
            acl = json.dumps(list(doc.allowed_groups), separators=(",", ":"), ensure_ascii=False)
        else:
            acl = (";" if groups == "semicolon" else ",").join(doc.allowed_groups)
        values = {
            "Op": e.op,
            "commit_ts": ts(e.commit_ts),
            "change_seq": str(e.change_seq),
            "document_id": doc.document_id,
            "document_type": doc.document_type,
            "title": doc.title,
            "content": "" if e.op == "D" else doc.content,
            "updated_at": ts(doc.updated_at),
            "allowed_groups": acl,
            **dict(doc.extra),
        }
        writer.writerow([values.get(column, "") for column in header])
    return out.getvalue().encode("utf-8")


def encode_dms_parquet(events: Sequence[Event]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    extras = _extra_columns(events)
    docs = [e.document for e in events]
    columns: dict[str, pa.Array] = {
        "Op": pa.array([e.op for e in events], pa.string()),
        "commit_ts": pa.array(
            [e.commit_ts.replace(tzinfo=dt.UTC) for e in events], pa.timestamp("us", tz="UTC")
        ),
        "change_seq": pa.array([e.change_seq for e in events], pa.int64()),
        "document_id": pa.array([d.document_id for d in docs], pa.string()),
        "document_type": pa.array([d.document_type for d in docs], pa.string()),
        "title": pa.array([d.title for d in docs], pa.string()),
        "content": pa.array(
            ["" if e.op == "D" else e.document.content for e in events], pa.string()
        ),
        "updated_at": pa.array([d.updated_at for d in docs], pa.timestamp("us")),
        "allowed_groups": pa.array(
            [None if d.allowed_groups is None else list(d.allowed_groups) for d in docs],
            pa.list_(pa.string()),
        ),
    }
    for name in extras:
        columns[name] = pa.array([dict(d.extra).get(name) for d in docs], pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="snappy")
    return sink.getvalue()


def encode_debezium(
    events: Sequence[Event], *, updated_at: str = "iso", kafka_connect: bool = False
) -> bytes:
    """Debezium envelopes, one per line. updated_at: 'iso', 'epoch_us' or 'epoch_ms'."""

    def image(doc: Document | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        row = doc.columns()
        if updated_at == "epoch_us":
            row["updated_at"] = _epoch_us(doc.updated_at)
        elif updated_at == "epoch_ms":
            row["updated_at"] = _epoch_us(doc.updated_at) // 1000
        else:
            row["updated_at"] = doc.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return row

    lines = []
    for e in events:
        ts_ms = _epoch_us(e.commit_ts) // 1000
        before = e.before if e.op != "I" else None
        after = None if e.op == "D" else e.document
        envelope = {
            "before": image(before),
            "after": image(after),
            "source": {
                "version": "2.7.3.Final",
                "connector": "postgresql",
                "name": "ragmart",
                "ts_ms": ts_ms,
                "snapshot": "true" if e.source_op == "r" else "false",
                "db": "policies",
                "schema": "public",
                "table": "documents",
                "txId": 7000 + e.change_seq,
                "lsn": e.change_seq,
            },
            "op": e.source_op,
            "ts_ms": ts_ms,
        }
        if kafka_connect:
            envelope = {
                "schema": {
                    "type": "struct",
                    "name": "ragmart.public.documents.Envelope",
                    "optional": False,
                },
                "payload": envelope,
            }
        lines.append(json.dumps(envelope, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")
