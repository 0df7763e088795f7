"""Purge a document from the PostgreSQL serving target: every version, every publication,
and no bytes of it left in the table files.

Deleting the rows is not enough: a deleted tuple's bytes stay in its heap page until the page
is rewritten, and in every index page that held its keys (chunk ids, document id). Measured on
PostgreSQL 18.6 (the `postgres_server` fixture): after DELETE + plain VACUUM + CHECKPOINT, a
row that was the last on its page still had its text in the heap file, and its chunk id in the
chunk_id btree; after VACUUM FULL (a new file for the table and each of its indexes, the old
ones truncated at commit and unlinked at the next checkpoint) no byte of it was left. So the
purge runs VACUUM FULL on each data table it deleted from. VACUUM FULL holds an ACCESS
EXCLUSIVE lock: readers of that table wait while it is rewritten (and its HNSW index rebuilt).

Interrupted between the DELETE and the VACUUM, a purge must still vacuum: the DELETE's
transaction records the tables it touched in ``ragmart.vacuum_pending`` and each leaves it when
its VACUUM FULL is done, so the next run (the purge journal replays this step) vacuums them
even though it finds no row left to delete. What remains outside the table files (WAL,
backups) is in the README, section "Serving from PostgreSQL".
"""

from __future__ import annotations

import sys

from ragmart.build.faults import fault_point
from ragmart.serving.postgres.lexical import purge_orphan_terms, purge_statistics
from ragmart.serving.postgres.publish import lock
from ragmart.serving.postgres.schema import (
    LIVE_FINGERPRINTS,
    SCHEMA,
    data_tables,
    raise_build_memory,
    table_columns,
)
from ragmart.serving.postgres.settings import connect

VACUUM_PENDING = f"{SCHEMA}.vacuum_pending"


def _document_tables(conn) -> list[str]:
    return [t for t in data_tables(conn) if "document_id" in table_columns(conn, t)]


def _installed(conn) -> bool:
    return conn.execute("select to_regnamespace(%s) is not null", (SCHEMA,)).fetchone()[0]


def count_document_rows(url: str, document_id: str) -> dict[str, int]:
    """table -> rows of `document_id` in it (every publication), tables holding none left out."""
    with connect(url) as conn:
        if not _installed(conn):
            return {}
        counts = {t: conn.execute(f'select count(*) from {SCHEMA}."{t}" where document_id = %s',
                                  (document_id,)).fetchone()[0] for t in _document_tables(conn)}
    return {t: n for t, n in counts.items() if n}


def purge_document_rows(url: str, document_id: str) -> dict[str, int]:
    """Delete every row of `document_id` from every data table, then VACUUM FULL each table a
    purge deleted from (this one or an interrupted one). Returns table -> rows deleted.
    Idempotent."""
    deleted: dict[str, int] = {}
    with connect(url) as conn:
        if not _installed(conn):
            return deleted
        lock(conn)
        conn.execute(f"create table if not exists {VACUUM_PENDING} (table_name text primary key)")
        purge_statistics(conn, document_id, VACUUM_PENDING)  # BM25 as without the document
        for table in _document_tables(conn):
            gone = [fp for (fp,) in conn.execute(
                f'delete from {SCHEMA}."{table}" where document_id = %s '
                "returning row_fingerprint", (document_id,)).fetchall()]
            n = len(gone)
            if n:
                conn.execute(f"delete from {LIVE_FINGERPRINTS} where table_name = %s "
                             "and row_fingerprint = any(%s)", (table, gone))
                deleted[table] = n
                conn.execute(f"insert into {VACUUM_PENDING} values (%s) on conflict do nothing",
                             (table,))
        purge_orphan_terms(conn, VACUUM_PENDING)  # the words no other document has (lexical)
    fault_point("purge_postgres_deleted")
    vacuum_pending(url)
    return deleted


def vacuum_pending(url: str) -> list[str]:
    """VACUUM FULL every table a purge deleted from and has not vacuumed yet, ANALYZE it anew,
    then rewrite the planner's statistics (`rewrite_statistics`); returns the tables."""
    with connect(url, autocommit=True) as conn:
        if conn.execute("select to_regclass(%s) is null", (VACUUM_PENDING,)).fetchone()[0]:
            return []
        tables = [t for (t,) in conn.execute(f"select table_name from {VACUUM_PENDING}")]
        existing = set(data_tables(conn))
        # VACUUM FULL rebuilds the HNSW index
        raise_build_memory(conn, transaction_only=False,
                           tables=[t for t in tables if t in existing])
        for table in tables:
            if table in existing:
                conn.execute(f'vacuum (full) {SCHEMA}."{table}"')
                conn.execute(f'analyze {SCHEMA}."{table}"')
        if tables:
            rewrite_statistics(conn)
        for table in tables:
            conn.execute(f"delete from {VACUUM_PENDING} where table_name = %s", (table,))
    return tables


def rewrite_statistics(conn) -> bool:
    """VACUUM FULL pg_catalog.pg_statistic, when the role may (a superuser, or the MAINTAIN
    privilege of PostgreSQL 17+: `grant pg_maintain to <publisher>`); returns whether it did.

    ANALYZE keeps sample values of every column (most common values, histogram bounds: a
    document id, a short chunk text) in pg_statistic, and a new ANALYZE leaves the old row
    there as a dead tuple, bytes and all; measured: after the purge of the test document its id
    was still in pg_statistic's file until this rewrite."""
    allowed = conn.execute(
        "select rolsuper or case when to_regrole('pg_maintain') is null then false "
        "else pg_has_role(current_user, 'pg_maintain', 'member') end "
        "from pg_roles where rolname = current_user").fetchone()[0]
    if allowed:
        conn.execute("vacuum (full) pg_catalog.pg_statistic")
    else:
        print("warning: purge could not rewrite pg_catalog.pg_statistic (needs a superuser or "
              "`grant pg_maintain to <this role>`): sample values of the purged document may "
              "remain in its file until a superuser runs `vacuum full pg_statistic`",
              file=sys.stderr)
    return bool(allowed)


def record_refresh(url: str, report: dict) -> int | None:
    """After a purge changed what serves: a ``refresh`` row for the serving publication with
    its new evaluation `report` (the gate's baseline from now on:
    ragmart.serving.postgres.versions.serving_report). Returns its id; None when nothing
    serves."""
    from psycopg.types.json import Jsonb

    with connect(url) as conn:
        if not _installed(conn):
            return None
        lock(conn)
        row = conn.execute(
            f"insert into {SCHEMA}.publications (version, action, embedding_model, "
            "chunker_version, dimensions, chunks, report, snapshot, restores) select "
            "p.version, 'refresh', p.embedding_model, p.chunker_version, p.dimensions, "
            f"p.chunks, %s, p.snapshot, p.publication_id from {SCHEMA}.serving as s join "
            f"{SCHEMA}.publications as p using (publication_id) returning publication_id",
            (Jsonb(report),)).fetchone()
    return row[0] if row else None
