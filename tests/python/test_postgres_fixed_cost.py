"""What every PostgreSQL publish does whatever it writes, cut to what is needed, without
losing a guarantee (ragmart.serving.postgres: issue 15's incremental publish at most 5% of a
full one even at 20,000 chunks, where this fixed cost decides the ratio).

- The second connection (ragmart.serving.postgres.parallel) is opened only when an
  incremental publish cuts the serving table's new rows in two: never for a full publish, nor
  for one with fewer new rows than pipeline.MIN_SPLIT_ROWS; and when it cannot be opened the
  publish's own connection writes its share (every row arrives, one transaction).
- Row-level security is enabled only where it is off, but wherever it is off: on the BM25
  statistics tables and the data tables of a database where someone switched it off, the next
  publish switches it back on, and a mapped role again reads nothing of the terms and only its
  chunks.

Package level, through `publish_version` (what `ragmart publish` calls).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

psycopg = pytest.importorskip("psycopg")
duckdb = pytest.importorskip("duckdb")

from dbt_harness import Project  # noqa: E402
from sample_deployment import sample_deployment  # noqa: E402,F401 - the fixture `built`
from test_postgres_parallel import rows_of  # noqa: E402
from test_postgres_pipeline import TABLE, expected, served, source  # noqa: E402

from ragmart.serving.postgres import parallel, pipeline  # noqa: E402
from ragmart.serving.postgres.publish import publish_version  # noqa: E402


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MIN_SPLIT_ROWS", 4)
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 5)


@pytest.fixture
def second_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection the second writer opens (its URL), counted."""
    opened: list[str] = []
    real = parallel.connect

    def counted(url: str, **kw):
        opened.append(url)
        return real(url, **kw)

    monkeypatch.setattr(parallel, "connect", counted)
    return opened


def test_the_second_connection_opens_only_when_the_new_rows_are_cut_in_two(
        postgres_url: str, small_batches: None, second_connections: list[str]) -> None:
    conn = source(90)
    publish_version(conn, "v7", postgres_url)
    assert second_connections == []  # a full publish: one COPY, no second connection
    conn.execute(f"update {TABLE} set chunk_text = 'few ' || chunk_id where chunk_id = 'c1'")
    few = publish_version(conn, "v7", postgres_url)  # 1 new row < MIN_SPLIT_ROWS (4)
    assert (few.incremental, few.rows_written) == (True, 1)
    assert second_connections == []
    conn.execute(f"update {TABLE} set chunk_text = 'many ' || chunk_id "
                 "where chunk_id like 'c1%' or chunk_id like 'c2%'")
    many = publish_version(conn, "v7", postgres_url)
    assert (many.incremental, many.rows_written) == (True, 22)
    assert len(second_connections) == 1
    assert rows_of(postgres_url, many.publication_id) == (22, 2)  # two transactions
    assert served(postgres_url) == expected(conn)


def test_a_second_connection_refused_leaves_its_share_to_the_publishs_own(
        postgres_url: str, small_batches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = source(60)
    publish_version(conn, "v7", postgres_url)
    conn.execute(f"update {TABLE} set chunk_text = 'late ' || chunk_id")

    def refused(url: str, **kw):  # max_connections reached, say
        raise psycopg.OperationalError("too many clients already (test)")

    monkeypatch.setattr(parallel, "connect", refused)
    again = publish_version(conn, "v7", postgres_url)
    assert (again.incremental, again.rows_written) == (True, 60)
    assert rows_of(postgres_url, again.publication_id) == (60, 1)  # all in its transaction
    assert served(postgres_url) == expected(conn)
    with psycopg.connect(postgres_url) as pg:
        assert pg.execute("select count(*) from ragmart.staged_rows").fetchone()[0] == 0


RLS = ("select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
       "where n.nspname = 'ragmart' and c.relkind = 'r' and c.relrowsecurity")


def test_row_level_security_switched_off_is_switched_back_on_by_the_next_publish(
        built: Project, postgres_url: str, tmp_path: Path) -> None:
    publish_version(built.db_path, "v1", postgres_url)
    role = f"reader_{uuid.uuid4().hex[:6]}"
    parts = urlsplit(postgres_url)  # the test server trusts local users
    reader_url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    counts = ("select (select count(*) from ragmart.lexical_chunks_v1), "
              "(select count(*) from ragmart.lexical_terms_v1), "
              "(select count(*) from ragmart.fct_chunk_embeddings_v1)")
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        owner.execute(f'create role "{role}" login')
        owner.execute("insert into ragmart.role_groups values (%s, %s, false)",
                      (role, ["no-such-group"]))
        owner.execute(f'grant usage on schema ragmart to "{role}"; '
                      f'grant select on all tables in schema ragmart to "{role}"')
        secured = {name for (name,) in owner.execute(RLS).fetchall()}
        assert {"lexical_chunks_v1", "lexical_terms_v1", "lexical_stats_v1",
                "fct_chunk_embeddings_v1", "role_groups"} <= secured
        owned = owner.execute(counts).fetchone()
        assert all(n > 0 for n in owned)  # the owner reads every row: something to hide
        with psycopg.connect(reader_url, autocommit=True) as reader:
            assert reader.execute(counts).fetchone() == (0, 0, 0)
        for table in sorted(secured):  # an older schema, or an operator's mistake
            owner.execute(f'alter table ragmart."{table}" disable row level security')
        with psycopg.connect(reader_url, autocommit=True) as reader:
            assert reader.execute(counts).fetchone() == owned  # exposed until the next publish
        publication = publish_version(built.db_path, "v1", postgres_url)  # nothing changed
        assert publication.incremental and publication.rows_written == 0
        assert {name for (name,) in owner.execute(RLS).fetchall()} == secured
        with psycopg.connect(reader_url, autocommit=True) as reader:
            assert reader.execute(counts).fetchone() == (0, 0, 0)
        owner.execute(f'drop owned by "{role}"')
        owner.execute(f'drop role "{role}"')


def test_a_full_publish_leaves_its_btree_indexes_in_shared_buffers(postgres_url: str) -> None:
    """CREATE INDEX writes past shared_buffers: without ragmart.serving.postgres.warm the
    first incremental publish read every page of them cold (1.16 s at 100,000 chunks)."""
    conn = source(3000)
    publish_version(conn, "v7", postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as pg:
        pg.execute("create extension if not exists pg_buffercache")
        indexes = pg.execute(
            "select c.relname, c.relpages, (select count(*) from pg_buffercache as b "
            "where b.relfilenode = pg_relation_filenode(c.oid) and b.reldatabase = "
            "(select oid from pg_database where datname = current_database())) "
            "from pg_index as i join pg_class as c on c.oid = i.indexrelid "
            "join pg_am as am on am.oid = c.relam where am.amname = 'btree' "
            "and i.indrelid = %s::regclass", (f"ragmart.{TABLE}",)).fetchall()
    assert len(indexes) >= 3  # fingerprint, chunk_id, document
    for name, pages, cached in indexes:
        assert pages > 1 and cached >= pages, name
