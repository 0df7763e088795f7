"""The memory a PostgreSQL publish gives pgvector's HNSW build (issue 15, the 1M-chunk run).

pgvector builds the graph in memory while it fits in maintenance_work_mem and row by row on
disk past it (the first 1M-chunk publish took 4,444 s with 1 GB for a ~2.3 GB graph). A
publish now asks for what the graph of the table it indexes needs (at least 512 MB, at most
RAGMART_PG_MAX_BUILD_MEMORY). Observed from the server: an event trigger records the
maintenance_work_mem in force when each index is created, and pgvector's own NOTICE says where
a graph stops fitting, which the size rule must agree with.
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

RECORDER = """
create table public.index_memory (object_identity text, memory text);
create function public.record_index_memory() returns event_trigger language plpgsql as $$
declare r record;
begin
  for r in select * from pg_event_trigger_ddl_commands() where command_tag = 'CREATE INDEX'
  loop
    insert into public.index_memory
    values (r.object_identity, current_setting('maintenance_work_mem'));
  end loop;
end $$;
create event trigger record_index_memory on ddl_command_end
  when tag in ('CREATE INDEX') execute function public.record_index_memory();
"""
HNSW = "ragmart.fct_chunk_embeddings_v1_embedding_hnsw"


def hnsw_build_memory(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select memory from public.index_memory where object_identity = %s",
                            (HNSW,)).fetchone()[0]


@pytest.fixture
def recorded(postgres_url: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(RECORDER)
    return postgres_url


def chunks_of(built: Project) -> int:
    import duckdb

    with duckdb.connect(str(built.db_path), read_only=True) as conn:
        return conn.execute("select count(*) from fct_chunk_embeddings_v1").fetchone()[0]


def test_publish_gives_a_small_graph_the_floor(built: Project, recorded: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ragmart.serving.postgres.publish import publish_version

    monkeypatch.delenv(BUILD_MEMORY_ENV, raising=False)
    publish_version(built.db_path, "v1", recorded)
    assert hnsw_build_memory(recorded) == "512MB"
    with psycopg.connect(recorded) as conn:  # asked for the transaction only
        assert conn.execute("show maintenance_work_mem").fetchone()[0] == "64MB"


def test_publish_sizes_the_build_to_the_graph(built: Project, recorded: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the floor out of the way (64 kB, and the database's own setting 1 MB), the
    publish asks for the graph's size."""
    from ragmart.serving.postgres.publish import publish_version

    with psycopg.connect(recorded, autocommit=True) as conn:
        conn.execute(f"alter database {conn.info.dbname} set maintenance_work_mem = '1MB'")
    monkeypatch.setattr(schema, "HNSW_BUILD_MEMORY", 64 << 10)
    monkeypatch.delenv(BUILD_MEMORY_ENV, raising=False)
    publish_version(built.db_path, "v1", recorded)
    graph = schema.hnsw_graph_bytes(chunks_of(built), 384)
    assert graph > 64 << 10
    assert hnsw_build_memory(recorded) == f"{graph >> 10}kB"


def test_the_ceiling_wins_over_the_floor(built: Project, recorded: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ragmart.serving.postgres.publish import publish_version

    monkeypatch.setenv(BUILD_MEMORY_ENV, "300MB")
    publish_version(built.db_path, "v1", recorded)
    assert hnsw_build_memory(recorded) == "300MB"


@pytest.mark.parametrize("value", ["lots", "0", "-1GB", "2 XB"])
def test_a_bad_ceiling_is_refused_before_anything_is_written(
        built: Project, postgres_url: str, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from ragmart.serving.postgres.publish import publish_version

    monkeypatch.setenv(BUILD_MEMORY_ENV, value)
    with pytest.raises(PostgresServingError, match=BUILD_MEMORY_ENV):
        publish_version(built.db_path, "v1", postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select to_regclass('ragmart.serving')").fetchone()[0] is None


@pytest.mark.parametrize("dims", [64, 384])
def test_the_size_rule_agrees_with_pgvector(postgres_url: str, dims: int) -> None:
    """pgvector's NOTICE names the row where a graph stopped fitting in 1 MB: the rule's size
    of that many rows (without its margin) is within 10% of 1 MB."""
    notices: list[str] = []
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("create extension if not exists vector")
        conn.execute(f"create table t (v vector({dims}))")
        conn.execute(f"insert into t select array(select sin(i * g) from generate_series(1, "
                     f"{dims}) as g)::real[]::vector from generate_series(1, 2000) as i")
        conn.execute("set maintenance_work_mem = '1MB'")
        conn.execute("set max_parallel_maintenance_workers = 0")
        conn.execute(f"create index on t using hnsw (v vector_cosine_ops) with (m = "
                     f"{schema.HNSW_M}, ef_construction = {2 * schema.HNSW_M})")
    [fit] = [int(n.rsplit(" after ", 1)[1].split()[0]) for n in notices
             if "no longer fits into maintenance_work_mem" in n]
    estimate = schema.hnsw_graph_bytes(fit, dims) / schema.HNSW_GRAPH_MARGIN
    assert abs(estimate - (1 << 20)) < 0.1 * (1 << 20), (fit, estimate)


@pytest.mark.parametrize(("settings", "named"), [
    ({BUILD_MEMORY_ENV: "lots"}, BUILD_MEMORY_ENV),
    # ef_construction under 2 * m (tests/python/test_postgres_hnsw_build.py)
    ({HNSW_M_ENV: "32", HNSW_EF_CONSTRUCTION_ENV: "40"}, HNSW_EF_CONSTRUCTION_ENV),
])
def test_ragmart_publish_refuses_a_bad_setting_before_any_work(
        built: Project, postgres_url: str, settings: dict[str, str], named: str) -> None:
    """`ragmart publish` (the CLI) with a bad build setting: one line naming the setting, and
    nothing made on either engine: no snapshot file, no serving pointer, no PostgreSQL table
    (the check runs with RAGMART_SERVING_URL's, before the snapshot and the evaluation)."""
    from ragmart.serving.pointer import pointer_path

    files = set(built.db_path.parent.iterdir())
    built.extra_env.update({"RAGMART_SERVING_URL": postgres_url, **settings})
    try:
        proc = built.ragmart("publish", "v1", check=False)
    finally:
        for name in ("RAGMART_SERVING_URL", *settings):
            built.extra_env.pop(name)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert set(built.db_path.parent.iterdir()) == files
    assert not pointer_path(built.db_path).exists()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select to_regclass('ragmart.serving')").fetchone()[0] is None
