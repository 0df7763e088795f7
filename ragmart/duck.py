"""DuckDB connection helpers shared by dbt (through the plugin), the CLI and the tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

EXTENSION_VERSION = "v1.5.5"  # the duckdb-extension-<name> wheels that match duckdb 1.5.5
# the extensions ragmart loads, each from its PyPI wheel (never from the network): vss (HNSW),
# fts (lexical search), httpfs (an s3:// landing zone)
EXTENSIONS = ("vss", "fts", "httpfs")


class ExtensionUnavailableError(RuntimeError):
    pass


def extension_path(name: str) -> Path:
    """The extension file shipped by the ``duckdb-extension-<name>`` wheel."""
    if name not in EXTENSIONS:
        raise ValueError(f"unknown extension {name!r}; ragmart loads {', '.join(EXTENSIONS)}")
    wheel = f"duckdb-extension-{name}"
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionUnavailableError(
            f"the duckdb {name} extension is not installed; run "
            f"`pip install {wheel}==1.5.5` (or `make setup`)"
        )
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / "extensions" / EXTENSION_VERSION / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ExtensionUnavailableError(
            f"{path} is missing: {wheel} must match duckdb {EXTENSION_VERSION}"
        )
    return path


def load_extension(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load one of EXTENSIONS from its wheel, by file path (offline)."""
    path = str(extension_path(name)).replace("'", "''")
    conn.execute(f"load '{path}'")


def configure_connection(conn: duckdb.DuckDBPyConnection) -> None:
    """Load vss offline and allow HNSW indexes in file databases."""
    load_extension(conn, "vss")
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
