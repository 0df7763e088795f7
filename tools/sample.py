"""Deterministic generator of the bundled sample CDC landing zone (a developer tool, not part of
the ragmart package).

``python -m tools.sample --documents sample/documents --out sample/landing`` (from the repository
root) turns a folder of Markdown documents with YAML front matter (``document_id``,
``document_type``, ``title``, optional ``allowed_groups``) into a landing zone of DMS and
Debezium batches that exercise every CDC situation the pipeline must survive, plus
``EXPECTED.json``: the state a correct replay (order by change_seq, dedupe identical
(document_id, change_seq)) must end in. The files are written by the encoders the tests use
(``tools/cdc_files.py``); the history of changes is planned in ``tools/sample_plan.py``.

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
files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.cdc_files import (
    Document,
    Event,
    encode_debezium,
    encode_dms_csv,
    encode_dms_parquet,
    ts_text,
)
from tools.sample_documents import read_documents
from tools.sample_plan import Roles, plan

MIN_DOCUMENTS = 6


@dataclass(frozen=True)
class Batch:
    file: str
    scenarios: tuple[str, ...]
    description: str
    events: tuple[Event, ...]
    data: bytes


def _batches(documents: Sequence[Document]) -> tuple[Roles, str, list[Batch]]:
    roles, g, new_id = plan(documents)
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
            "updated_at": ts_text(doc.updated_at),
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
        "generator": "tools.sample",
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
        prog="python -m tools.sample",
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
