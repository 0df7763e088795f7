"""Incremental ingestion of landing-zone files into typed event rows (used by a dbt Python model).

A file is ingested once per distinct content: files already seen with the same relative path,
size and modification time are skipped without being read, and a re-landed file whose bytes
are unchanged (same sha256) adds nothing. Parsing itself lives in :mod:`ragmart.cdc`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ragmart.cdc import parse_landing_file, rows_to_arrow
from ragmart.faults import fault_point
from ragmart.lineage import current_invocation_id, utc_now
from ragmart.purge import is_purged

LAYOUTS = ("dms", "debezium")


@dataclass(frozen=True)
class LandedFile:
    path: str  # as listed by read_blob (absolute or relative to the dbt project)
    size: int
    modified_at: dt.datetime

    @property
    def relative_path(self) -> str:
        """``<layout>/<name>``: stable whatever the landing dir is called or where it lives."""
        parts = Path(self.path).parts
        return "/".join(parts[-2:])

    @property
    def is_hidden(self) -> bool:
        return Path(self.path).name.startswith(".")


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def ingest_files(
    files: Iterable[LandedFile],
    *,
    seen_keys: set[tuple[str, int, dt.datetime]],
    seen_hashes: set[tuple[str, str]],
    max_content_bytes: int,
    purged: dict[str, int] | None = None,
) -> pa.Table:
    """Parse the files not ingested yet; returns cdc rows plus file and lineage columns.

    `purged` (document_id -> highest purged change_seq, see ragmart.purge) drops events a
    compliance purge removed, so a replayed old file cannot resurrect them."""
    purged = purged or {}
    tables: list[pa.Table] = []
    invocation_id = current_invocation_id()
    ingested_at = utc_now()
    for landed in sorted(files, key=lambda f: f.relative_path):
        if landed.is_hidden:
            continue
        modified_at = _naive_utc(landed.modified_at)
        if (landed.relative_path, landed.size, modified_at) in seen_keys:
            continue
        data = Path(landed.path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if (landed.relative_path, digest) in seen_hashes:
            continue
        rows = parse_landing_file(landed.relative_path, data, max_content_bytes=max_content_bytes)
        if purged:
            rows = [r for r in rows if not is_purged(r, purged)]
        table = rows_to_arrow(rows)
        n = table.num_rows
        table = (
            table.append_column("file_size", pa.array([landed.size] * n, pa.int64()))
            .append_column("file_modified_at", pa.array([modified_at] * n, pa.timestamp("us")))
            .append_column("ingested_at", pa.array([ingested_at] * n, pa.timestamp("us")))
            .append_column("dbt_invocation_id", pa.array([invocation_id] * n, pa.string()))
        )
        tables.append(table)
        fault_point("ingest_file")
    fault_point("ingest_done")
    if not tables:
        empty = rows_to_arrow([])
        return (
            empty.append_column("file_size", pa.array([], pa.int64()))
            .append_column("file_modified_at", pa.array([], pa.timestamp("us")))
            .append_column("ingested_at", pa.array([], pa.timestamp("us")))
            .append_column("dbt_invocation_id", pa.array([], pa.string()))
        )
    return pa.concat_tables(tables)
