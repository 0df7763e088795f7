"""Tiny writers of landing files in both CDC layouts, for tests."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

BASE_TS = dt.datetime(2026, 11, 2, 9, 0, 0)


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


def dms_csv(rows: list[dict], *, with_op: bool = True) -> str:
    """rows: dicts with op, seq, document_id, and optional document_type/title/content."""
    out = io.StringIO()
    fields = ["document_id", "document_type", "title", "content", "updated_at"]
    header = (["Op"] if with_op else []) + ["commit_ts", "change_seq", *fields]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [
            ts(row["seq"]).isoformat(sep=" "),
            row["seq"],
            row["document_id"],
            row.get("document_type", "policy"),
            row.get("title", row["document_id"]),
            "" if row["op"] == "D" else row.get("content", ""),
            ts(row["seq"]).isoformat(sep=" "),
        ]
        writer.writerow(([row["op"]] if with_op else []) + values)
    return out.getvalue()


def debezium_jsonl(rows: list[dict]) -> str:
    """rows: dicts with op (c/u/d/r), seq, document_id and optional fields."""
    lines = []
    for row in rows:
        image = {
            "document_id": row["document_id"],
            "document_type": row.get("document_type", "policy"),
            "title": row.get("title", row["document_id"]),
            "content": row.get("content", ""),
            "updated_at": ts(row["seq"]).isoformat(),
        }
        if "allowed_groups" in row:
            image["allowed_groups"] = row["allowed_groups"]
        before = image if row["op"] in ("u", "d") else None
        after = None if row["op"] == "d" else image
        envelope = {
            "before": before,
            "after": after,
            "op": row["op"],
            "ts_ms": int(ts(row["seq"]).replace(tzinfo=dt.UTC).timestamp() * 1000),
            "source": {"lsn": row["seq"], "db": "docs", "table": "documents"},
        }
        lines.append(json.dumps(envelope))
    return "\n".join(lines) + "\n"
