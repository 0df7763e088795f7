"""The purge journal: purges begun and not completed, so none is left half done.

``purge_journal.json`` (beside the registry of purged ids, ``ragmart.ingest.purged``) maps each
document_id whose purge has begun to its ``started_at``, ``max_change_seq`` and the steps
``done``. An id is journaled, and entered in the registry, before anything else changes
(:func:`begin`); it leaves the journal when every step is done. One purge runs at a time per
deployment (:func:`exclusive`, a lock on ``purge_journal.lock``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from ragmart.build.faults import fault_point
from ragmart.ingest.purged import load_registry, registry_path
from ragmart.serving.purge.deployment import Deployment, PurgeError, write_atomic

JOURNAL_NAME = "purge_journal.json"


def journal_path(db_path: Path) -> Path:
    return registry_path(db_path).with_name(JOURNAL_NAME)


def load_journal(db_path: Path) -> dict[str, dict]:
    """Purges begun and not completed: document_id -> {"max_change_seq", "started_at",
    "done": [steps]}."""
    path = journal_path(db_path)
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, value: object) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode())


def save_journal(db_path: Path, journal: dict[str, dict]) -> None:
    write_json(journal_path(db_path), journal)


def begin(dep: Deployment, document_id: str, max_change_seq: int | None) -> None:
    """Record the id first: in the journal (so an interrupted purge is completed) and in the
    registry ingestion honours (so nothing brings the document back meanwhile)."""
    journal = load_journal(dep.db_path)
    entry = journal.setdefault(document_id, {
        "started_at": dt.datetime.now(dt.UTC).isoformat(), "done": [],
        "max_change_seq": max_change_seq})
    entry["max_change_seq"] = max(entry["max_change_seq"] or 0, max_change_seq or 0)
    save_journal(dep.db_path, journal)
    registry = registry_path(dep.db_path)
    entries = load_registry(registry)
    entries[document_id] = max(entries.get(document_id, 0), entry["max_change_seq"])
    write_json(registry, entries)
    fault_point("purge_journaled")


@contextlib.contextmanager
def exclusive(dep: Deployment) -> Iterator[None]:
    """One purge at a time per deployment (the CLI, the dbt plugin): steps of two purges must
    not interleave."""
    path = journal_path(dep.db_path).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PurgeError(f"another purge is running ({path} is locked); wait for it to "
                             "finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
