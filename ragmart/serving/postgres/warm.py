"""The b-tree indexes a first publish builds, read into shared_buffers before its commit.

CREATE INDEX writes a b-tree's pages straight to its files, past shared_buffers (and COPY
fills a new table through a small ring of buffers). So the first incremental publish after a
full one found every page of the fingerprint, chunk_id and document indexes it inserts into
cold, and read them one at a time, while the disk was still writing back what the full
publish wrote: at 100,000 chunks 1,600 index pages and 1.16 s of read wait in a 4.05 s
publish (pg_stat_database.blk_read_time, bench/serving_profile.py), against 0.12 s in the
next one. `warm_indexes` reads them in the full publish instead, in one sequential pass per
index (pg_prewarm: a few MB, just written, so from the page cache), where they cost a
fraction of a percent of the full publish. The HNSW index needs none: pgvector builds it
through shared_buffers.

pg_prewarm is a contrib extension shipped with PostgreSQL (and offered by the managed
services). A publish creates it when its role may (in a savepoint: refused, nothing else is
undone) and otherwise goes without: the indexes are then read by the first publish that
needs them, as before.
"""

from __future__ import annotations

import contextlib

from ragmart.serving.postgres.schema import SCHEMA


def prewarm_function(conn) -> str | None:
    """The schema-qualified pg_prewarm(regclass), created when missing and allowed; None when
    the database does not have it."""
    import psycopg

    schema = ("select n.nspname from pg_extension as e join pg_namespace as n "
              "on n.oid = e.extnamespace where e.extname = 'pg_prewarm'")
    found = conn.execute(schema).fetchone()
    if found is None:
        with contextlib.suppress(psycopg.Error), conn.transaction():  # a savepoint
            conn.execute("create extension if not exists pg_prewarm")
        found = conn.execute(schema).fetchone()
    return f'"{found[0]}".pg_prewarm' if found else None


def warm_indexes(conn, table: str, prewarm: str | None) -> int:
    """Read the b-tree indexes of ragmart.<table> into shared_buffers with `prewarm`
    (`prewarm_function`'s; None: nothing). Returns the pages read."""
    if prewarm is None:
        return 0
    (pages,) = conn.execute(
        f"select coalesce(sum({prewarm}(i.indexrelid)), 0) from pg_index as i "
        "join pg_class as c on c.oid = i.indexrelid join pg_am as am on am.oid = c.relam "
        "where i.indrelid = to_regclass(%s) and am.amname = 'btree'",
        (f'{SCHEMA}."{table}"',)).fetchone()
    return int(pages)
