"""What a DuckDB database holds: whether a relation exists, which index versions it serves.

Questions asked of the current catalog of an open connection (the build database or a
published snapshot), by the modules that read a database another process built: quality,
freshness, publish, serving lag, retrieval and the SQL shell. Relation names and the version
rule are ragmart.relations'.
"""

from __future__ import annotations

import duckdb

from ragmart.relations import SERVING_PREFIX, version_of


def table_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the current catalog of `conn` has a table called `name` (duckdb_tables(): about
    half the cost of information_schema, and retrieval asks once per search)."""
    return bool(conn.execute(
        "select count(*) from duckdb_tables() where table_name = $name "
        "and database_name = current_database()", {"name": name},
    ).fetchone()[0])


def macro_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the current catalog of `conn` has a function or macro called `name`."""
    return bool(conn.execute(
        "select count(*) from duckdb_functions() where function_name = $name "
        "and database_name = current_database()", {"name": name},
    ).fetchone()[0])


def index_versions(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The index versions whose serving table exists in the current catalog, oldest first."""
    rows = conn.execute(
        "select distinct table_name from information_schema.tables "
        "where table_name like $prefix and table_catalog = current_database()",
        {"prefix": SERVING_PREFIX + "v%"},
    ).fetchall()
    versions = {version_of(name) for (name,) in rows} - {None}
    return sorted(versions, key=lambda v: int(v[1:]))
