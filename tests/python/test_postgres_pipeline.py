"""The PostgreSQL publish's DuckDB side runs on a thread of its own (ragmart.serving.postgres.
pipeline): rows streamed in many small batches arrive whole, and a failure on either side ends
the publish with nothing switched, the thread stopped and the DuckDB connection usable.

Package level, through `publish_version` (what `ragmart publish` calls), on a small table.
"""

from __future__ import annotations

import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg")
duckdb = pytest.importorskip("duckdb")

from ragmart.serving.postgres import pipeline  # noqa: E402
from ragmart.serving.postgres.publish import publish_version  # noqa: E402
from ragmart.serving.postgres.settings import PostgresServingError  # noqa: E402

TABLE = "fct_chunk_embeddings_v7"


def source(rows: int) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(f"create table {TABLE} (chunk_id varchar, document_id varchar, "
                 "document_version bigint, chunk_text varchar, allowed_groups varchar[], "
                 "embedding_model varchar, chunker_version varchar, embedding float[3])")
    conn.execute(f"insert into {TABLE} select 'c' || i, 'd' || (i // 3), 1, 'text ' || i, "
                 "['g'], 'm', 'c', [i, 1, 0]::float[3] from range($n) as t(i)", {"n": rows})
    return conn


def served(url: str) -> dict[str, str]:
    """chunk_id -> chunk_text of the serving publication's rows."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            f"select chunk_id, chunk_text from ragmart.{TABLE} as t, ragmart.serving as s "
            "where t.published_in <= s.publication_id "
            "and (t.removed_in is null or t.removed_in > s.publication_id)").fetchall())


def expected(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(conn.execute(f"select chunk_id, chunk_text from {TABLE}").fetchall())


def publish_within(conn, url: str, seconds: float = 120.0, version: str = "v7"):
    """publish_version on a thread: what it returned or raised, failing if it hangs."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = publish_version(conn, version, url)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the publish hung"
    return outcome


def test_rows_in_many_batches_arrive_whole_full_and_incremental(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 7)  # 100 rows: 15 batches, 2 waiting at most
    conn = source(100)
    first = publish_version(conn, "v7", postgres_url)
    assert (first.incremental, first.rows_written) == (False, 100)
    assert served(postgres_url) == expected(conn)
    conn.execute(f"update {TABLE} set chunk_text = 'changed' where chunk_id like 'c1%'")
    conn.execute(f"delete from {TABLE} where chunk_id in ('c2', 'c3')")
    second = publish_version(conn, "v7", postgres_url)
    assert (second.incremental, second.rows_written, second.rows_removed) == (True, 11, 13)
    assert served(postgres_url) == expected(conn)


def test_a_server_failure_mid_copy_stops_the_duckdb_thread_and_switches_nothing(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(60)
    before = publish_version(conn, "v7", postgres_url)
    with psycopg.connect(postgres_url) as pg:  # the server refuses the 41st row on
        pg.execute(f"alter table ragmart.{TABLE} add constraint no_late_rows "
                   "check (chunk_text not like 'late%')")
    conn.execute(f"update {TABLE} set chunk_text = 'late ' || chunk_id")
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 2)  # the producer has batches left to hand over
    outcome = publish_within(conn, postgres_url)
    assert isinstance(outcome.get("error"), PostgresServingError), outcome
    assert "nothing was switched" in str(outcome["error"])
    assert "no_late_rows" in str(outcome["error"])
    with psycopg.connect(postgres_url) as pg:
        assert pg.execute("select publication_id from ragmart.serving").fetchone()[0] \
            == before.publication_id
    assert served(postgres_url) == {f"c{i}": f"text {i}" for i in range(60)}
    assert conn.execute(f"select count(*) from {TABLE}").fetchone()[0] == 60  # usable
    assert not [t for t in threading.enumerate() if t.name == "ragmart-publish-duckdb"]


def test_a_duckdb_failure_reaches_the_caller_and_switches_nothing(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(30)
    before = publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'again ' || chunk_id")
    real = pipeline.rows_sql

    def broken(table, columns, **kw):
        failing = "select error('pipeline test') as e, "
        return real(table, columns, **kw).replace("select ", failing, 1)

    monkeypatch.setattr(pipeline, "rows_sql", broken)
    outcome = publish_within(conn, postgres_url)
    assert isinstance(outcome.get("error"), duckdb.Error), outcome
    with psycopg.connect(postgres_url) as pg:
        assert pg.execute("select publication_id from ragmart.serving").fetchone()[0] \
            == before.publication_id
    assert served(postgres_url) == {f"c{i}": f"text {i}" for i in range(30)}
    monkeypatch.setattr(pipeline, "rows_sql", real)
    again = publish_version(conn, "v7", postgres_url)  # the same connection publishes again
    assert again.incremental and served(postgres_url) == expected(conn)


def test_a_callers_connection_keeps_its_duckdb_threads(postgres_url: str) -> None:
    # the producer renders an incremental publish of a database the publish opened itself on
    # one DuckDB thread (pipeline.INCREMENTAL_THREADS); a connection the caller hands over is
    # the caller's instance, whose settings the publish leaves alone
    conn = source(40)
    conn.execute("set threads = 3")
    publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'edited' where chunk_id = 'c5'")
    again = publish_version(conn, "v7", postgres_url)
    assert (again.incremental, again.rows_written) == (True, 1)
    assert served(postgres_url) == expected(conn)
    assert conn.execute("select current_setting('threads')").fetchone()[0] == 3


def test_a_source_without_the_version_fails_while_another_publisher_holds_the_lock(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the publish's own connection takes the publishers' lock on a thread while DuckDB reads
    # the source (publish._Opening): a source that turns out not to have the version must
    # not wait for the lock, nor leave a request for it behind
    from ragmart.serving.postgres import publish
    from ragmart.serving.postgres.schema import LOCK_KEY

    waiting = ("select count(*) from pg_locks where locktype = 'advisory' and not granted")
    real = publish.duckdb_tables

    def once_the_lock_is_awaited(duck, tables):  # DuckDB's answer comes after the request
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            while not watcher.execute(waiting).fetchone()[0]:
                time.sleep(0.01)
        return real(duck, tables)

    conn = source(10)
    publish_version(conn, "v7", postgres_url)
    with psycopg.connect(postgres_url) as holder:
        holder.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        monkeypatch.setattr(publish, "duckdb_tables", once_the_lock_is_awaited)
        outcome = publish_within(conn, postgres_url, version="v8")
        assert isinstance(outcome.get("error"), PostgresServingError), outcome
        assert "v8 is not built" in str(outcome["error"])
        assert holder.execute(waiting).fetchone()[0] == 0
        holder.rollback()
    monkeypatch.setattr(publish, "duckdb_tables", real)
    conn.execute(f"update {TABLE} set chunk_text = 'after' where chunk_id = 'c1'")
    again = publish_version(conn, "v7", postgres_url)
    assert (again.incremental, again.rows_written) == (True, 1)
    assert served(postgres_url) == expected(conn)
