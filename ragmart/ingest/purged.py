"""The registry of purged documents, as ingestion honours it, and which records are a document's.

A compliance purge (:mod:`ragmart.serving.purge`) writes each purged id, with the highest
change_seq it removed, into ``purged_documents.json`` beside the build database (or
``$RAGMART_PURGE_REGISTRY``) before it changes anything. Ingestion drops every record of those
ids at or below that sequence (:func:`is_purged`), so a replayed old file cannot bring a purged
document back; a later event of the same id is a new document and is ingested.

Which records are the document's is decided here once (:func:`belongs`), for ingestion and the
purge alike: the ones ingestion reads with that ``document_id``, and the quarantined ones that
have no readable id but whose raw text names it as a whole word.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

REGISTRY_NAME = "purged_documents.json"


def registry_path(db_path: Path) -> Path:
    configured = os.environ.get("RAGMART_PURGE_REGISTRY")
    return Path(configured) if configured else Path(db_path).resolve().parent / REGISTRY_NAME


def load_registry(path: Path) -> dict[str, int]:
    """document_id -> highest change_seq purged (events at or below it are never ingested)."""
    if not path.exists():
        return {}
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}


def text_forms(text: str) -> set[str]:
    """The text as a raw record may spell it: plainly, JSON-escaped, CSV-quoted."""
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
            text.replace('"', '""')}


@functools.lru_cache(maxsize=64)
def id_pattern(document_id: str) -> re.Pattern[str]:
    """The id as a whole word in any of its spellings: "hr-relocation" is not found inside
    "hr-relocation-assistance", nor a short id inside every longer word."""
    forms = sorted(text_forms(document_id), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, forms)) + r")(?![\w-])")


def belongs(row: dict, document_id: str) -> bool:
    """Whether a row read from a landing file (ragmart.ingest.cdc) is a record of the document:
    its document_id is the id, or it is quarantined without a readable id and its raw text names
    the id (a whole word)."""
    if row.get("document_id") is not None:
        return row["document_id"] == document_id
    raw = row.get("raw_record")
    return (row.get("quarantine_reason") is not None and raw is not None
            and id_pattern(document_id).search(raw) is not None)


def is_purged(row: dict, registry: dict[str, int]) -> bool:
    """Whether ingestion drops a row read from a landing file because of a purge (`registry` as
    :func:`load_registry` returns it): a record of a purged document at or below the highest
    change_seq purged."""
    if not registry:
        return False
    document_id = row.get("document_id")
    if document_id is not None:
        if document_id not in registry:
            return False
        return row.get("change_seq") is None or row["change_seq"] <= registry[document_id]
    return any(belongs(row, purged) for purged in registry)
