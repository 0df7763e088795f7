"""Publish a version to PostgreSQL: only what changed, switched in the same transaction.

`publish_version` copies the DuckDB relations that serve a version (ragmart.serving.postgres.
schema.served_tables) from a DuckDB file (the snapshot `ragmart publish` just took and gated)
into the `ragmart` schema, as one new publication:

- the first publish of a version to the target writes every row (COPY), then builds the
  table's indexes (HNSW on the vectors: building once after the load is cheaper than
  maintaining it row by row);
- after that it is INCREMENTAL: DuckDB compares each source row's fingerprint with the live
  rows' (removed_in is null) and only rows added or changed are COPYed in (published_in = the
  new id), while live rows the source no longer has get removed_in = the new id. Rows of earlier
  publications stay, so rollback writes no data (ragmart.serving.postgres.rollback);
- the publications row, the rows, and the UPDATE of the one-row pointer ``ragmart.serving``
  commit together: a reader's statement sees the old publication or the new one, never a mix.

DuckDB's side of all this (fingerprints, diffs, rows rendered as text) runs on a thread of its
own, one table ahead of the server's (ragmart.serving.postgres.pipeline): DuckDB renders the
history while the server inserts the new serving rows into its HNSW graph.

Publishers take one advisory lock, so two publishes never interleave. After the commit,
`prune` keeps the last KEEP_PUBLICATIONS content publications plus the serving one, deletes the
rows none of them holds (found through ragmart.removals, never by reading a whole table) and
drops the tables of versions none of them serves; autovacuum reclaims the space.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from ragmart.relations import Relations, check_version
from ragmart.serving.postgres.access import install_access
from ragmart.serving.postgres.lexical import publish_terms
from ragmart.serving.postgres.parallel import SecondWriter, discard_staged
from ragmart.serving.postgres.pipeline import INCREMENTAL_THREADS, Plan, TableProducer
from ragmart.serving.postgres.schema import (
    LIVE_FINGERPRINTS,
    PUBLICATIONS,
    REMOVALS,
    SCHEMA,
    SERVING,
    STAGED,
    create_indexes,
    data_tables,
    ensure_data_table,
    ensure_schema,
    lock,
    owning_version,
    postgres_type,
    served_tables,
    tables_columns,
)
from ragmart.serving.postgres.settings import (
    PostgresServingError,
    connect,
    hnsw_settings,
    masked,
    max_build_memory,
)
from ragmart.serving.postgres.transfer import (
    duckdb_tables,
    live_fingerprints,
    publish_table,
    published_columns,
)
from ragmart.serving.postgres.warm import prewarm_function, warm_indexes

KEEP_PUBLICATIONS = 3


@dataclass
class PostgresPublication:
    """What one publish wrote to the serving database."""

    publication_id: int
    version: str
    incremental: bool
    rows_written: int
    rows_removed: int
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> written/removed
    target: str = ""  # the serving URL, masked
    seconds: float = 0.0
    pruned_publications: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _source_info(duck: duckdb.DuckDBPyConnection, serving: str,
                 columns: dict[str, str]) -> tuple[int, str, str, int]:
    chunks, model, chunker = duck.execute(
        f'select count(*), min(embedding_model), min(chunker_version) from main."{serving}"'
    ).fetchone()
    kind = columns.get("embedding", "")
    dims = re.fullmatch(r"FLOAT\[(\d+)\]", kind)
    return chunks, model, chunker, int(dims[1]) if dims else None


def _without_live_rows(conn, tables: list[str]) -> set[str]:
    """Those of `tables` with no live row (removed_in is null), in one round trip."""
    if not tables:
        return set()
    found = conn.execute("select " + ", ".join(
        f'exists (select from {SCHEMA}."{table}" where removed_in is null)'
        for table in tables)).fetchone()
    return {table for table, live in zip(tables, found, strict=True) if not live}


class _Opening:
    """The publish's own connection, made ready on a thread while DuckDB opens the source:
    connect, the publishers' lock, the schema, and the live fingerprints of every table
    `tables` names (those published in full are not asked for them later).

    None of it needs DuckDB, and opening a DuckDB file costs a fresh instance (~9 ms here
    even in memory) plus its catalog: done in turn, the two took ~17 + ~20 ms before the
    producer had its plan (timeline of an incremental publish at 20,000 chunks). What the
    connection raises is raised by `connection` (as `connect` raises it), what the
    statements after it raised by `setup`, inside the publish's own error handling."""

    def __init__(self, url: str, tables: list[str]):
        self._url, self._tables = url, tables
        self._conn = None
        self._error: BaseException | None = None  # from connecting
        self._setup_error: BaseException | None = None  # from the statements after it
        self._closed = False
        self._mutex = threading.Lock()
        self.staged_ready = False
        self.live: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="ragmart-publish-open")
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = connect(self._url)
        except BaseException as exc:  # raised by `connection`, on the publishing thread
            self._error = exc
            return
        with self._mutex:
            if self._closed:  # the publish failed while this connected: nobody will use it
                conn.close()
                return
            self._conn = conn
        try:
            lock(conn)
            self.staged_ready = ensure_schema(conn)
            with conn.cursor() as cur:
                self.live = live_fingerprints(cur, self._tables)
        except BaseException as exc:  # raised by `setup`
            self._setup_error = exc

    def connection(self):
        """The open connection, once the thread is done."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._conn

    def setup(self) -> None:
        """Raise what the lock, the schema or the live fingerprints raised, if anything."""
        if self._setup_error is not None:
            raise self._setup_error

    def close(self) -> None:
        """Close the connection (a no-op once the publish's `with` closed it). A publish that
        failed before it used the connection does not wait for the thread: a connection
        still being made is closed by the thread itself, a statement still running (another
        publisher's lock, say) is cancelled."""
        with self._mutex:
            self._closed = True
            conn = self._conn
        if conn is None:
            return
        while self._thread.is_alive():
            with contextlib.suppress(Exception):
                conn.cancel_safe()
            self._thread.join(0.1)
        conn.close()


def publish_version(source: Path | duckdb.DuckDBPyConnection, version: str, url: str, *,
                    report: dict | None = None, snapshot: str | None = None,
                    forced: bool = False, gate_failures: list[str] | tuple = (),
                    keep: int = KEEP_PUBLICATIONS) -> PostgresPublication:
    """Publish `version` from the DuckDB database `source` (a file, opened read-only, or an
    open connection) to the serving database `url` and switch serving to it, all in one
    transaction; then prune. `report`, `snapshot`, `forced` and `gate_failures` are recorded
    in the publications row. Returns what was written."""
    import psycopg
    from psycopg.types.json import Jsonb

    check_version(version)
    max_build_memory()  # a bad RAGMART_PG_MAX_BUILD_MEMORY fails now, not at a later build
    hnsw_settings()  # and so do bad RAGMART_PG_HNSW_M / _EF_CONSTRUCTION
    started = time.perf_counter()
    opening = _Opening(url, served_tables(version))
    duck, closing = source, None
    try:
        if isinstance(source, Path | str):
            duck = duckdb.connect(str(source), read_only=True)
        serving_table = Relations(version).serving
        found = duckdb_tables(duck, served_tables(version))
        tables = [t for t in served_tables(version) if t in found]
        if serving_table not in tables:
            raise PostgresServingError(f"version {version} is not built in {source}")
        chunks, model, chunker, dims = _source_info(duck, serving_table, found[serving_table])
        columns = {table: published_columns(duck, table, found[table]) for table in tables}
        result = PostgresPublication(0, version, False, 0, 0, target=masked(url))
        # DuckDB's side runs on a thread of its own from here (ragmart.serving.postgres.
        # pipeline): this thread touches only the server until the producer is done. Left in
        # reverse order: the publish's connection (rolled back on a failure) before the second
        # one (ragmart.serving.postgres.parallel), which then deletes what it committed
        with SecondWriter(url) as second, TableProducer(duck, columns) as producer, \
                opening.connection() as conn:
            try:
                opening.setup()  # the lock, the schema, the live fingerprints
                staged_ready = opening.staged_ready
                pid, failed = conn.execute(
                    f"with failed as (select 1 from {STAGED} limit 1) "
                    f"insert into {PUBLICATIONS} (version, action, embedding_model, "
                    "chunker_version, dimensions, chunks, report, snapshot, forced, "
                    "gate_failures) values (%s, 'publish', %s, %s, %s, %s, %s, %s, %s, %s) "
                    "returning publication_id, exists (select from failed)",
                    (version, model, chunker, dims, chunks, Jsonb(report or {}), snapshot,
                     forced, list(gate_failures))).fetchone()
                if failed:  # a failed publish's rows, committed by its second connection
                    discard_staged(conn)
                result.publication_id = pid
                pg_columns = {table: {n: postgres_type(t) for n, t in cols.items()}
                              for table, cols in columns.items()}
                existing = tables_columns(conn, tables)
                changed = {table: ensure_data_table(conn, table, pg_columns[table],
                                                    existing[table]) for table in tables}
                created = {table for table, how in changed.items() if how == "created"}
                full = created | _without_live_rows(conn, [t for t in tables
                                                            if t not in created])
                # the serving rows' graph inserts over two backends (an incremental publish
                # of a table no DDL of this transaction locks, once the journal exists)
                parallel = {serving_table} - full if staged_ready and \
                    not changed[serving_table] else set()
                prewarm = prewarm_function(conn) if created else None
                with conn.cursor() as cur:
                    producer.start(Plan(
                        pid, full, {t: opening.live[t] for t in tables if t not in full},
                        parallel, second.open,
                        INCREMENTAL_THREADS if duck is not source and not full else None))
                    for table in tables:
                        written, removed = publish_table(
                            producer, cur, table, columns[table], pid, full=table in full,
                            second=second if table in parallel else None)
                        if table in created:
                            create_indexes(conn, table, pg_columns[table])
                            warm_indexes(conn, table, prewarm)  # not cold for the next one
                        if table in full:  # the planner's statistics now, not at autovacuum's
                            conn.execute(f'analyze {SCHEMA}."{table}"')
                        if table == serving_table:
                            result.incremental = table not in full
                        result.tables[table] = {"written": written, "removed": removed}
                producer.join()
                result.rows_written = sum(t["written"] for t in result.tables.values())
                result.rows_removed = sum(t["removed"] for t in result.tables.values())
                conn.execute(f"with staged as (delete from {STAGED} where publication_id = %s) "
                             f"update {PUBLICATIONS} set incremental = %s, rows_written = %s, "
                             "rows_removed = %s where publication_id = %s",
                             (pid, result.incremental, result.rows_written,
                              result.rows_removed, pid))
                publish_terms(duck, conn, version, pid)  # BM25 statistics: lexical search
                if duck is not source:  # DuckDB's part is done: closing the database it
                    # opened (7-9 ms of freeing its buffers, without the GIL) overlaps the
                    # switch's round trips instead of following the prune
                    closing = threading.Thread(target=duck.close, name="ragmart-publish-close")
                    closing.start()
                install_access(conn, version)  # ragmart.retrieve, role_groups, RLS, grants
                switch(conn, pid, version)
            except psycopg.Error as exc:
                raise PostgresServingError(
                    f"publish {version} to {masked(url)} failed and nothing was switched: "
                    f"{exc}") from None
            conn.commit()  # the switch; then the prune, a transaction of its own
            result.pruned_publications = prune(conn, keep=keep)
    finally:
        opening.close()
        if closing is not None:
            closing.join()
        elif duck is not source:
            duck.close()
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def switch(conn, publication_id: int, version: str) -> None:
    """THE SWITCH: point ragmart.serving at content publication `publication_id` (the caller
    commits it with whatever it wrote)."""
    conn.execute(f"insert into {SERVING} (publication_id, version) values (%s, %s) "
                 "on conflict (only_row) do update set publication_id = excluded.publication_id,"
                 " version = excluded.version, switched_at = now()", (publication_id, version))


def prune(target, *, keep: int = KEEP_PUBLICATIONS) -> list[int]:
    """Keep the last `keep` content publications and the serving one: delete the rows none of
    them holds (removed by a publication up to the oldest kept id), drop the tables of versions
    none of them serves, mark the others pruned (no rollback to them). Returns the ids newly
    marked pruned.

    The rows to delete are found by their fingerprints in ragmart.removals (an index lookup
    per row), not by reading every table: a prune costs what the publications it retires
    changed. It runs no VACUUM: the deleted rows are few (a publication's changes), their
    space is reclaimed by autovacuum in the background; a VACUUM here read every table and its
    indexes, measured at 1.2-2.1 s of a 2.7-4.1 s incremental publish at 20,000 chunks
    (bench/serving_profile.py). `target`: the serving URL, or an open connection (the
    publish's own, after its commit: no second connection per publish); committed here."""
    if isinstance(target, str):
        with connect(target) as conn:
            return prune(conn, keep=keep)
    conn = target
    with conn.transaction():
        lock(conn)
        row = conn.execute(f"select publication_id from {SERVING}").fetchone()
        if row is None:
            return []
        content = conn.execute(f"select publication_id, version from {PUBLICATIONS} "
                               "where action = 'publish' and pruned_at is null "
                               "order by publication_id desc").fetchall()
        kept = dict(content[:keep])
        kept.setdefault(row[0], dict(content).get(row[0]))
        horizon = min(kept)
        versions = set(kept.values())
        tables = data_tables(conn)
        with conn.pipeline():  # statements whose answers nothing waits for: one round trip
            for table in tables:
                version = owning_version(table)  # its BM25 statistics tables included
                if version is not None and version not in versions:
                    conn.execute(f'drop table {SCHEMA}."{table}"')
                    for log in (REMOVALS, LIVE_FINGERPRINTS):
                        conn.execute(f"delete from {log} where table_name = %s", (table,))
                    continue
                conn.execute(f'delete from {SCHEMA}."{table}" as t using {REMOVALS} as r '
                             "where r.publication_id <= %s and r.table_name = %s "
                             "and t.row_fingerprint = r.row_fingerprint "
                             "and t.removed_in = r.publication_id", (horizon, table))
            conn.execute(f"delete from {REMOVALS} where publication_id <= %s", (horizon,))
            pruned = conn.execute(
                f"update {PUBLICATIONS} set pruned_at = now() where action = 'publish' and "
                "pruned_at is null and (publication_id < %s or not version = any(%s)) "
                "returning publication_id", (horizon, sorted(versions)))
        pruned = [pid for (pid,) in pruned.fetchall()]
    return sorted(pruned)
