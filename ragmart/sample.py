"""Deterministic generator of the bundled sample CDC landing zone.

``python -m ragmart.sample --documents sample/documents --out sample/landing`` turns a folder of
Markdown documents with YAML front matter (``document_id``, ``document_type``, ``title``,
optional ``allowed_groups``) into a landing zone of DMS and Debezium batches that exercise every
CDC situation the pipeline must survive, plus ``EXPECTED.json``: the state a correct replay
(order by change_seq, dedupe identical (document_id, change_seq)) must end in.

Batches, in file-name (arrival) order:

====  ===========================================  ==========================================
0001  dms/0001_initial_load.csv                    DMS full load (no ``Op`` column), half
0002  debezium/0002_initial_snapshot.jsonl         Debezium snapshot (``r``), the other half
0003  dms/0003_edits.csv                           one-paragraph edits, incl. the longest doc
0004  debezium/0004_edits.jsonl                    one-paragraph edits (epoch-us updated_at)
0005  dms/0005_inserts.parquet                     insert of a held-back document (parquet)
0006  debezium/0006_inserts.jsonl                  insert of the other one (``c``, Kafka wrap)
0007  dms/0007_delete.csv                          delete: last values, empty content
0008  debezium/0008_rename.jsonl                   rename: ``d`` old id + ``c`` new id
0009  debezium/0009_replay_0004_edits.jsonl        byte-identical copy of 0004
0010  dms/0010_replay_0004_edits_as_dms.csv        0004's events re-encoded as DMS
0099  dms/0099_late_arrival.csv                    late: older sequences (+01:00 offsets)
====  ===========================================  ==========================================

Nothing depends on the wall clock or on randomness: the same documents give byte-identical
files. The two documents held back from the initial load, the deleted, renamed and late-edited
documents are picked from the sorted document ids; the longest document (by words) gets an edit.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MIN_DOCUMENTS = 6
LONG_DOCUMENT_WORDS = 2000

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
_INITIAL_UPDATED_AT = dt.datetime(2026, 10, 1, 8, 0)
_EPOCH = dt.datetime(1970, 1, 1)
_LIST_ITEM = re.compile(r"\s*([-*+]|\d+[.)])\s")
_FENCE = re.compile(r"\s*(```|~~~)")


# --------------------------------------------------------------------------- documents


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


def read_document(path: Path) -> Document:
    """One Markdown file with front matter; ``content`` is the body after the front matter."""
    from ragmart.safe_yaml import YAMLLimitError, load_yaml

    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    how = (
        "start the file with a '---' line, then 'document_id:', 'document_type:', 'title:' "
        "(optional 'allowed_groups: [a, b]'), then a closing '---' line"
    )
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: no front matter; {how}")
    end = text.find("\n---\n", 3)
    if end == -1:
        if text.endswith("\n---"):
            end = len(text) - 4
        else:
            raise ValueError(f"{path}: front matter is not closed; {how}")
    try:
        meta = load_yaml(text[4:end] or "{}", f"{path} (front matter)")
    except YAMLLimitError as exc:
        raise ValueError(f"{exc}; {how}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: front matter must be key: value lines; {how}")
    values = {}
    for key in ("document_id", "document_type", "title"):
        value = meta.get(key)
        if value is None or not str(value).strip():
            raise ValueError(f"{path}: front matter lacks '{key}'; {how}")
        values[key] = str(value).strip()
    extra = {"source_path": path.name}
    for key in sorted(str(k) for k in meta):
        if key not in ("document_id", "document_type", "title", "allowed_groups"):
            extra[key] = _front_matter_text(meta[key])
    return Document(
        document_id=values["document_id"],
        document_type=values["document_type"],
        title=values["title"],
        content=text[end + 5 :].lstrip("\n"),
        updated_at=_INITIAL_UPDATED_AT,
        allowed_groups=_groups(meta.get("allowed_groups"), path),
        extra=tuple(sorted(extra.items())),
    )


def read_documents(documents_dir: Path) -> list[Document]:
    """All ``*.md`` documents of a folder, sorted by document_id; duplicates are an error."""
    documents_dir = Path(documents_dir)
    if not documents_dir.is_dir():
        raise ValueError(f"{documents_dir}: not a folder; pass --documents <folder of .md files>")
    by_id: dict[str, tuple[Path, Document]] = {}
    for path in sorted(documents_dir.glob("*.md")):
        doc = read_document(path)
        if doc.document_id in by_id:
            other = by_id[doc.document_id][0].name
            raise ValueError(
                f"{path}: document_id {doc.document_id!r} is also used by {other}; "
                "give each document its own id"
            )
        by_id[doc.document_id] = (path, doc)
    return [by_id[key][1] for key in sorted(by_id)]


def _front_matter_text(value: Any) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def _groups(value: Any, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        sep = ";" if ";" in value else ","
        return tuple(part.strip() for part in value.split(sep) if part.strip())
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return tuple(str(v) for v in value)
    raise ValueError(
        f"{path}: allowed_groups must be a list like [hr, managers] or 'hr; managers', "
        f"got {value!r}"
    )


# --------------------------------------------------------------------------- editing


def _blocks(content: str) -> list[str]:
    return content.split("\n\n")


def _is_prose_line(line: str) -> bool:
    if line.startswith(("    ", "\t")) or _LIST_ITEM.match(line):
        return False  # indented code or a list item
    return not line.lstrip().startswith(("#", "|", ">", "<", "---", "***", "___", "==="))


def _editable_block(content: str, *, middle: bool) -> int:
    """Index of the paragraph to edit: the 3rd prose paragraph (or the middle one)."""
    blocks = _blocks(content)
    prose, fallback = [], []
    in_fence = False
    for index, block in enumerate(blocks):
        lines = block.strip("\n").split("\n")
        fences = sum(1 for line in lines if _FENCE.match(line))
        if not in_fence and fences == 0 and block.strip():
            fallback.append(index)
            if all(_is_prose_line(line) for line in lines) and re.search(r"[A-Za-z]", block):
                prose.append(index)
        if fences % 2:
            in_fence = not in_fence
    candidates = prose or fallback
    if not candidates:
        raise ValueError("document has no paragraph outside code blocks to edit")
    if middle:
        return candidates[len(candidates) // 2]
    return candidates[2] if len(candidates) > 2 else candidates[-1]


def edit_one_paragraph(content: str, sentence: str, *, middle: bool = False) -> str:
    """Append ``sentence`` to one paragraph; every other paragraph stays byte-identical."""
    blocks = _blocks(content)
    index = _editable_block(content, middle=middle)
    block = blocks[index]
    stripped = block.rstrip()
    blocks[index] = stripped + " " + sentence + block[len(stripped) :]
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    op: str  # I, U, D
    source_op: str  # Debezium op: r, c, u, d
    change_seq: int
    commit_ts: dt.datetime  # naive UTC
    document: Document  # the row after the change (for D: the last values)
    before: Document | None


@dataclass(frozen=True)
class Batch:
    file: str
    scenarios: tuple[str, ...]
    description: str
    events: tuple[Event, ...]
    data: bytes


@dataclass(frozen=True)
class Roles:
    long: Document
    held_parquet: Document
    held_debezium: Document
    deleted: Document
    renamed: Document
    untouched: Document
    extra_dms_edit: Document | None
    extra_debezium_edit: Document | None


def _assign_roles(documents: Sequence[Document]) -> Roles:
    long = min(documents, key=lambda d: (-d.word_count, d.document_id))
    cand = [d for d in documents if d.document_id != long.document_id]
    extras = cand[3:-2]
    return Roles(
        long=long,
        held_parquet=cand[-1],
        held_debezium=cand[-2],
        deleted=cand[0],
        renamed=cand[1],
        untouched=cand[2],
        extra_dms_edit=extras[0] if extras else None,
        extra_debezium_edit=extras[1] if len(extras) > 1 else None,
    )


class _Timeline:
    """Hands out change_seq values and commit times in commit order."""

    def __init__(self) -> None:
        self.seq = 0
        self.state: dict[str, Document] = {}

    def event(self, op: str, source_op: str, base: dt.datetime, k: int, doc: Document) -> Event:
        self.seq += 1
        commit_ts = base + dt.timedelta(minutes=k)
        before = self.state.get(doc.document_id)
        if op == "D":
            assert before is not None
            doc = before
            del self.state[doc.document_id]
        else:
            if op == "U":
                doc = replace(doc, updated_at=commit_ts)
            self.state[doc.document_id] = doc
        return Event(op, source_op, self.seq, commit_ts, doc, before)

    def edit(self, doc_id: str, base: dt.datetime, k: int, *, middle: bool, note: str) -> Event:
        current = self.state[doc_id]
        sentence = (
            f"(Revised {base + dt.timedelta(minutes=k):%Y-%m-%d}, change {self.seq + 1}: {note})"
        )
        try:
            content = edit_one_paragraph(current.content, sentence, middle=middle)
        except ValueError as exc:
            raise ValueError(f"document {doc_id!r}: {exc}; give it a prose paragraph") from None
        return self.event("U", "u", base, k, replace(current, content=content))


def _plan(documents: Sequence[Document]) -> tuple[Roles, dict[str, list[Event]], str]:
    """All events, grouped by the batch that carries them, in commit order."""
    roles = _assign_roles(documents)
    held = {roles.held_parquet.document_id, roles.held_debezium.document_id}
    initial = [d for d in documents if d.document_id not in held]
    dms_ids = {d.document_id for i, d in enumerate(initial) if i % 2 == 0}
    dms_ids.discard(roles.long.document_id)  # loaded by Debezium, edited through DMS
    dms_ids.add(roles.deleted.document_id)  # loaded by DMS, edited by Debezium, deleted by DMS
    t = _Timeline()
    groups: dict[str, list[Event]] = {}

    def day(d: int, hour: int) -> dt.datetime:
        return dt.datetime(2026, 11, d, hour, 0)

    ordered = [d for d in initial if d.document_id in dms_ids] + [
        d for d in initial if d.document_id not in dms_ids
    ]
    loads = []
    for k, doc in enumerate(ordered):
        updated = _INITIAL_UPDATED_AT + dt.timedelta(hours=6 * initial.index(doc))
        source_op = "I" if doc.document_id in dms_ids else "r"
        loads.append(t.event("I", source_op, day(2, 9), k, replace(doc, updated_at=updated)))
    groups["initial_dms"] = [e for e in loads if e.source_op == "I"]
    groups["initial_debezium"] = [e for e in loads if e.source_op == "r"]
    # committed early, but the file carrying these lands last (0099_late_arrival)
    groups["late"] = [
        t.edit(
            roles.long.document_id,
            day(2, 15),
            0,
            middle=True,
            note="wording clarified after the autumn review.",
        ),
        t.edit(
            roles.untouched.document_id,
            day(2, 15),
            1,
            middle=False,
            note="contact details confirmed by the policy owner.",
        ),
    ]
    edits_dms = [
        t.edit(
            roles.long.document_id,
            day(3, 10),
            0,
            middle=True,
            note="this paragraph now also applies to contractors and interns.",
        ),
        t.edit(
            roles.renamed.document_id,
            day(3, 10),
            1,
            middle=False,
            note="approval now sits with the department head.",
        ),
    ]
    if roles.extra_dms_edit is not None:
        edits_dms.append(
            t.edit(
                roles.extra_dms_edit.document_id,
                day(3, 10),
                2,
                middle=False,
                note="the review period changed from 12 to 6 months.",
            )
        )
    groups["edits_dms"] = edits_dms
    edits_debezium = [
        t.edit(
            roles.deleted.document_id,
            day(4, 10),
            0,
            middle=False,
            note="superseded wording removed ahead of retirement.",
        ),
    ]
    if roles.extra_debezium_edit is not None:
        edits_debezium.append(
            t.edit(
                roles.extra_debezium_edit.document_id,
                day(4, 10),
                1,
                middle=False,
                note="requests are now answered within 3 working days.",
            )
        )
    groups["edits_debezium"] = edits_debezium
    groups["insert_parquet"] = [
        t.event("I", "c", day(5, 10), 0, replace(roles.held_parquet, updated_at=day(5, 10)))
    ]
    groups["insert_debezium"] = [
        t.event("I", "c", day(6, 10), 0, replace(roles.held_debezium, updated_at=day(6, 10)))
    ]
    groups["delete"] = [t.event("D", "d", day(9, 10), 0, roles.deleted)]
    old = t.state[roles.renamed.document_id]
    taken = {d.document_id for d in documents}
    suffix = 2
    while f"{old.document_id}-v{suffix}" in taken:
        suffix += 1
    new_id = f"{old.document_id}-v{suffix}"
    renamed = replace(
        old, document_id=new_id, title=f"{old.title} (v{suffix})", updated_at=day(10, 10)
    )
    groups["rename"] = [
        t.event("D", "d", day(10, 10), 0, old),
        t.event("I", "c", day(10, 10), 1, renamed),
    ]
    return roles, groups, new_id


# --------------------------------------------------------------------------- encoders


def _ts_text(value: dt.datetime) -> str:
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
        return _ts_offset(value, offset_hours) if offset_hours else _ts_text(value)

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


# --------------------------------------------------------------------------- build


def _batches(documents: Sequence[Document]) -> tuple[Roles, str, list[Batch]]:
    roles, g, new_id = _plan(documents)
    long_words = roles.long.word_count
    edits_0004 = encode_debezium(g["edits_debezium"], updated_at="epoch_us")
    late_name = "dms/0099_late_arrival.csv"

    def ids(events: Iterable[Event]) -> str:
        return ", ".join(e.document.document_id for e in events)

    batches = [
        Batch(
            "dms/0001_initial_load.csv",
            ("initial_load",),
            f"DMS full load without an Op column (every row an insert): {ids(g['initial_dms'])}",
            tuple(g["initial_dms"]),
            encode_dms_csv(g["initial_dms"], with_op=False),
        ),
        Batch(
            "debezium/0002_initial_snapshot.jsonl",
            ("initial_load",),
            "Debezium snapshot (op r, ISO updated_at) of the rest of the initial load: "
            f"{ids(g['initial_debezium'])}; held back: {roles.held_parquet.document_id}, "
            f"{roles.held_debezium.document_id}",
            tuple(g["initial_debezium"]),
            encode_debezium(g["initial_debezium"]),
        ),
        Batch(
            "dms/0003_edits.csv",
            ("edit", "long_document_edit", "both_layouts"),
            f"One-paragraph edits through DMS of {ids(g['edits_dms'])}; "
            f"{roles.long.document_id} ({long_words} words, loaded through Debezium) gets a "
            "mid-document paragraph edited; its change_seq is newer than the late batch's",
            tuple(g["edits_dms"]),
            encode_dms_csv(g["edits_dms"]),
        ),
        Batch(
            "debezium/0004_edits.jsonl",
            ("edit", "both_layouts"),
            f"One-paragraph edits through Debezium (op u, epoch-microsecond updated_at) of "
            f"{ids(g['edits_debezium'])}; {roles.deleted.document_id} was loaded through DMS",
            tuple(g["edits_debezium"]),
            edits_0004,
        ),
        Batch(
            "dms/0005_inserts.parquet",
            ("insert",),
            f"DMS parquet insert of held-back {roles.held_parquet.document_id} (typed timestamp "
            "and list<string> allowed_groups columns)",
            tuple(g["insert_parquet"]),
            encode_dms_parquet(g["insert_parquet"]),
        ),
        Batch(
            "debezium/0006_inserts.jsonl",
            ("insert",),
            f"Debezium insert (op c) of held-back {roles.held_debezium.document_id}, wrapped as "
            'Kafka Connect {"schema", "payload"}, epoch-millisecond updated_at',
            tuple(g["insert_debezium"]),
            encode_debezium(g["insert_debezium"], updated_at="epoch_ms", kafka_connect=True),
        ),
        Batch(
            "dms/0007_delete.csv",
            ("delete",),
            f"DMS delete of {roles.deleted.document_id}: last values, empty content, "
            "';'-separated allowed_groups",
            tuple(g["delete"]),
            encode_dms_csv(g["delete"], groups="semicolon"),
        ),
        Batch(
            "debezium/0008_rename.jsonl",
            ("rename", "delete", "insert"),
            f"Rename {roles.renamed.document_id} -> {new_id}: Debezium delete (before set, after "
            "null) of the old id and insert of the new id with the same content, new title",
            tuple(g["rename"]),
            encode_debezium(g["rename"]),
        ),
        Batch(
            "debezium/0009_replay_0004_edits.jsonl",
            ("duplicate_replay",),
            "Byte-identical copy of debezium/0004_edits.jsonl under a new name; it lands after "
            f"the delete of {roles.deleted.document_id}, which it must not resurrect",
            tuple(g["edits_debezium"]),
            edits_0004,
        ),
        Batch(
            "dms/0010_replay_0004_edits_as_dms.csv",
            ("cross_layout_replay", "both_layouts"),
            "The events of debezium/0004_edits.jsonl re-encoded as DMS CSV with the same "
            "change_seq and commit_ts",
            tuple(g["edits_debezium"]),
            encode_dms_csv(g["edits_debezium"]),
        ),
        Batch(
            late_name,
            ("late_arrival", "edit"),
            f"Arrives last but was committed before 0003: an older edit of "
            f"{roles.long.document_id} (must NOT win over 0003) and a genuinely new edit of "
            f"{roles.untouched.document_id}, which nothing else touched (applies); timestamps "
            "with a +01:00 offset, ','-separated allowed_groups",
            tuple(g["late"]),
            encode_dms_csv(g["late"], groups="comma", offset_hours=1),
        ),
    ]
    return roles, new_id, batches


def _final_state(batches: Sequence[Batch]) -> dict[str, dict[str, Any]]:
    events: dict[tuple[str, int], Event] = {}
    for batch in batches:
        for e in batch.events:
            events.setdefault((e.document.document_id, e.change_seq), e)
    state: dict[str, dict[str, Any]] = {}
    for key in sorted(events, key=lambda k: k[1]):
        e = events[key]
        doc = e.document
        live = e.op != "D"
        state[doc.document_id] = {
            "deleted": not live,
            "document_type": doc.document_type,
            "title": doc.title,
            "content_sha256": hashlib.sha256(doc.content.encode("utf-8")).hexdigest()
            if live
            else None,
            "change_seq": e.change_seq,
            "allowed_groups": None if doc.allowed_groups is None else list(doc.allowed_groups),
            "updated_at": _ts_text(doc.updated_at),
        }
    return dict(sorted(state.items()))


def build_sample_landing(documents_dir: Path | str, out_dir: Path | str) -> dict:
    """Write the sample landing zone and EXPECTED.json; returns what EXPECTED.json holds.

    Files this generator owns (anything under ``out_dir/dms`` and ``out_dir/debezium``) that it
    did not write this time are removed, so a landing zone never mixes two generations.
    """
    documents = read_documents(Path(documents_dir))
    if len(documents) < MIN_DOCUMENTS:
        raise ValueError(
            f"{documents_dir}: need at least {MIN_DOCUMENTS} documents to cover every scenario, "
            f"found {len(documents)}; add .md documents or point --documents at the full set"
        )
    roles, new_id, batches = _batches(documents)
    expected = {
        "generator": "ragmart.sample",
        "source_documents": len(documents),
        "replay_rule": "order events by change_seq, dedupe identical (document_id, change_seq), "
        "apply I/U as upsert and D as delete",
        "roles": {
            "long_document": {
                "document_id": roles.long.document_id,
                "words": roles.long.word_count,
            },
            "held_back": [roles.held_parquet.document_id, roles.held_debezium.document_id],
            "deleted": roles.deleted.document_id,
            "renamed": {"from": roles.renamed.document_id, "to": new_id},
            "late_loser": roles.long.document_id,
            "late_winner": roles.untouched.document_id,
        },
        "batches": [
            {
                "file": b.file,
                "layout": b.file.split("/")[0],
                "format": b.file.rsplit(".", 1)[1],
                "scenarios": list(b.scenarios),
                "description": b.description,
                "events": [
                    {"document_id": e.document.document_id, "op": e.op, "change_seq": e.change_seq}
                    for e in b.events
                ],
            }
            for b in batches
        ],
        "documents": _final_state(batches),
    }
    out = Path(out_dir)
    written = {b.file for b in batches}
    for layout in ("dms", "debezium"):
        folder = out / layout
        folder.mkdir(parents=True, exist_ok=True)
        for stale in sorted(folder.iterdir()):
            if stale.is_file() and f"{layout}/{stale.name}" not in written:
                stale.unlink()
    for b in batches:
        path = out / b.file
        if not path.is_file() or path.read_bytes() != b.data:
            path.write_bytes(b.data)
    text = json.dumps(expected, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    (out / "EXPECTED.json").write_text(text, encoding="utf-8", newline="\n")
    return json.loads(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ragmart.sample",
        description="Generate the deterministic sample CDC landing zone from Markdown documents.",
    )
    parser.add_argument(
        "--documents",
        default="sample/documents",
        type=Path,
        help="folder of .md documents with front matter (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default="sample/landing",
        type=Path,
        help="landing dir to (re)write (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        expected = build_sample_landing(args.documents, args.out)
    except ValueError as exc:
        parser.error(str(exc))
    events = sum(len(b["events"]) for b in expected["batches"])
    print(
        f"wrote {len(expected['batches'])} batches ({events} events) for "
        f"{expected['source_documents']} documents to {args.out}"
    )
    for b in expected["batches"]:
        print(f"  {b['file']:<42} {len(b['events']):>3} events  {', '.join(b['scenarios'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
