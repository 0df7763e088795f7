"""Vectors that outlive a failed or killed build: the `embedding_cache_pending` table.

Every batch of vectors a build obtains is committed at once to this table (in the database and
schema of the cache), apart from the cache model's transaction, so that a build killed or
failing mid-way has paid for them once: the next build takes them from here instead of calling
the provider again. The cache model appends them with its own rows; its post-hook, the macro
``clear_pending_vectors``, then deletes the ones the cache holds, in the same transaction. That
macro is the only place pending vectors are deleted: Python only adds them and reads those the
cache does not hold yet (rows a failed build kept in the cache wait there until the next
successful build's post-hook clears them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ragmart.embedding.providers import ProviderStats
from ragmart.embedding.runs import RUN_INTERRUPTED, EmbeddingRun, record_run

T = TypeVar("T")

# the cache key: one vector per chunk text and model
_SAME_KEY = "{a}.chunk_hash = {b}.chunk_hash and {a}.embedding_model = {b}.embedding_model"


def _columns(conn: Any, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"describe {relation}").fetchall()}


def _insert_new_vectors(cursor: Any, relation: str, vectors: pa.Table) -> int:
    """Insert the rows of ``vectors`` whose (chunk_hash, embedding_model) ``relation`` lacks;
    create ``relation`` with their schema, or add the columns it lacks, first."""
    cursor.register("ragmart_obtained_vectors", vectors)
    try:
        cursor.execute(
            f"create table if not exists {relation} as "
            "select * from ragmart_obtained_vectors limit 0"
        )
        existing = _columns(cursor, relation)
        for name, kind in _columns(cursor, "ragmart_obtained_vectors").items():
            if name not in existing:
                cursor.execute(f'alter table {relation} add column "{name}" {kind}')
        if not vectors.num_rows:
            return 0
        return cursor.execute(
            f"""
            insert into {relation} by name
            select * from ragmart_obtained_vectors as obtained
            where not exists (
                select 1 from {relation} as cached
                where {_SAME_KEY.format(a="cached", b="obtained")}
            )
            """
        ).fetchone()[0]
    finally:
        cursor.unregister("ragmart_obtained_vectors")


def _in_transaction(session: Any, work: Callable[[Any], T]) -> T:
    """Run ``work(cursor)`` in a transaction of a cursor of its own: committed whatever happens
    to the transaction of the dbt model that called it."""
    cursor = session.cursor()
    try:
        cursor.execute("begin transaction")
        result = work(cursor)
        cursor.execute("commit")
        return result
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # the transaction may not have started
            cursor.execute("rollback")
        raise
    finally:
        cursor.close()


def commit_pending_vectors(
    session: Any,
    pending_table: str,
    vectors: pa.Table,
    run: EmbeddingRun,
    stats: ProviderStats,
    *,
    runs_table: str,
) -> int:
    """Commit one batch of freshly obtained vectors to ``pending_table`` (created with their
    schema if absent) and, in the same transaction, ``run`` as it stands (provider ``stats``,
    error RUN_INTERRUPTED until the build records the finished run): if the build is killed,
    both what it paid for and the vectors survive. Returns the number of rows added."""

    def work(cursor: Any) -> int:
        added = _insert_new_vectors(cursor, pending_table, vectors)
        run.update(stats, error=RUN_INTERRUPTED)
        record_run(cursor, run, table=runs_table)
        return added

    return _in_transaction(session, work)


def take_pending_vectors(
    session: Any, pending_table: str, cache: str | None, schema: pa.Schema
) -> pa.Table:
    """The vectors earlier builds obtained but did not get into ``cache`` (killed, or failed
    before ``keep_obtained_vectors``), as ``schema`` rows; ``pending_table`` is created (with
    ``schema``'s columns) if absent. Pending rows the cache already holds are not taken: the
    post-hook of the build that takes the others deletes them."""

    def work(cursor: Any) -> pa.Table:
        _insert_new_vectors(cursor, pending_table, schema.empty_table())
        names = ", ".join(f'pending."{name}"' for name in schema.names)
        held = "" if cache is None else (
            f"where not exists (select 1 from {cache} as cached "
            f"where {_SAME_KEY.format(a='cached', b='pending')})"
        )
        rows = cursor.execute(
            f"select {names} from {pending_table} as pending {held} "
            "order by pending.chunk_hash, pending.embedding_model"
        ).to_arrow_table()
        return rows.cast(schema)

    return _in_transaction(session, work)


def keep_obtained_vectors(
    session: Any,
    relation: str,
    vectors: pa.Table,
    run: EmbeddingRun,
    *,
    runs_table: str,
) -> int:
    """After a failed embedding: commit ``vectors`` into the cache ``relation`` (created with
    their schema if the first build failed) and ``run`` into ``runs_table``, in a transaction
    of a cursor of its own, so that they outlive the rollback of the failing dbt model and the
    next build does not pay for them again. Returns the number of vectors added."""

    def work(cursor: Any) -> int:
        added = _insert_new_vectors(cursor, relation, vectors) if vectors.num_rows else 0
        record_run(cursor, run, table=runs_table)
        return added

    return _in_transaction(session, work)
