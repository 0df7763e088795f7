"""An incremental publish inserts the serving table's new rows over two connections
(ragmart.serving.postgres.parallel): the rows arrive whole and are served only after the
switch, and a publish that fails after the second connection committed its share switches
nothing and leaves none of those rows, even when the process dies before deleting them.

Package level, through `publish_version` (what `ragmart publish` calls), on a small table.
"""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg")
duckdb = pytest.importorskip("duckdb")

from test_postgres_pipeline import TABLE, expected, served, source  # noqa: E402

from ragmart.serving.postgres import parallel, pipeline, publish  # noqa: E402
from ragmart.serving.postgres.publish import publish_version  # noqa: E402
from ragmart.serving.postgres.settings import PostgresServingError  # noqa: E402


def rows_of(url: str, publication_id: int) -> tuple[int, int]:
    """(rows, distinct inserting transactions) of the serving table with published_in = id."""
    with psycopg.connect(url) as conn:
        return conn.execute(f"select count(*), count(distinct xmin::text) from ragmart.{TABLE} "
                            "where published_in = %s", (publication_id,)).fetchone()


def serving_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select publication_id from ragmart.serving").fetchone()[0]


def last_publication(url: str) -> int:
    with psycopg.connect(url) as conn:  # an identity's values are never rolled back
        return conn.execute("select last_value from pg_sequences where schemaname = 'ragmart'"
                            " and sequencename like 'publications%'").fetchone()[0]


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MIN_SPLIT_ROWS", 4)
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 5)  # 24 new rows: batches dealt in turn


def test_new_serving_rows_go_in_over_two_connections_and_arrive_whole(
        postgres_url: str, small_batches: None) -> None:
    conn = source(90)
    first = publish_version(conn, "v7", postgres_url)
    assert rows_of(postgres_url, first.publication_id) == (90, 1)  # a first publish: one COPY
    conn.execute(f"update {TABLE} set chunk_text = 'changed ' || chunk_id "
                 "where chunk_id like 'c1%' or chunk_id like 'c2%'")
    second = publish_version(conn, "v7", postgres_url)
    assert (second.incremental, second.rows_written, second.rows_removed) == (True, 22, 22)
    assert rows_of(postgres_url, second.publication_id) == (22, 2)  # two transactions
    assert served(postgres_url) == expected(conn)
    with psycopg.connect(postgres_url) as pg:  # the journal entry left with the switch
        assert pg.execute("select count(*) from ragmart.staged_rows").fetchone()[0] == 0


def test_a_failure_after_the_second_connection_committed_switches_nothing_and_leaves_no_row(
        postgres_url: str, small_batches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(60)
    before = publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'late ' || chunk_id")

    def refused(*args) -> None:
        raise psycopg.errors.RaiseException("switch refused (test)")

    monkeypatch.setattr(publish, "switch", refused)
    with pytest.raises(PostgresServingError, match="nothing was switched"):
        publish_version(conn, "v7", postgres_url)
    failed = last_publication(postgres_url)
    assert failed > before.publication_id
    assert serving_id(postgres_url) == before.publication_id
    assert served(postgres_url) == {f"c{i}": f"text {i}" for i in range(60)}
    assert rows_of(postgres_url, failed) == (0, 0)  # the second connection's share deleted
    monkeypatch.undo()
    again = publish_version(conn, "v7", postgres_url)
    assert (again.incremental, again.rows_written) == (True, 60)
    assert served(postgres_url) == expected(conn)


def test_rows_a_dead_publish_left_are_never_served_and_the_next_publish_deletes_them(
        postgres_url: str, small_batches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(60)
    publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'late ' || chunk_id")

    def refused(*args) -> None:
        raise psycopg.errors.RaiseException("switch refused (test)")

    monkeypatch.setattr(publish, "switch", refused)
    # the process dies before its second connection deletes what it committed
    monkeypatch.setattr(parallel, "discard_staged", lambda *a, **kw: {})
    with pytest.raises(PostgresServingError):
        publish_version(conn, "v7", postgres_url)
    failed = last_publication(postgres_url)
    left, _ = rows_of(postgres_url, failed)
    assert left > 0  # committed by the second connection, never switched to
    assert served(postgres_url) == {f"c{i}": f"text {i}" for i in range(60)}
    monkeypatch.undo()
    conn.execute(f"update {TABLE} set chunk_text = 'text ' || substr(chunk_id, 2) "
                 "where chunk_id in ('c1', 'c2')")  # what the dead publish left must not show
    again = publish_version(conn, "v7", postgres_url)
    assert rows_of(postgres_url, failed) == (0, 0)
    assert served(postgres_url) == expected(conn)
    assert again.rows_written == 58


def test_a_failure_of_the_second_connection_switches_nothing(
        postgres_url: str, small_batches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(60)
    before = publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'late ' || chunk_id")
    real = parallel.copy_csv

    def lost(cur, target, columns, batches):  # the second connection's server goes away
        def then_fail():
            yield next(batches)
            raise psycopg.errors.AdminShutdown("terminating connection (test)")
        return real(cur, target, columns, then_fail())

    monkeypatch.setattr(parallel, "copy_csv", lost)
    with pytest.raises(PostgresServingError, match="terminating connection"):
        publish_version(conn, "v7", postgres_url)
    assert serving_id(postgres_url) == before.publication_id
    assert served(postgres_url) == {f"c{i}": f"text {i}" for i in range(60)}
    assert rows_of(postgres_url, last_publication(postgres_url)) == (0, 0)
    with psycopg.connect(postgres_url) as pg:
        assert pg.execute("select count(*) from ragmart.staged_rows").fetchone()[0] == 0
    monkeypatch.undo()
    assert publish_version(conn, "v7", postgres_url).rows_written == 60
    assert served(postgres_url) == expected(conn)
