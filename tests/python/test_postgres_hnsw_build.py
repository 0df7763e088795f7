"""The HNSW index's build parameters on PostgreSQL (issue 15, recall at 1M chunks).

At 1,000,000 chunks an index built with m 16 and ef_construction 128 recalled 0.964-0.978 of
the exact top 10, whatever ef_search; built with 32 and 256 it recalled 0.9997 (schema.
LARGE_GRAPH_ROWS' comment). A publish picks the pair by the size of the table it indexes, and
RAGMART_PG_HNSW_M / RAGMART_PG_HNSW_EF_CONSTRUCTION override it. Observed on the server: the
index definition pgvector was given, and the maintenance_work_mem in force when it was built.
"""

from __future__ import annotations

import pytest
from dbt_harness import Project
from sample_deployment import sample_deployment  # noqa: F401 - the fixture `built`

from ragmart.serving.postgres import schema
from ragmart.serving.postgres.settings import (
    BUILD_MEMORY_ENV,
    HNSW_EF_CONSTRUCTION_ENV,
    HNSW_M_ENV,
    PostgresServingError,
)

psycopg = pytest.importorskip("psycopg")

HNSW = "ragmart.fct_chunk_embeddings_v1_embedding_hnsw"


def index_options(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select option_name, option_value from pg_class as c, "
            "pg_options_to_table(c.reloptions) where c.oid = to_regclass(%s)",
            (HNSW,)).fetchall())


def chunks_of(built: Project) -> int:
    import duckdb

    with duckdb.connect(str(built.db_path), read_only=True) as conn:
        return conn.execute("select count(*) from fct_chunk_embeddings_v1").fetchone()[0]


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (HNSW_M_ENV, HNSW_EF_CONSTRUCTION_ENV, BUILD_MEMORY_ENV):
        monkeypatch.delenv(name, raising=False)


def test_a_small_table_gets_the_default_pair(built: Project, postgres_url: str,
                                             no_settings: None) -> None:
    from ragmart.serving.postgres.publish import publish_version

    publish_version(built.db_path, "v1", postgres_url)
    assert index_options(postgres_url) == {"m": "16", "ef_construction": "128"}


def test_a_large_table_gets_the_larger_pair_and_the_memory_for_it(
        built: Project, postgres_url: str, no_settings: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample's table made 'large' by the threshold: m 32 / ef_construction 256, and the
    build given the memory of a graph of m 32 (the floor out of the way)."""
    from ragmart.serving.postgres.publish import publish_version

    chunks = chunks_of(built)
    monkeypatch.setattr(schema, "LARGE_GRAPH_ROWS", chunks)
    monkeypatch.setattr(schema, "HNSW_BUILD_MEMORY", 64 << 10)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"alter database {conn.info.dbname} set maintenance_work_mem = '1MB'")
        conn.execute("create table public.index_memory (memory text)")
        conn.execute("""
            create function public.record_index_memory() returns event_trigger
            language plpgsql as $$ begin insert into public.index_memory
            values (current_setting('maintenance_work_mem')); end $$""")
        conn.execute("create event trigger record_index_memory on ddl_command_end "
                     "when tag in ('CREATE INDEX') execute function public.record_index_memory()")
    publish_version(built.db_path, "v1", postgres_url)
    assert index_options(postgres_url) == {"m": "32", "ef_construction": "256"}
    graph = schema.hnsw_graph_bytes(chunks, 384, 32)
    assert graph > schema.hnsw_graph_bytes(chunks, 384, 16)
    with psycopg.connect(postgres_url) as conn:
        memories = {m for (m,) in conn.execute("select memory from public.index_memory")}
    assert f"{graph >> 10}kB" in memories, memories


def test_ragmart_publish_builds_with_the_settings(built: Project, postgres_url: str) -> None:
    """`ragmart publish` (the CLI) with both settings: the index is built with them."""
    built.extra_env.update({"RAGMART_SERVING_URL": postgres_url, HNSW_M_ENV: "8",
                            HNSW_EF_CONSTRUCTION_ENV: "40"})
    try:
        built.ragmart("publish", "v1")
    finally:
        for name in ("RAGMART_SERVING_URL", HNSW_M_ENV, HNSW_EF_CONSTRUCTION_ENV):
            built.extra_env.pop(name)
    assert index_options(postgres_url) == {"m": "8", "ef_construction": "40"}


def test_m_alone_raises_the_rules_ef_construction_to_twice_it(
        built: Project, postgres_url: str, no_settings: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ragmart.serving.postgres.publish import publish_version

    monkeypatch.setenv(HNSW_M_ENV, "80")
    publish_version(built.db_path, "v1", postgres_url)
    assert index_options(postgres_url) == {"m": "80", "ef_construction": "160"}


@pytest.mark.parametrize(("m", "ef", "named"), [
    ("lots", "", HNSW_M_ENV), ("1", "", HNSW_M_ENV), ("101", "", HNSW_M_ENV),
    ("", "3", HNSW_EF_CONSTRUCTION_ENV), ("", "1001", HNSW_EF_CONSTRUCTION_ENV),
    ("", "-5", HNSW_EF_CONSTRUCTION_ENV), ("32", "40", HNSW_EF_CONSTRUCTION_ENV),
    ("", "20", HNSW_EF_CONSTRUCTION_ENV),  # below twice the rule's m 16
])
def test_a_bad_pair_is_refused_before_anything_is_written(
        built: Project, postgres_url: str, no_settings: None,
        monkeypatch: pytest.MonkeyPatch, m: str, ef: str, named: str) -> None:
    from ragmart.serving.postgres.publish import publish_version

    monkeypatch.setenv(HNSW_M_ENV, m)
    monkeypatch.setenv(HNSW_EF_CONSTRUCTION_ENV, ef)
    with pytest.raises(PostgresServingError, match=named):
        publish_version(built.db_path, "v1", postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select to_regclass('ragmart.serving')").fetchone()[0] is None

