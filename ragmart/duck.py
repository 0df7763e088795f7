"""DuckDB connection helpers shared by dbt (through the plugin), the CLI and the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

VSS_VERSION = "v1.5.5"


class VssUnavailableError(RuntimeError):
    pass


def vss_extension_path() -> Path:
    """The vss extension file shipped by the ``duckdb-extension-vss`` wheel."""
    spec = importlib.util.find_spec("duckdb_extension_vss")
    if spec is None or not spec.submodule_search_locations:
        raise VssUnavailableError(
            "the duckdb vss extension is not installed; run "
            "`pip install duckdb-extension-vss==1.5.5` (or `make setup`)"
        )
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / "extensions" / VSS_VERSION / "vss.duckdb_extension"
    if not path.is_file():
        raise VssUnavailableError(
            f"{path} is missing: duckdb-extension-vss must match duckdb {VSS_VERSION}"
        )
    return path


def configure_connection(conn: duckdb.DuckDBPyConnection) -> None:
    """Load vss offline and allow HNSW indexes in file databases."""
    path = str(vss_extension_path()).replace("'", "''")
    conn.execute(f"load '{path}'")
    conn.execute("set global hnsw_enable_experimental_persistence = true")


def connect(database: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a ragmart database file with vss loaded.

    vss is loaded into an in-memory instance *before* the file is attached, so that a WAL holding
    HNSW index changes replays with the extension present (vss defect: a WAL replayed without
    vss silently loses the index changes).
    """
    conn = duckdb.connect(database=":memory:")
    configure_connection(conn)
    path = str(Path(database)).replace("'", "''")
    mode = " (read_only)" if read_only else ""
    conn.execute(f"attach '{path}' as ragmart{mode}")
    conn.execute("use ragmart")
    return conn
