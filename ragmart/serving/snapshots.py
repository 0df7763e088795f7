"""Published snapshots: taking one from the build database, reading what it holds, pruning.

The build database (RAGMART_DB) is written by `dbt build` and locked while it runs. Serving
never reads it once something is published: `snapshot` copies a version, under a shared lock
that keeps writers out for the length of the copy, into an immutable file under
`<publish dir>/`, which ragmart.serving.publish then switches serving.json to. Readers open the
snapshot read-only, so a build never blocks them and every answer comes wholly from one version.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ragmart.catalog import table_exists
from ragmart.duck import connect
from ragmart.relations import (
    ACCESS_TABLE,
    DOCUMENTS_TABLE,
    INDEX_VERSIONS_TABLE,
    LANDED_TABLE,
    MARKS_TABLE,
    SERVING_PREFIX,
    Relations,
    version_of,
)
from ragmart.serving import lexical_index
from ragmart.serving.build_db import open_build_db
from ragmart.serving.pointer import ServingError, current_publication, history, publish_dir

KEEP_SNAPSHOTS = 3


@dataclass(frozen=True)
class VersionInfo:
    version: str
    chunks: int
    documents: int
    embedding_model: str | None
    chunker_version: str | None
    built_at: str | None
    index_rows: int
    size_bytes: int


def list_versions(conn: duckdb.DuckDBPyConnection, only: str | None = None
                  ) -> list[VersionInfo]:
    """Every index version whose serving table the connection's database holds (only the
    version `only`, when given: each one read costs a scan of its vectors' sizes)."""
    names = [r[0] for r in conn.execute(
        "select table_name from information_schema.tables where table_name like $p "
        "order by table_name", {"p": f"{SERVING_PREFIX}v%"}).fetchall()]
    if only is not None:
        names = [name for name in names if name == Relations(only).serving]
    out = []
    for name in names:
        version = version_of(name)
        if version is None:
            continue
        chunks, documents, model, chunker, built, size = conn.execute(
            f"select count(*), count(distinct document_id), min(embedding_model), "
            f"min(chunker_version), max(created_at), coalesce(sum(length(chunk_text)), 0) "
            f"+ coalesce(sum(len(embedding)), 0) * 4 from {name}"  # float32 at its model's size
        ).fetchone()
        index = Relations(version).index
        index_rows = 0
        if table_exists(conn, index):
            index_rows = conn.execute(f"select count(*) from {index}").fetchone()[0]
        out.append(VersionInfo(version, chunks, documents, model, chunker,
                               built.isoformat() if built else None, index_rows, int(size)))
    return out


def _slim_relations(version: str) -> list[str]:
    """What serving `version` reads besides the index_versions row and the retrieval macro:
    the serving set, its exact delta, the history `--as-of` reads, the documents and their
    latest access. Not the HNSW index table: see `snapshot`."""
    r = Relations(version)
    return [r.serving, r.delta, r.history, DOCUMENTS_TABLE, ACCESS_TABLE]


def _embedding_dimensions(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    (data_type,) = conn.execute(
        "select data_type from information_schema.columns where table_name = $t "
        "and column_name = 'embedding' and table_catalog = current_database()", {"t": table},
    ).fetchone()
    return int(re.sub(r"[^0-9]", "", data_type))


def snapshot(db_path: Path, version: str, *, phases: dict[str, float] | None = None) -> Path:
    """Write `version`'s immutable snapshot file from the build database; returns its path.

    A read-only connection holds a shared lock for the length of the copy, so no build can
    write meanwhile (a build that starts waits or fails on the lock, per its retries).

    What a snapshot holds. A serving set of at most EXACT_SCAN_MAX_ROWS chunks is searched
    exactly, never through the HNSW index, so its snapshot is *slim*: only what serving the
    version reads (`_slim_relations`, its index_versions row, the retrieval macro), copied
    table by table (`create table ... as select`) into a new file: 3.4 MB instead of 9.2 MB for
    the 838-chunk sample, and a publish after a small change copies no staging, history of
    other versions or embedding cache. A larger serving set is searched through its HNSW index,
    and DuckDB cannot move an index to another file: a copied table gets it only by building it
    again (212 s for 20,000 rows on the 2-core test machine, against ~1 s to copy the whole
    file). So its snapshot stays a copy of the whole build database, the index dbt built
    included (ragmart never writes an HNSW index into a snapshot). Either way the snapshot
    records what it was taken from (MARKS_TABLE: the version's last build and the newest
    ingestion it holds). `phases`, when given, receives the seconds of each step."""
    from ragmart.retrieval.macro import install_sql_macros
    from ragmart.retrieval.planner import EXACT_SCAN_MAX_ROWS
    from ragmart.retrieval.sql import Tables

    db_path = Path(db_path)
    serving = Relations(version).serving
    target_dir = publish_dir(db_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = target_dir / f"{version}-{stamp}.duckdb"
    tmp = target_dir / f".{final.name}.tmp"
    lap = _Laps(phases)
    conn = open_build_db(db_path, read_only=True)
    lap("open build db")
    try:
        if not table_exists(conn, serving):
            raise ServingError(
                f"version {version} is not built in {db_path}; build it with "
                f"`dbt build --vars '{{index_version: {version}}}'`"
            )
        built_at = ingested = None
        if table_exists(conn, INDEX_VERSIONS_TABLE):
            row = conn.execute(f"select built_at from {INDEX_VERSIONS_TABLE} "
                               "where index_version = $v", {"v": version}).fetchone()
            built_at = row[0] if row else None
        if table_exists(conn, LANDED_TABLE):
            ingested = conn.execute(f"select max(ingested_at) from {LANDED_TABLE}").fetchone()[0]
        slim = conn.execute(f"select count(*) from {serving}").fetchone()[0] \
            <= EXACT_SCAN_MAX_ROWS
        dims = _embedding_dimensions(conn, serving)
        lap("read marks")
        if slim:
            _copy_slim(conn, tmp, version)
        else:
            shutil.copyfile(db_path, tmp)
            wal = Path(f"{db_path}.wal")
            if wal.exists():
                shutil.copyfile(wal, Path(f"{tmp}.wal"))
        lap("copy")
    finally:
        conn.close()
    # fold any WAL into the copy (with vss loaded), add the lookup indexes readers need and the
    # retrieval macro (a slim copy has none), so readers open a clean, read-optimized file
    copy = connect(tmp)
    lap("open copy")
    try:
        if slim:
            install_sql_macros(copy, dims, Tables.for_version(version))
        if slim or not lexical_index.has_index(copy, serving):
            # a slim copy carries no full-text index: built once, on the immutable snapshot
            lexical_index.rebuild(copy, serving)
            lap("full-text index")
        copy.execute(f"create or replace table {MARKS_TABLE} as select $v as index_version, "
                     "$b::timestamp as built_at, $i::timestamp as ingested_through, $s as slim",
                     {"v": version, "b": built_at, "i": ingested, "s": slim})
        add_lookup_indexes(copy, version)
        lap("lookup indexes")
        copy.execute("checkpoint")
        lap("checkpoint")
    finally:
        copy.close()
        lap("close copy")
    os.replace(tmp, final)
    return final


class _Laps:
    """Adds the seconds since the previous lap to phases[name] (nothing without phases)."""

    def __init__(self, phases: dict[str, float] | None) -> None:
        self.phases, self.last = phases, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self.phases is not None:
            self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


def _copy_slim(conn: duckdb.DuckDBPyConnection, target: Path, version: str) -> None:
    """Copy what serving `version` reads, table by table, into the new database file `target`."""
    target.unlink(missing_ok=True)
    quoted = str(target).replace("'", "''")
    conn.execute(f"attach '{quoted}' as snapshot_copy")
    try:
        for table in _slim_relations(version):
            if table_exists(conn, table):
                conn.execute(f'create table snapshot_copy.main."{table}" as '
                             f'select * from main."{table}"')
        if table_exists(conn, INDEX_VERSIONS_TABLE):
            conn.execute(f"create table snapshot_copy.main.{INDEX_VERSIONS_TABLE} as "
                         f"select * from main.{INDEX_VERSIONS_TABLE} "
                         "where index_version = $v", {"v": version})
    finally:
        conn.execute("detach snapshot_copy")


def add_lookup_indexes(conn: duckdb.DuckDBPyConnection, version: str) -> list[str]:
    """Create the unique chunk_id (ART) indexes of `version`'s serving and history tables that
    are missing; returns the names created.

    Retrieval looks chunks up by constant chunk_id lists, and DuckDB answers those from an ART
    index, reading only those rows' vectors (a Retriever search at 100,000 chunks: ~25 ms with
    it, ~250 ms without). The build database has no such index on purpose: DuckDB rewrites a
    table with one at the checkpoint after every insert (0.5 s at 20,000 rows, 2.7 s at 100,000,
    whatever the change), so a build would pay for it in proportion to the corpus. A snapshot is
    written once and read many times; its indexes are built here, once per publish (0.1 s to
    create at 100,000 rows). Uniqueness in the build database is a dbt data test."""
    relations = Relations(version)
    existing = {name for (name,) in conn.execute(
        "select index_name from duckdb_indexes() where database_name = current_database()"
    ).fetchall()}
    tables = {name for (name,) in conn.execute(
        "select table_name from duckdb_tables() where database_name = current_database()"
    ).fetchall()}
    created = []
    for table in (relations.serving, relations.history):
        name = f"{table}_chunk_id"
        if table in tables and name not in existing:
            conn.execute(f'create unique index "{name}" on "{table}" (chunk_id)')
            created.append(name)
    return created


def snapshot_info(path: Path, version: str) -> VersionInfo:
    """What the snapshot file `path` holds of `version`."""
    conn = connect(path, read_only=True)
    try:
        return next(v for v in list_versions(conn, only=version) if v.version == version)
    finally:
        conn.close()


def snapshot_marks(path: Path, version: str) -> tuple[str | None, str | None]:
    """(when `version` was last built, the newest ingested_at of the landed files it holds)
    as recorded in the snapshot `path` (MARKS_TABLE), naive-UTC ISO text or None."""
    conn = connect(path, read_only=True)
    try:
        built, ingested = conn.execute(
            f"select built_at, ingested_through from {MARKS_TABLE} where index_version = $v",
            {"v": version}).fetchone()
        return (built.isoformat() if built else None, ingested.isoformat() if ingested else None)
    finally:
        conn.close()


def prune_snapshots(db_path: Path) -> None:
    """Keep the serving snapshot and the KEEP_SNAPSHOTS most recently recorded snapshots
    (rollback targets; a snapshot refreshed several times counts once)."""
    keep = set(list(dict.fromkeys(p.snapshot for p in reversed(history(db_path))))
               [:KEEP_SNAPSHOTS])
    serving = current_publication(db_path)
    if serving:
        keep.add(serving.snapshot)
    for path in publish_dir(db_path).glob("v*.duckdb"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
