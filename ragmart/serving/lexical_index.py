"""The full-text (BM25) index of a serving set, written once, for dbt and for Python.

DuckDB's fts extension (1.5) builds an index with ``PRAGMA create_fts_index``: plain tables in
the schema ``fts_main_<table>`` (``docs``: one row per indexed chunk, ``dict``: the terms and
their document frequency, ``terms``: one row per term occurrence, ``stats``, ``stopwords``)
and two macros (``tokenize``, ``match_bm25``). It is not incremental: it is built from the
table as it is, and rebuilding it (``overwrite=1``) re-reads the whole table (~7 s for 100,000
chunks on the 2-core test machine; bench/incremental.py measures it).

How it stays consistent with the serving set (ragmart.retrieval.lexical reads it):
- A row of the serving set that the index lacks (the *delta*: chunks served since the last
  rebuild) is scored by the same BM25 over its text, tokenized at query time by the index's
  own ``tokenize`` macro, with the index's statistics. A row the index holds that is no longer
  served (a deleted document) is never returned: lexical search ranks only the eligible rows
  of the serving set (retrieval.sql's eligible_sql), joined on chunk_id. A chunk_id names one
  document version and position, so an indexed chunk_id's text is the text served.
- dbt rebuilds it (the post-hook maintain_lexical_index of fct_chunk_vector_delta) when it is
  missing or when the delta or the rows no longer served pass their thresholds (vars
  lexical_delta_max_rows, lexical_delta_max_ratio, lexical_index_max_dead_ratio), so an
  ordinary build does not pay for the corpus.
- A slim published snapshot gets its own index at publish (snapshots are immutable, so that
  index never goes stale); a whole-file snapshot keeps the build database's (with its delta).
- Purge rebuilds every such index of a file it deletes from (`rebuild_all`): the ``dict``
  table holds the words of every indexed text, a deleted document's included, until then.

The statement is rendered here only (`create_index_sql`); the dbt-duckdb plugin registers it
as ``ragmart_fts_index_sql`` for the macro maintain_lexical_index.
"""

from __future__ import annotations

import weakref

import duckdb
from duckdb.sqltypes import VARCHAR

from ragmart.duck import load_extension
from ragmart.relations import LEXICAL_SCHEMA_PREFIX

FUNCTION = "ragmart_fts_index_sql"
KEY_COLUMN = "chunk_id"
TEXT_COLUMN = "chunk_text"
STEMMER = "porter"
STOPWORDS = "english"
# what separates terms. Not fts' default, which drops digits too: identifiers and numbers
# (POL-2291, 30 days) are what lexical search is for. Applied after lower() and strip_accents.
IGNORE = "[^a-z0-9]+"


def schema_of(table: str) -> str:
    """The schema fts writes the index of main.`table` to."""
    return LEXICAL_SCHEMA_PREFIX + table


def create_index_sql(table: str) -> str:
    """The PRAGMA (re)building the full-text index of the serving table `table` (an unquoted
    identifier in the connection's current database)."""
    quoted = table.replace("'", "''")
    return (f"pragma create_fts_index('{quoted}', '{KEY_COLUMN}', '{TEXT_COLUMN}', "
            f"stemmer = '{STEMMER}', stopwords = '{STOPWORDS}', ignore = '{IGNORE}', "
            "strip_accents = 1, lower = 1, overwrite = 1)")


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Load fts on `conn` and make ``ragmart_fts_index_sql(table varchar)`` callable."""
    load_extension(conn, "fts")
    conn.create_function(FUNCTION, create_index_sql, [VARCHAR], VARCHAR)


def has_index(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether main.`table` has a full-text index (asked of the table itself: ~1 ms, against
    ~4 ms for the catalog functions, and searches ask it per query)."""
    try:
        conn.execute(f'select 1 from "{schema_of(table)}".docs limit 0')
    except duckdb.CatalogException:
        return False
    return True


_LOADED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def ensure_loaded(conn: duckdb.DuckDBPyConnection) -> None:
    """Load fts on `conn` once: LOAD costs ~10 ms each time (asking DuckDB whether it is
    loaded, ~6 ms), and a search must not pay that per query. Calling a function of fts that
    is not loaded would make DuckDB try to download the extension."""
    if conn not in _LOADED:
        load_extension(conn, "fts")
        _LOADED.add(conn)


def rebuild(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """(Re)build the index of main.`table` on `conn` (writable) from the rows it holds now."""
    load_extension(conn, "fts")
    conn.execute(create_index_sql(table))


def indexed_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables of the current database that have a full-text index."""
    rows = conn.execute(
        "select schema_name from duckdb_tables() where database_name = current_database() "
        "and starts_with(schema_name, $p) and table_name = 'docs' order by schema_name",
        {"p": LEXICAL_SCHEMA_PREFIX}).fetchall()
    return [schema.removeprefix(LEXICAL_SCHEMA_PREFIX) for (schema,) in rows]


def rebuild_all(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Rebuild every full-text index of the current database from its table's rows now (purge:
    no word of a deleted row stays in ``dict``); an index whose table is gone is dropped.
    Returns the tables re-indexed."""
    existing = {name for (name,) in conn.execute(
        "select table_name from duckdb_tables() where database_name = current_database() "
        "and schema_name = 'main'").fetchall()}
    rebuilt = []
    for table in indexed_tables(conn):
        if table in existing:
            rebuild(conn, table)
            rebuilt.append(table)
        else:
            conn.execute(f'drop schema "{schema_of(table)}" cascade')
    return rebuilt
