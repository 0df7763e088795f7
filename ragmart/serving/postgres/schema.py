"""The `ragmart` schema on the serving database: idempotent DDL, and DuckDB types mapped.

Two bookkeeping tables and one data table per DuckDB relation served:

- ``ragmart.publications``: one row per publish, rollback or refresh (purge); a publish row's
  id is the *content* id its rows carry. ``restores`` names, for a rollback, the content
  publication it serves again; ``pruned_at`` is set when pruning removed rows it needed (it can
  no longer be rolled back to).
- ``ragmart.serving``: exactly one row, the pointer: the content publication that serves and
  its version. Switching is one UPDATE of it in the transaction that wrote the rows.
- ``ragmart.removals``: the fingerprints of the rows each publication marked removed, per
  table: what pruning deletes by (through the fingerprint index), so that neither marking nor
  pruning reads a whole table (``removed_in`` has no index: see `create_indexes`).
- ``ragmart.staged_rows``: (publication id, table) of rows a publish's second connection
  committed before the publish's own transaction (ragmart.serving.postgres.parallel); that
  transaction deletes its entry with the switch, so an entry left names a publish that failed,
  whose rows the next writer deletes (they were never served: no publication has their id).
  It has no index on purpose: CREATE INDEX IF NOT EXISTS locks its table (SHARE) even when the
  index exists, and the second connection writes here while the publish holds that lock.
- ``ragmart.live_fingerprints``: the fingerprints of every published table's live rows
  (removed_in is null), kept by the publish (and purge) beside the rows: what an incremental
  publish compares the source with, read from a narrow table instead of the wide data tables
  (0.5-0.6 s per publish at 100,000 chunks).
- the data tables (``fct_chunk_embeddings_vN``, ``fct_chunk_history_vN``, ``dim_documents``,
  ``dim_document_access``) keep DuckDB's names and columns, plus ``published_in`` and
  ``removed_in`` (publication ids: a row belongs to publication P when ``published_in <= P and
  (removed_in is null or removed_in > P)``, `visible_in`) and ``row_fingerprint`` (a hash of the
  row's columns but the vector, computed by DuckDB at publish: what an incremental publish
  compares; a changed vector always comes with a changed chunk_hash or embedding_model).

Everything here is `if not exists`: any publish may run it; it never drops or rewrites.
"""

from __future__ import annotations

import re

from ragmart.relations import (
    ACCESS_TABLE,
    DOCUMENTS_TABLE,
    HISTORY_PREFIX,
    INDEX_VERSION,
    LEXICAL_CHUNKS_PREFIX,
    LEXICAL_STATS_PREFIX,
    LEXICAL_TERMS_PREFIX,
    SERVING_PREFIX,
    Relations,
)
from ragmart.serving.postgres.settings import (
    SCHEMA,
    PostgresServingError,
    hnsw_settings,
    max_build_memory,
)

PUBLICATIONS = f"{SCHEMA}.publications"
SERVING = f"{SCHEMA}.serving"
REMOVALS = f"{SCHEMA}.removals"
LIVE_FINGERPRINTS = f"{SCHEMA}.live_fingerprints"
STAGED = f"{SCHEMA}.staged_rows"
# pg_advisory_xact_lock key of publishers, rollbacks, prunes and purges of one target
LOCK_KEY = 0x7261676D617274  # "ragmart"
SERVING_FILLFACTOR = 70  # a serving row is ~2 kB (its vector inline): room for its HOT update
# The HNSW index's build parameters: m pgvector's default, ef_construction twice its 64. At
# 100,000 chunks and 100% eligible (bench/serving_recall.py, 100 queries, ef_search 400):
# recall@10 0.990-0.997 over three builds at 64 (ef_search up to 1000 only reached 0.992),
# 1.000 in two builds at 128, p50 20-27 ms either way; the build took 38 s at 64 and 44-65 s
# at 128 (load 10-18). Raising ef_search cannot recover what the graph's build missed.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
# ... and for a graph of LARGE_GRAPH_ROWS vectors or more, twice both. At 1,000,000 chunks
# (bench/serving_recall.py's data, 300 queries, 100% eligible) an index built with 16 / 128
# recalled 0.964 at ef_search 400 and 0.978 at 1,000 (pgvector's most), some queries none of
# their ten: the search never reached their document's chunks; m 24 with 128 reached 0.975.
# Built with 32 / 256 it recalled 0.9997 at ef_search 400 and 0.996 at 200, in 1,284 s
# (under load). Between 100,000 (where 16 / 128 recall 1.000) and 1,000,000 nothing was
# measured: the threshold halves the distance, in the cheaper build's favour below it.
HNSW_M_LARGE = 32
HNSW_EF_CONSTRUCTION_LARGE = 256
LARGE_GRAPH_ROWS = 500_000
HNSW_BUILD_MEMORY = 512 << 20  # the least maintenance_work_mem an HNSW build gets (bytes)
# pgvector's in-memory graph, per row: the vector (4 bytes a dimension) and the level-0 neighbour
# list (2m candidates of 16 bytes) with the element's header. Measured with pgvector 0.8.6 at
# 384 dims and m 16: the graph stopped fitting in 64 MB after 29,807 rows, 2,251 bytes a row
# (4 x 384 + 48 x 16 = 2,304 here). Past maintenance_work_mem the build inserts row by row into
# the index on disk: the first 1M-chunk publish took 4,444 s with 1 GB (graph ~2.3 GB), 1,417 s
# sized (session 5, both on a loaded machine).
HNSW_GRAPH_MARGIN = 1.1
# the columns every data table has beside DuckDB's
BOOKKEEPING_COLUMNS = ("published_in", "removed_in", "row_fingerprint")
# the column the publish adds to every table with a metadata column: the document version's
# source location (ragmart.retrieval.citations' rule, applied by DuckDB at publish)
SOURCE_COLUMN = "source"

DDL = f"""
create extension if not exists vector;
create schema if not exists {SCHEMA};
create table if not exists {PUBLICATIONS} (
    publication_id bigint generated always as identity primary key,
    version text not null,
    action text not null check (action in ('publish', 'rollback', 'refresh')),
    published_at timestamptz not null default now(),
    embedding_model text,
    chunker_version text,
    dimensions int,
    chunks bigint,
    incremental bool not null default false,
    rows_written bigint not null default 0,
    rows_removed bigint not null default 0,
    report jsonb,
    snapshot text,
    forced bool not null default false,
    gate_failures text[] not null default '{{}}',
    restores bigint references {PUBLICATIONS},
    pruned_at timestamptz
);
create table if not exists {SERVING} (
    only_row boolean primary key default true check (only_row),
    publication_id bigint not null references {PUBLICATIONS},
    version text not null,
    switched_at timestamptz not null default now()
);
create table if not exists {REMOVALS} (
    publication_id bigint not null,
    table_name text not null,
    row_fingerprint text not null
);
create index if not exists removals_publication on {REMOVALS} (publication_id, table_name);
create table if not exists {LIVE_FINGERPRINTS} (
    table_name text not null,
    row_fingerprint text not null
);
create index if not exists live_fingerprints_row on {LIVE_FINGERPRINTS}
    (table_name, row_fingerprint);
create table if not exists {STAGED} (
    publication_id bigint not null,
    table_name text not null
);
"""


def lock(conn) -> None:
    """Serialize with every other writer of the target until the transaction ends."""
    conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))


def ensure_schema(conn) -> bool:
    """Create the extension, the schema and the bookkeeping tables when missing (idempotent).
    Runs in the caller's transaction. A schema from before ``ragmart.removals`` gets it
    filled from its removed rows (once: what pruning then deletes by fingerprint). Returns
    whether ``ragmart.staged_rows`` existed before (committed: another connection can write
    it while this transaction is open)."""
    new_log, new_live, staged = conn.execute(
        "select to_regclass(%s) is null, to_regclass(%s) is null, to_regclass(%s) is not null",
        (REMOVALS, LIVE_FINGERPRINTS, STAGED)).fetchone()
    conn.execute(DDL)
    for table in data_tables(conn):
        if new_log:
            conn.execute(f"insert into {REMOVALS} (publication_id, table_name, row_fingerprint) "
                         f'select removed_in, %s, row_fingerprint from {SCHEMA}."{table}" '
                         "where removed_in is not null", (table,))
        if new_live and (table_version(table) is not None or table in SHARED_TABLES):
            conn.execute(f"insert into {LIVE_FINGERPRINTS} (table_name, row_fingerprint) "
                         f'select %s, row_fingerprint from {SCHEMA}."{table}" '
                         "where removed_in is null", (table,))
    return staged


def visible_in(publication: str) -> str:
    """The SQL condition: a data table row belongs to the publication `publication` (an SQL
    expression, e.g. a parameter or `s.publication_id`)."""
    return (f"published_in <= {publication} "
            f"and (removed_in is null or removed_in > {publication})")


_DUCKDB_TYPES = {
    "VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint",
    "BOOLEAN": "boolean", "DOUBLE": "double precision", "FLOAT": "real", "DATE": "date",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone", "HUGEINT": "numeric",
    "UBIGINT": "numeric", "JSON": "text",
}


def postgres_type(duckdb_type: str) -> str:
    """The PostgreSQL type of a DuckDB column type: FLOAT[d] -> vector(d), X[] -> X[]."""
    fixed = re.fullmatch(r"FLOAT\[(\d+)\]", duckdb_type)
    if fixed:
        return f"vector({fixed[1]})"
    if duckdb_type.endswith("[]"):
        return postgres_type(duckdb_type[:-2]) + "[]"
    if duckdb_type not in _DUCKDB_TYPES:
        raise PostgresServingError(
            f"DuckDB type {duckdb_type} has no PostgreSQL mapping in ragmart "
            "(ragmart.serving.postgres.schema); cast the column in its model")
    return _DUCKDB_TYPES[duckdb_type]


# the data tables every version shares
SHARED_TABLES = (DOCUMENTS_TABLE, ACCESS_TABLE)


def served_tables(version: str) -> list[str]:
    """The DuckDB relations a publication of `version` copies (those the snapshot holds)."""
    r = Relations(version)
    return [r.serving, r.history, *SHARED_TABLES]


def is_serving_table(table: str) -> bool:
    return table_version(table) is not None and table.startswith(SERVING_PREFIX)


def table_columns(conn, table: str) -> dict[str, str]:
    """name -> PostgreSQL type of `ragmart.<table>`'s columns ({} when it does not exist)."""
    rows = conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute "
        "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped order by attnum",
        (f'{SCHEMA}."{table}"',)).fetchall()
    return dict(rows)


def tables_columns(conn, tables: list[str]) -> dict[str, dict[str, str]]:
    """`table_columns` of each of `tables`, in one round trip."""
    found: dict[str, dict[str, str]] = {table: {} for table in tables}
    for table, name, kind in conn.execute(
            "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "from pg_attribute as a join pg_class as c on c.oid = a.attrelid "
            "join pg_namespace as n on n.oid = c.relnamespace where n.nspname = %s "
            "and c.relname = any(%s) and a.attnum > 0 and not a.attisdropped "
            "order by c.relname, a.attnum", (SCHEMA, tables)).fetchall():
        found[table][name] = kind
    return found


def ensure_data_table(conn, table: str, columns: dict[str, str],
                      existing: dict[str, str] | None = None) -> str:
    """Create `ragmart.<table>` with `columns` (name -> PostgreSQL type) and the bookkeeping
    columns, or add the columns it lacks; returns "created" (then the caller loads it and
    calls `create_indexes`), "altered" (a column added: the table is locked until commit) or
    "". A column whose type changed is refused. `existing`: its `table_columns`, when the
    caller has them."""
    existing = table_columns(conn, table) if existing is None else existing
    if not existing:
        cols = ", ".join(f'"{name}" {kind}' for name, kind in columns.items())
        storage = f" with (fillfactor = {SERVING_FILLFACTOR})" if is_serving_table(table) else ""
        conn.execute(f'create table {SCHEMA}."{table}" ({cols}, published_in bigint not null, '
                     f"removed_in bigint, row_fingerprint text not null){storage}")
        return "created"
    altered = ""
    for name, kind in columns.items():
        if name not in existing:
            conn.execute(f'alter table {SCHEMA}."{table}" add column "{name}" {kind}')
            altered = "altered"
        elif existing[name] != kind:
            raise PostgresServingError(
                f"column {table}.{name} is {existing[name]} on the serving database and {kind} "
                f"in the build; publish it under a new index version")
    return altered


def create_indexes(conn, table: str, columns: dict[str, str]) -> None:
    """The indexes of a data table, built after its first load (cheaper than maintaining them
    row by row): the fingerprints (what an incremental publish looks up), the chunk_id and
    document keys, and for a serving table the HNSW index on its vectors.

    No index names `removed_in` (not even in a partial index's predicate), and a serving table
    is created with fillfactor SERVING_FILLFACTOR: marking a row removed is then a HOT update,
    a new row version on the same page that no index sees. Otherwise every removed row would
    be inserted into the HNSW index again (a graph insert, ~10 ms each on the 2-core test
    machine): profiled at 20,000 chunks and a 1% edit, the UPDATE marking 235 rows removed took
    2.8 s of an 8.7 s publish with a full page and an index on removed_in, and too little to
    show in the profile with HOT updates."""
    q = f'{SCHEMA}."{table}"'
    conn.execute(f'create index if not exists "{table}_fingerprint" on {q} (row_fingerprint)')
    if "chunk_id" in columns:
        conn.execute(f'create index if not exists "{table}_chunk_id" on {q} (chunk_id)')
    if "document_id" in columns:
        keys = "document_id, document_version" if "document_version" in columns \
            else "document_id"
        conn.execute(f'create index if not exists "{table}_document" on {q} ({keys})')
    if is_serving_table(table) and columns.get("embedding", "").startswith("vector("):
        # pgvector builds the graph in memory while it fits in maintenance_work_mem (64 MB by
        # default; it says so in a NOTICE when it stops fitting) and much slower past it:
        # raised for this transaction only, never lowered
        (rows,) = conn.execute(f"select count(*) from {q}").fetchone()
        m, ef_construction = hnsw_build(rows)
        raise_build_memory(conn, transaction_only=True, tables=[table], m=m)
        conn.execute(f'create index if not exists "{table}_embedding_hnsw" on {q} '
                     f"using hnsw (embedding vector_cosine_ops) with (m = {m}, "
                     f"ef_construction = {ef_construction})")


def hnsw_build(rows: int) -> tuple[int, int]:
    """(m, ef_construction) of the HNSW index built over `rows` vectors: RAGMART_PG_HNSW_M and
    RAGMART_PG_HNSW_EF_CONSTRUCTION where set, else HNSW_M and HNSW_EF_CONSTRUCTION, or the
    LARGE pair from LARGE_GRAPH_ROWS rows (an ef_construction the rule picks is raised to
    2 * m when only m is set). The index keeps them: later publishes insert into it."""
    m_set, ef_set = hnsw_settings()
    large = rows >= LARGE_GRAPH_ROWS
    m = m_set or (HNSW_M_LARGE if large else HNSW_M)
    ef_construction = ef_set or max(2 * m, HNSW_EF_CONSTRUCTION_LARGE if large
                                    else HNSW_EF_CONSTRUCTION)
    if ef_construction < 2 * m:  # only ef_construction set, below the rule's m
        raise PostgresServingError(
            f"RAGMART_PG_HNSW_EF_CONSTRUCTION={ef_construction} is below twice the m of a "
            f"{rows:,}-row graph ({m}); pgvector needs ef_construction >= 2 * m: raise it or "
            "set RAGMART_PG_HNSW_M too")
    return m, ef_construction


def index_m(conn, table: str) -> int | None:
    """The m of the HNSW index on `table`'s vectors (pgvector's default 16 when it names
    none; None without an index): what a rebuild of it (VACUUM FULL) builds with."""
    row = conn.execute(
        "select coalesce((select option_value::int from pg_options_to_table(c.reloptions) "
        "where option_name = 'm'), 16) from pg_catalog.pg_class as c "
        "where c.oid = to_regclass(%s)", (f'{SCHEMA}."{table}_embedding_hnsw"',)).fetchone()
    return row[0] if row else None


_DIMS = re.compile(r"vector\((\d+)\)")


def hnsw_graph_bytes(rows: int, dims: int, m: int | None = None) -> int:
    """What pgvector's HNSW build keeps in memory for `rows` vectors of `dims` in a graph of
    `m` (default HNSW_M; see HNSW_GRAPH_MARGIN's comment), with a 10% margin."""
    return int(rows * (4 * dims + 48 * (m or HNSW_M)) * HNSW_GRAPH_MARGIN)


def raise_build_memory(conn, *, transaction_only: bool, tables: list[str] | tuple = (),
                       m: int | None = None) -> int:
    """Raise maintenance_work_mem (for the transaction or the session) for an HNSW build or a
    VACUUM FULL that rebuilds one: to what the largest graph of `tables` (tables of the schema
    with an `embedding` vector column) needs, at least HNSW_BUILD_MEMORY, at most
    RAGMART_PG_MAX_BUILD_MEMORY (which wins over both); never lowered. `m`: the graph's about
    to be built (default: its index's, `index_m`). Returns the bytes."""
    ceiling = max_build_memory()
    need = HNSW_BUILD_MEMORY
    for table in tables:
        dims = _DIMS.fullmatch(table_columns(conn, table).get("embedding", ""))
        if dims is not None:
            (rows,) = conn.execute(f'select count(*) from {SCHEMA}."{table}"').fetchone()
            need = max(need, hnsw_graph_bytes(rows, int(dims.group(1)),
                                              m or index_m(conn, table)))
    want = min(need, ceiling)
    conn.execute("select set_config('maintenance_work_mem', %s, %s) "
                 "where pg_size_bytes(current_setting('maintenance_work_mem')) < %s",
                 (f"{max(64, want >> 10)}kB", transaction_only, want))
    return want


def data_tables(conn) -> list[str]:
    """Every data table of the schema (those with the bookkeeping columns)."""
    # the catalog, not information_schema.columns (3-10 ms a call, several per publish)
    return [name for (name,) in conn.execute(
        "select c.relname from pg_catalog.pg_attribute as a join pg_catalog.pg_class as c on "
        "c.oid = a.attrelid join pg_catalog.pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind in ('r', 'p') and a.attname = 'published_in' "
        "and not a.attisdropped order by c.relname", (SCHEMA,)).fetchall()]


def table_version(table: str) -> str | None:
    """The index version a per-version data table belongs to (None for the shared ones)."""
    for prefix in (SERVING_PREFIX, HISTORY_PREFIX):
        version = table.removeprefix(prefix)
        if version != table and INDEX_VERSION.fullmatch(version):
            return version
    return None


def owning_version(table: str) -> str | None:
    """The index version whose tables `table` is one of: table_version's, or the version of
    a BM25 statistics table (ragmart.serving.postgres.lexical; readers get no policy on
    those, so table_version leaves them out). What pruning drops with the version."""
    version = table_version(table)
    for prefix in (LEXICAL_CHUNKS_PREFIX, LEXICAL_TERMS_PREFIX, LEXICAL_STATS_PREFIX):
        rest = table.removeprefix(prefix)
        if version is None and rest != table and INDEX_VERSION.fullmatch(rest):
            version = rest
    return version
