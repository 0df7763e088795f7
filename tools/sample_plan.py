"""The sample's history: which document plays which part, and every change, in commit order.

Nothing depends on the wall clock or on randomness: the roles are picked from the documents
sorted by id (the longest document by words gets an edit), and change sequences and commit
times are handed out in commit order by :class:`_Timeline`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tools.cdc_files import Document, Event
from tools.sample_documents import INITIAL_UPDATED_AT, edit_one_paragraph


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


def plan(documents: Sequence[Document]) -> tuple[Roles, dict[str, list[Event]], str]:
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
        updated = INITIAL_UPDATED_AT + dt.timedelta(hours=6 * initial.index(doc))
        source_op = "I" if doc.document_id in dms_ids else "r"
        loads.append(t.event("I", source_op, day(2, 9), k, replace(doc, updated_at=updated)))
    groups["initial_dms"] = [e for e in loads if e.source_op == "I"]
    groups["initial_debezium"] = [e for e in loads if e.source_op == "r"]
    def edits(base: dt.datetime, *changes: tuple[Document | None, bool, str]) -> list[Event]:
        """One-paragraph edits (document, edit the middle paragraph?, note) committed a minute
        apart from ``base``, in order; a role no document plays (None, only the last) is
        skipped."""
        played = [(doc, middle, note) for doc, middle, note in changes if doc is not None]
        return [
            t.edit(doc.document_id, base, k, middle=middle, note=note)
            for k, (doc, middle, note) in enumerate(played)
        ]

    # committed early, but the file carrying these lands last (0099_late_arrival)
    groups["late"] = edits(
        day(2, 15),
        (roles.long, True, "wording clarified after the autumn review."),
        (roles.untouched, False, "contact details confirmed by the policy owner."),
    )
    groups["edits_dms"] = edits(
        day(3, 10),
        (roles.long, True, "this paragraph now also applies to contractors and interns."),
        (roles.renamed, False, "approval now sits with the department head."),
        (roles.extra_dms_edit, False, "the review period changed from 12 to 6 months."),
    )
    groups["edits_debezium"] = edits(
        day(4, 10),
        (roles.deleted, False, "superseded wording removed ahead of retirement."),
        (roles.extra_debezium_edit, False, "requests are now answered within 3 working days."),
    )
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

