"""Compliance purge: remove a document's text and vectors from every file ragmart keeps.

`purge_document` deletes the document from the build database (raw events, versions, chunks,
every index version, and the embedding-cache rows of texts no other document uses), from every
published snapshot (so a rollback cannot bring it back), and from the landing files; then it
rewrites each database file, because DuckDB reuses freed blocks without erasing them. The id
and the last purged sequence go to a purge registry that ingestion honours, so a replayed old
file cannot resurrect the document.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from ragmart.duck import connect
from ragmart.serving import INDEX_PREFIX, publish_dir

REGISTRY_NAME = "purged_documents.json"


@dataclass
class PurgeReport:
    document_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_rewritten: list[str] = field(default_factory=list)
    max_change_seq: int | None = None


def registry_path(db_path: Path) -> Path:
    configured = os.environ.get("RAGMART_PURGE_REGISTRY")
    return Path(configured) if configured else Path(db_path).resolve().parent / REGISTRY_NAME


def load_registry(path: Path) -> dict[str, int]:
    """document_id -> highest change_seq purged (events at or below it are never ingested)."""
    if not path.exists():
        return {}
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}


def _save_registry(path: Path, registry: dict[str, int]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(registry, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _tables_with(conn: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """Base tables (views derive from them) of this database having `column`."""
    return [r[0] for r in conn.execute(
        "select c.table_name from information_schema.columns as c "
        "inner join information_schema.tables as t "
        "on t.table_catalog = c.table_catalog and t.table_schema = c.table_schema "
        "and t.table_name = c.table_name "
        "where c.column_name = $c and c.table_catalog = current_database() "
        "and t.table_type = 'BASE TABLE' order by c.table_name", {"c": column}).fetchall()]


def _hnsw_indexes(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "select index_name, table_name from duckdb_indexes() "
        "where database_name = current_database() and sql ilike '%using hnsw%'").fetchall()]


def _purge_database(path: Path, document_id: str, report: PurgeReport) -> None:
    conn = connect(path)
    try:
        chunk_tables = [t for t in _tables_with(conn, "chunk_hash")
                        if t in _tables_with(conn, "document_id")]
        hashes: set[str] = set()
        chunk_ids: set[str] = set()
        for table in chunk_tables:
            for chunk_hash, chunk_id in conn.execute(
                f'select chunk_hash, chunk_id from "{table}" where document_id = $d',
                {"d": document_id},
            ).fetchall():
                hashes.add(chunk_hash)
                chunk_ids.add(chunk_id)
        seqs = [r[0] for t in _tables_with(conn, "change_seq")
                for r in conn.execute(f'select max(change_seq) from "{t}" where document_id = $d',
                                      {"d": document_id}).fetchall() if r[0] is not None]
        if seqs:
            report.max_change_seq = max([report.max_change_seq or 0, *seqs])
        indexes = _hnsw_indexes(conn)
        # an HNSW index must never live through a delete (vss defect): drop, delete, re-create
        for index_name, _table in indexes:
            conn.execute(f'drop index "{index_name}"')
        for table in _tables_with(conn, "document_id"):
            n = conn.execute(f'delete from "{table}" where document_id = $d',
                             {"d": document_id}).fetchone()[0]
            if n:
                report.rows_deleted[f"{path.name}:{table}"] = n
        if hashes:
            # texts of this document that no remaining chunk of any document uses
            conn.execute("create temp table purge_hashes (chunk_hash varchar)")
            conn.executemany("insert into purge_hashes values (?)", [[h] for h in hashes])
            still_used = set()
            for table in chunk_tables:
                still_used |= {r[0] for r in conn.execute(
                    f'select distinct chunk_hash from "{table}" semi join purge_hashes '
                    f"using (chunk_hash)").fetchall()}
            for table in _tables_with(conn, "chunk_hash"):
                if table in chunk_tables:
                    continue
                orphaned = list(hashes - still_used)
                n = conn.execute(
                    f'delete from "{table}" where chunk_hash in (select unnest($h::varchar[]))',
                    {"h": orphaned},
                ).fetchone()[0]
                if n:
                    report.rows_deleted[f"{path.name}:{table}"] = n
        if chunk_ids:
            for table in [t for t in _tables_with(conn, "chunk_id") if t.startswith(INDEX_PREFIX)]:
                n = conn.execute(
                    f'delete from "{table}" where chunk_id in (select unnest($c::varchar[]))',
                    {"c": sorted(chunk_ids)},
                ).fetchone()[0]
                if n:
                    report.rows_deleted[f"{path.name}:{table}"] = n
        conn.execute("checkpoint")
    finally:
        conn.close()
    _rewrite_database(path, indexes)
    report.files_rewritten.append(str(path))


def _rewrite_database(path: Path, indexes: list[tuple[str, str]]) -> None:
    """Copy every table into a fresh file and swap it in: freed blocks of the old file, which
    still hold the purged bytes, are gone. HNSW indexes are re-created with their metric
    (COPY FROM DATABASE would lose metric='cosine')."""
    fresh = path.with_name(f".{path.name}.purge")
    fresh.unlink(missing_ok=True)
    conn = duckdb.connect(":memory:")
    try:
        from ragmart.duck import configure_connection

        configure_connection(conn)
        conn.execute(f"attach '{str(path).replace(chr(39), chr(39) * 2)}' as old")
        conn.execute(f"attach '{str(fresh).replace(chr(39), chr(39) * 2)}' as fresh")
        conn.execute("copy from database old to fresh")
        conn.execute("use fresh")
        for index_name, table in indexes:
            conn.execute(f'drop index if exists "{index_name}"')
            conn.execute(
                f'create index "{index_name}" on "{table}" using hnsw (embedding) '
                "with (metric = 'cosine')"
            )
        conn.execute("use memory")
        conn.execute("detach fresh")
        conn.execute("detach old")
    finally:
        conn.close()
    os.replace(fresh, path)
    Path(f"{path}.wal").unlink(missing_ok=True)


def _rewrite_landing_file(path: Path, document_id: str) -> bool:
    """Drop the document's records from one landing file; True when the file changed."""
    data = path.read_bytes()
    if document_id.encode() not in data:
        return False
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        if "document_id" not in table.column_names:
            return False
        keep = [d != document_id for d in table.column("document_id").to_pylist()]
        pq.write_table(table.filter(keep), path)
        return True
    if path.suffix == ".csv":
        text = data.decode("utf-8", errors="surrogateescape")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows or "document_id" not in rows[0]:
            return False
        col = rows[0].index("document_id")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        kept_rows = [r for r in rows[1:] if len(r) <= col or r[col] != document_id]
        writer.writerows([rows[0], *kept_rows])
        path.write_bytes(out.getvalue().encode("utf-8", errors="surrogateescape"))
        return True
    kept = []
    for line in data.splitlines(keepends=True):
        try:
            envelope = json.loads(line)
            body = envelope.get("payload", envelope) or {}
            ids = {(body.get(side) or {}).get("document_id") for side in ("before", "after")}
        except (ValueError, AttributeError):
            ids = set()
        if document_id not in ids:
            kept.append(line)
    path.write_bytes(b"".join(kept))
    return True


def purge_document(db_path: Path, document_id: str, *, landing_dir: Path | None) -> PurgeReport:
    if not document_id or not document_id.strip():
        raise ValueError("purge needs a document id: ragmart purge --document-id ID")
    db_path = Path(db_path)
    report = PurgeReport(document_id)
    databases = [db_path, *sorted(publish_dir(db_path).glob("v*.duckdb"))]
    for database in databases:
        if database.exists():
            _purge_database(database, document_id, report)
    if landing_dir is not None and Path(landing_dir).exists():
        for path in sorted(Path(landing_dir).rglob("*")):
            if path.is_file() and _rewrite_landing_file(path, document_id):
                report.files_rewritten.append(str(path))
    registry = registry_path(db_path)
    entries = load_registry(registry)
    entries[document_id] = max(entries.get(document_id, 0), report.max_change_seq or 0)
    _save_registry(registry, entries)
    from ragmart.serving import refresh_baseline

    refresh_baseline(db_path)  # what serves changed: the gate's baseline is measured again
    return report
