"""Publishing to PostgreSQL (issue 15): a version built by dbt from the bundled sample, copied
row for row into the `ragmart` schema, then only what a later build changed; rollback moves the
pointer and writes no data; a reader never sees a mix of two publications.

One deployment is built once per module; a test that lands more CDC works on its own copy.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from dbt_harness import Project

from ragmart.duck import connect
from ragmart.relations import Relations

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("pg_publish"))
    project.land_sample()
    project.build()
    return project


@pytest.fixture
def project(built: Project, tmp_path: Path) -> Project:
    """A copy of the built deployment for one test."""
    shutil.copytree(built.workdir, tmp_path / "deployment")
    return Project(tmp_path / "deployment")


def float32(values: list[float]) -> list[float]:
    return [struct.unpack("f", struct.pack("f", v))[0] for v in values]


def duckdb_rows(db: Path, table: str) -> dict[str, tuple]:
    """chunk_id (or document_id) -> the row as Python values, the vector as float32s."""
    conn = connect(db, read_only=True)
    try:
        cur = conn.execute(f"select * from {table}")
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        conn.close()
    key = names.index("chunk_id") if "chunk_id" in names else names.index("document_id")
    return {r[key]: tuple(float32(v) if n == "embedding" else v
                          for n, v in zip(names, r, strict=True)) for r in rows}


def served_rows(url: str, table: str, names: list[str]) -> dict[str, tuple]:
    """The rows of ragmart.<table> that belong to the serving publication, read the way a
    reader does: the pointer and the rows in one statement."""
    cols = ", ".join(f'"{n}"' for n in names)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select {cols} from ragmart.{table} as t, ragmart.serving as s "
            "where t.published_in <= s.publication_id "
            "and (t.removed_in is null or t.removed_in > s.publication_id)").fetchall()
    key = names.index("chunk_id") if "chunk_id" in names else names.index("document_id")
    return {r[key]: tuple(float32([float(x) for x in v.strip("[]").split(",")])
                          if n == "embedding" else v for n, v in zip(names, r, strict=True))
            for r in rows}


def columns_of(db: Path, table: str) -> list[str]:
    conn = connect(db, read_only=True)
    try:
        return [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_name = $t "
            "order by ordinal_position", {"t": table}).fetchall()]
    finally:
        conn.close()


def assert_same_rows(project: Project, url: str, version: str = "v1") -> None:
    r = Relations(version)
    for table in (r.serving, r.history, "dim_documents", "dim_document_access"):
        expected = duckdb_rows(project.db_path, table)
        assert served_rows(url, table, columns_of(project.db_path, table)) == expected, table


def publications(url: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from ragmart.publications order by publication_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_full_publish_copies_every_row_and_switches(built: Project, postgres_url: str) -> None:
    from ragmart.serving.postgres.publish import publish_version

    result = publish_version(built.db_path, "v1", postgres_url)
    assert not result.incremental and result.rows_removed == 0
    assert result.tables["fct_chunk_embeddings_v1"]["written"] == len(
        duckdb_rows(built.db_path, "fct_chunk_embeddings_v1"))
    assert_same_rows(built, postgres_url)
    [pub] = publications(postgres_url)
    assert (pub["publication_id"], pub["action"], pub["incremental"]) == (
        result.publication_id, "publish", False)
    assert pub["rows_written"] == result.rows_written > 0
    assert pub["dimensions"] == 384 and pub["chunks"] == result.tables[
        "fct_chunk_embeddings_v1"]["written"]
    # the same build published again changes nothing: incremental, nothing written
    again = publish_version(built.db_path, "v1", postgres_url)
    assert again.incremental and (again.rows_written, again.rows_removed) == (0, 0)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select publication_id, version from ragmart.serving").fetchall() \
            == [(again.publication_id, "v1")]
        indexes = {name for (name,) in conn.execute(
            "select indexname from pg_indexes where schemaname = 'ragmart'").fetchall()}
    assert "fct_chunk_embeddings_v1_embedding_hnsw" in indexes
    assert_same_rows(built, postgres_url)
