"""`ragmart serve` runs its searches side by side on worker threads, each with a reader of its
own: every reader's DuckDB runs a statement on the calling thread alone (threads =
pool.SEARCH_THREADS). Each reader's connection is a DuckDB instance of its own, so the setting
must be made on each: set on the first alone, the others kept a DuckDB worker thread each,
woken per statement (CPU that a hybrid search paid under load)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_http import QUESTION, bearer, deployment, env, keys  # noqa: F401

from ragmart.http.app import create_app
from ragmart.http.limits import MIN_WORKERS, WORKERS_ENV
from ragmart.http.pool import SEARCH_THREADS


def test_every_reader_of_the_service_runs_duckdb_on_its_own_thread(keys) -> None:  # noqa: F811
    app = create_app(keys_file=keys["file"])
    with TestClient(app) as client:
        for mode in ("hybrid", "lexical", "vector"):
            response = client.post("/v1/retrieve", json={"question": QUESTION, "mode": mode},
                                   headers=bearer(keys["staff"]))
            assert response.status_code == 200, response.text
            assert response.json()["results"]
        generation = app.state.pool.current
        readers = generation._readers
        assert len(readers) == app.state.limits.workers > 1
        assert len({id(r.conn) for r in readers}) == len(readers)
        for reader in readers:
            assert reader.conn.execute(
                "select current_setting('threads')").fetchone()[0] == SEARCH_THREADS


@pytest.mark.parametrize(("cores", "threads"), [(1, MIN_WORKERS), (2, 2), (6, 6)])
def test_the_service_runs_one_search_thread_per_core_unless_told(
        keys, monkeypatch, cores, threads) -> None:  # noqa: F811
    """Vectors in memory: one search thread (and reader) per core the process may run on, at
    least MIN_WORKERS; threads beyond the cores only contend for the GIL (limits.py)."""
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    app = create_app(keys_file=keys["file"])
    with TestClient(app) as client:
        response = client.post("/v1/retrieve", json={"question": QUESTION},
                               headers=bearer(keys["staff"]))
        assert response.status_code == 200, response.text
        assert len(app.state.pool.current._readers) == app.state.limits.workers == threads
    monkeypatch.setenv(WORKERS_ENV, "5")  # the setting (and --workers) wins over the cores
    app = create_app(keys_file=keys["file"])
    with TestClient(app):
        assert len(app.state.pool.current._readers) == app.state.limits.workers == 5
