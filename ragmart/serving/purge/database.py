"""Steps ``database`` (and the databases of step ``snapshots``): the document's rows leave a
DuckDB file, then the file is copied into a fresh one.

The document's rows are those keyed by its ``document_id``, quarantined raw records that name
it (``ragmart.ingest.purged.belongs``), the rows of its chunk ids (vector index and delta
tables) and the embedding-cache rows of texts no other document uses. A delete leaves the
bytes in freed blocks, which DuckDB reuses without erasing, so each purged file is rewritten
(:func:`rewrite_database`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ragmart.build.faults import fault_point
from ragmart.duck import configure_connection, connect
from ragmart.ingest.purged import belongs
from ragmart.serving import lexical_index
from ragmart.serving.purge.deployment import TEMP_MARK, Deployment, PurgeError
from ragmart.serving.purge.plan import PurgeReport
from ragmart.serving.vector_index import create_index_sql

# the columns holding the document's own words (not ids, hashes or invocation ids)
TEXT_COLUMNS = ("content", "title", "chunk_text", "section", "metadata", "raw_record")


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


def _quarantined_rowids(conn: duckdb.DuckDBPyConnection, table: str,
                        document_id: str) -> list[int]:
    """Quarantined rows of `table` without a document id whose raw record names the id."""
    return [rowid for rowid, reason, raw in conn.execute(
        f'select rowid, quarantine_reason, raw_record from "{table}" '
        "where document_id is null and quarantine_reason is not null").fetchall()
        if belongs({"document_id": None, "quarantine_reason": reason, "raw_record": raw},
                   document_id)]


@dataclass
class DatabaseRows:
    """The document's rows in one database: table -> row count, with what deleting needs."""

    counts: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, list[int]] = field(default_factory=dict)
    chunk_ids: set[str] = field(default_factory=set)
    orphaned_hashes: set[str] = field(default_factory=set)
    max_change_seq: int | None = None
    texts: list[str] = field(default_factory=list)


def _database_rows(conn: duckdb.DuckDBPyConnection, document_id: str, *,
                   with_texts: bool = False) -> DatabaseRows:
    found = DatabaseRows()
    keyed = set(_tables_with(conn, "document_id"))
    for table in sorted(keyed):
        n = conn.execute(f'select count(*) from "{table}" where document_id = $d',
                         {"d": document_id}).fetchone()[0]
        if n:
            found.counts[table] = n
    for table in sorted(keyed & set(_tables_with(conn, "raw_record"))
                        & set(_tables_with(conn, "quarantine_reason"))):
        rowids = _quarantined_rowids(conn, table, document_id)
        if rowids:
            found.quarantined[table] = rowids
            found.counts[table] = found.counts.get(table, 0) + len(rowids)
    chunk_tables = [t for t in _tables_with(conn, "chunk_hash") if t in keyed]
    hashes: set[str] = set()
    for table in chunk_tables:
        for chunk_hash, chunk_id in conn.execute(
            f'select chunk_hash, chunk_id from "{table}" where document_id = $d',
            {"d": document_id},
        ).fetchall():
            hashes.add(chunk_hash)
            found.chunk_ids.add(chunk_id)
    if hashes:
        # texts of this document that no chunk of another document uses
        still_used: set[str] = set()
        for table in chunk_tables:
            still_used |= {r[0] for r in conn.execute(
                f'select distinct chunk_hash from "{table}" where document_id <> $d '
                "and chunk_hash in (select unnest($h::varchar[]))",
                {"d": document_id, "h": sorted(hashes)}).fetchall()}
        found.orphaned_hashes = hashes - still_used
    for table in _tables_with(conn, "chunk_hash"):
        if table not in keyed and found.orphaned_hashes:
            n = conn.execute(
                f'select count(*) from "{table}" where chunk_hash in '
                "(select unnest($h::varchar[]))", {"h": sorted(found.orphaned_hashes)},
            ).fetchone()[0]
            if n:
                found.counts[table] = n
    for table in _tables_with(conn, "chunk_id"):
        if table not in keyed and found.chunk_ids:
            n = conn.execute(
                f'select count(*) from "{table}" where chunk_id in (select unnest($c::varchar[]))',
                {"c": sorted(found.chunk_ids)},
            ).fetchone()[0]
            if n:
                found.counts[table] = n
    seqs = [r[0] for t in sorted(keyed & set(_tables_with(conn, "change_seq")))
            for r in conn.execute(f'select max(change_seq) from "{t}" where document_id = $d',
                                  {"d": document_id}).fetchall() if r[0] is not None]
    found.max_change_seq = max(seqs) if seqs else None
    if with_texts and found.counts:
        for table in sorted(keyed):
            columns = [r[0] for r in conn.execute(
                "select column_name from information_schema.columns where table_name = $t "
                "and table_catalog = current_database()", {"t": table}).fetchall()
                if r[0] in TEXT_COLUMNS]
            for column in columns:
                found.texts += [r[0] for r in conn.execute(
                    f'select distinct "{column}" from "{table}" where document_id = $d '
                    f'and "{column}" is not null', {"d": document_id}).fetchall()]
        for table, rowids in found.quarantined.items():
            found.texts += [r[0] for r in conn.execute(
                f'select raw_record from "{table}" where rowid in (select unnest($r::bigint[]))',
                {"r": rowids}).fetchall() if r[0]]
    return found


def _open(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not Path(path).exists():
        raise PurgeError(f"database {path} does not exist; set RAGMART_DB to the deployment's "
                         "database")
    try:
        return connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        raise PurgeError(
            f"{path} is locked by another process (a dbt build, or a reader of the build "
            "database); the purge is journaled: run `ragmart purge` again when it is free, or the "
            f"next dbt build completes it ({str(exc).splitlines()[0]})"
        ) from exc


def inspect_database(path: Path, document_id: str, *, with_texts: bool = False) -> DatabaseRows:
    conn = _open(path, read_only=True)
    try:
        return _database_rows(conn, document_id, with_texts=with_texts)
    finally:
        conn.close()


def delete_from_database(path: Path, document_id: str) -> dict[str, int]:
    """Delete the document's rows in place (HNSW indexes re-created around the delete)."""
    conn = _open(path, read_only=False)
    try:
        found = _database_rows(conn, document_id)
        if not found.counts:
            return {}
        indexes = _hnsw_indexes(conn)
        # an HNSW index must never live through a delete (vss defect): drop, delete, re-create
        for index_name, _table in indexes:
            conn.execute(f'drop index "{index_name}"')
        for table in _tables_with(conn, "document_id"):
            conn.execute(f'delete from "{table}" where document_id = $d', {"d": document_id})
        for table, rowids in found.quarantined.items():
            conn.execute(f'delete from "{table}" where rowid in (select unnest($r::bigint[]))',
                         {"r": rowids})
        keyed = set(_tables_with(conn, "document_id"))
        for table in _tables_with(conn, "chunk_hash"):
            if table not in keyed and found.orphaned_hashes:
                conn.execute(f'delete from "{table}" where chunk_hash in '
                             "(select unnest($h::varchar[]))", {"h": sorted(found.orphaned_hashes)})
        for table in _tables_with(conn, "chunk_id"):
            if table not in keyed and found.chunk_ids:
                conn.execute(f'delete from "{table}" where chunk_id in '
                             "(select unnest($c::varchar[]))", {"c": sorted(found.chunk_ids)})
        for index_name, table in indexes:
            conn.execute(create_index_sql(index_name, f'"{table}"'))
        conn.execute("checkpoint")
        return found.counts
    finally:
        conn.close()


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def rewrite_database(path: Path) -> None:
    """Copy every table into a fresh file and swap it in: freed blocks of the old file, which
    still hold the purged bytes, are gone. HNSW indexes are re-created with their metric
    (COPY FROM DATABASE would lose metric='cosine'), full-text indexes rebuilt from the rows
    left (ragmart.serving.lexical_index); other indexes are copied."""
    fresh = path.with_name(f".{path.name}{TEMP_MARK}fresh")
    fresh.unlink(missing_ok=True)
    conn = duckdb.connect(":memory:")
    try:
        configure_connection(conn)
        try:
            conn.execute(f"attach '{_quote(path)}' as old (read_only)")
        except duckdb.IOException as exc:
            raise PurgeError(f"{path} is locked by another process; run `ragmart purge` again "
                             f"when it is free ({str(exc).splitlines()[0]})") from exc
        conn.execute(f"attach '{_quote(fresh)}' as fresh")
        conn.execute("copy from database old to fresh")
        conn.execute("use fresh")
        for index_name, table in _hnsw_indexes(conn):
            conn.execute(f'drop index "{index_name}"')
            conn.execute(create_index_sql(index_name, f'"{table}"'))
        # a full-text index keeps the words of every text it indexed (its dict), a deleted
        # document's too, until rebuilt from the rows left
        lexical_index.rebuild_all(conn)
        conn.execute("checkpoint")
        conn.execute("use memory")
        conn.execute("detach fresh")
        conn.execute("detach old")
    finally:
        conn.close()
    os.replace(fresh, path)
    Path(f"{path}.wal").unlink(missing_ok=True)




def step_database(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    if not dep.db_path.exists():
        return
    for table, n in delete_from_database(dep.db_path, document_id).items():
        report.rows_deleted[f"{dep.db_path.name}:{table}"] = n
    fault_point("purge_database_deleted")
    # rewritten even when nothing was left to delete: an interrupted run may have deleted
    # the rows and been stopped before the rewrite, and the freed blocks still hold the bytes
    rewrite_database(dep.db_path)
    report.files_rewritten.append(str(dep.db_path))


def database_document_ids(path: Path) -> set[str]:
    """Every document id the database file holds."""
    ids: set[str] = set()
    conn = _open(path, read_only=True)
    try:
        for table in _tables_with(conn, "document_id"):
            ids |= {r[0] for r in conn.execute(
                f'select distinct document_id from "{table}" where document_id is not null'
            ).fetchall()}
    finally:
        conn.close()
    return ids
