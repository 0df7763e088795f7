"""The build database as serving sees it: opened without racing a build, and its last write.

`dbt build` holds the build database (RAGMART_DB) locked while it runs. A snapshot (a shared,
read-only lock) and the gate's baseline (a write) wait for that lock up to
RAGMART_LOCK_WAIT_SECONDS and then fail with a ServingError that says nothing was switched
(`open_build_db`); a freshness check never waits (`open_build_db_if_free`). A
publication records the database's modification time (`mtime_ns`) just after it switched, so a
reader can tell without opening the database whether anything wrote it since
(ragmart.serving.lag).
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from ragmart.config import seconds_from_env
from ragmart.duck import connect
from ragmart.serving.pointer import ServingError

# How long opening the build database waits for a build's lock to go away.
LOCK_WAIT_ENV = "RAGMART_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 120.0


def _lock_wait_seconds() -> float:
    try:
        seconds = seconds_from_env(LOCK_WAIT_ENV)
    except ValueError as exc:
        raise ServingError(f"{exc}; unset it (default {DEFAULT_LOCK_WAIT_SECONDS:g}) or write "
                           "e.g. 30") from None
    return DEFAULT_LOCK_WAIT_SECONDS if seconds is None else seconds


def open_build_db(db_path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection to the build database, waiting up to RAGMART_LOCK_WAIT_SECONDS while a
    build (another process) holds it; ServingError when it does not exist or stays locked."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise ServingError(f"database {db_path} does not exist; run `dbt build` first")
    wait = _lock_wait_seconds()
    deadline = time.monotonic() + wait
    while True:
        try:
            return connect(db_path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise ServingError(f"cannot open {db_path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise ServingError(
                    f"{db_path} stayed locked by another process (a dbt build?) for {wait:g} s "
                    f"and nothing was switched; retry when it finishes, or wait longer with "
                    f"{LOCK_WAIT_ENV} ({exc})"
                ) from exc
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))


def open_build_db_if_free(db_path: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection to the build database, or None while a build holds it: for a
    check that must never wait (ragmart.serving.lag)."""
    try:
        return connect(db_path, read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return None
        raise


def mtime_ns(db_path: Path) -> int:
    """The newest modification time of the database file and its WAL (0 when absent)."""
    paths = (Path(db_path), Path(f"{db_path}.wal"))
    return max([0, *(path.stat().st_mtime_ns for path in paths if path.exists())])
