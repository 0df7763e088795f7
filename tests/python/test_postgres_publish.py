"""Publishing to PostgreSQL (issue 15): a version built by dbt from the bundled sample, copied
row for row into the `ragmart` schema, then only what a later build changed; rollback moves the
pointer and writes no data; a reader never sees a mix of two publications.

One deployment is built once per module; a test that lands more CDC works on its own copy.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from dbt_harness import Project
from sample_deployment import sample_deployment  # noqa: F401 - the fixture `built`

from ragmart.duck import connect
from ragmart.exit_codes import Exit
from ragmart.relations import Relations

psycopg = pytest.importorskip("psycopg")


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


def table_rows(db: Path, table: str) -> set[tuple]:
    """Every row of a DuckDB table but its vector (what a publish compares)."""
    conn = connect(db, read_only=True)
    try:
        names = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns where table_name = $t "
            "and column_name != 'embedding' order by ordinal_position", {"t": table}).fetchall()]
        cols = ", ".join(f'"{n}"' for n in names)
        return {tuple(map(repr, r)) for r in conn.execute(f"select {cols} from {table}").fetchall()}
    finally:
        conn.close()


def pg_counts(url: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, live rows) of every data table."""
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute(
            "select table_name from information_schema.columns where table_schema = 'ragmart' "
            "and column_name = 'published_in'").fetchall()]
        return {t: conn.execute(f"select count(*), count(*) filter (where removed_in is null) "
                                f"from ragmart.{t}").fetchone() for t in tables}


SERVED = ("fct_chunk_embeddings_v1", "fct_chunk_history_v1", "dim_documents",
          "dim_document_access")


def test_cli_publishes_incrementally_and_rolls_back(project: Project, postgres_url: str) -> None:
    """Through the CLI: the first publish copies everything, a publish after one more CDC batch
    writes exactly the rows the build added or changed and marks exactly the ones it replaced,
    and rollback serves the first publication again without writing a row."""
    from cdc_files import debezium_jsonl, document, paragraph

    project.extra_env["RAGMART_SERVING_URL"] = postgres_url
    first = json.loads(project.ragmart("publish", "v1").stdout)["postgres"]
    assert not first["incremental"] and first["rows_removed"] == 0
    before = {t: table_rows(project.db_path, t) for t in SERVED}
    v1_rows = {t: duckdb_rows(project.db_path, t) for t in SERVED}
    assert first["rows_written"] == sum(len(rows) for rows in before.values())

    # one more CDC batch: a new document and an edit of one section of another
    edited = ("ops-social-media", "Social Media Policy (edited)")
    project.land("debezium/0200_small_edit.jsonl", debezium_jsonl([
        {"op": "c", "seq": 30_000, "document_id": "pg-new-document", "title": "New document",
         "content": document("New document", {"Body": [paragraph("pg", i) for i in range(3)]})},
        {"op": "u", "seq": 30_001, "document_id": edited[0], "title": edited[1],
         "content": document(edited[1], {"Body": [paragraph("edit", i) for i in range(4)]})},
    ]))
    project.build()
    after = {t: table_rows(project.db_path, t) for t in SERVED}
    written = {t: len(after[t] - before[t]) for t in SERVED}
    removed = {t: len(before[t] - after[t]) for t in SERVED}
    assert 0 < sum(written.values()) < sum(len(rows) for rows in after.values()) / 10

    second = json.loads(project.ragmart("publish", "v1").stdout)["postgres"]
    assert second["incremental"]
    assert {t: c["written"] for t, c in second["tables"].items()} == written
    assert {t: c["removed"] for t, c in second["tables"].items()} == removed
    pubs = publications(postgres_url)
    assert [(p["publication_id"], p["incremental"], p["rows_written"], p["rows_removed"])
            for p in pubs] == [
        (first["publication_id"], False, first["rows_written"], 0),
        (second["publication_id"], True, sum(written.values()), sum(removed.values()))]
    assert_same_rows(project, postgres_url)

    versions = json.loads(project.ragmart("versions", "--json").stdout)
    [v1] = versions
    assert v1["postgres"]["serving"] and v1["postgres"]["serving_publication_id"] == \
        second["publication_id"]
    assert [p["publication_id"] for p in v1["postgres"]["publications"]] == [
        second["publication_id"], first["publication_id"]]

    counts = pg_counts(postgres_url)
    out = project.ragmart("rollback").stdout
    assert f"#{first['publication_id']}" in out and "no data written" in out
    # the data tables are untouched; serving reads the first publication's rows again
    assert {t: n for t, (n, _live) in pg_counts(postgres_url).items()} == {
        t: n for t, (n, _live) in counts.items()}
    for table in SERVED:
        names = columns_of(project.db_path, table)
        assert served_rows(postgres_url, table, names) == v1_rows[table], table
    last = publications(postgres_url)[-1]
    assert (last["action"], last["restores"], last["rows_written"]) == (
        "rollback", first["publication_id"], 0)
    text = project.ragmart("versions").stdout
    assert f"* #{first['publication_id']} publish v1" in text

    # the gate compares a candidate with what PostgreSQL serves
    with psycopg.connect(postgres_url) as conn:
        conn.execute("update ragmart.publications set report = jsonb_set(report, '{metrics}', "
                     "(select jsonb_object_agg(key, 1.0) from jsonb_each(report -> 'metrics')))"
                     " where coalesce(restores, publication_id) = %s",  # its rollback row too
                     (first["publication_id"],))
    refused = project.ragmart("publish", "v1", check=False)
    assert refused.returncode == Exit.GATE_REFUSED and "recall@5" in refused.stderr
    assert publications(postgres_url)[-1]["action"] == "rollback"


def test_unreachable_target_switches_nothing_and_masks_password(project: Project) -> None:
    project.extra_env["RAGMART_SERVING_URL"] = \
        "postgresql://ragmart:s3cret-pw@127.0.0.1:1/ragmart?password=s3cret-pw"
    failed = project.ragmart("publish", "v1", check=False)
    assert failed.returncode != 0
    assert "s3cret-pw" not in failed.stdout + failed.stderr
    assert "postgresql://ragmart:***@127.0.0.1:1/ragmart" in failed.stderr
    published = project.workdir / "published"
    assert not (published / "serving.json").exists()
    assert list(published.glob("v*.duckdb")) == []


def _edited_copy(built: Project, tmp_path: Path) -> Path:
    """A copy of the build database whose v1 serving set lost a third of its chunks and had
    the text of another third changed: a publish of it writes and removes many rows."""
    path = tmp_path / "edited.duckdb"
    shutil.copy(built.db_path, path)
    conn = connect(path)
    try:
        conn.execute("delete from fct_chunk_embeddings_v1 where hash(chunk_id) % 3 = 0")
        conn.execute("update fct_chunk_embeddings_v1 set chunk_text = chunk_text || ' (edited)' "
                     "where hash(chunk_id) % 3 = 1")
    finally:
        conn.close()
    return path


def _fingerprint(db: Path) -> tuple[int, str]:
    """(chunks, md5 of every chunk id and text in chunk id order) of a DuckDB serving set."""
    import hashlib

    conn = connect(db, read_only=True)
    try:
        rows = conn.execute("select chunk_id, chunk_text from fct_chunk_embeddings_v1").fetchall()
    finally:
        conn.close()
    joined = ",".join(f"{c}|{t}" for c, t in sorted(rows, key=lambda r: r[0].encode()))
    return len(rows), hashlib.md5(joined.encode()).hexdigest()


READ_SERVING = """
select s.publication_id, count(*), md5(string_agg(t.chunk_id || '|' || t.chunk_text, ','
       order by t.chunk_id collate "C"))
from ragmart.serving as s
join ragmart.fct_chunk_embeddings_v1 as t
  on t.published_in <= s.publication_id
 and (t.removed_in is null or t.removed_in > s.publication_id)
group by s.publication_id
"""


def test_readers_never_see_a_mix_during_publish_and_rollback(
        built: Project, tmp_path: Path, postgres_url: str) -> None:
    """Readers query the serving publication (the pointer and its rows in one statement) in a
    loop while publishes and rollbacks switch it: no error, and every answer is exactly one
    publication's serving set."""
    import threading

    from ragmart.serving.postgres.publish import publish_version
    from ragmart.serving.postgres.rollback import rollback_version

    edited = _edited_copy(built, tmp_path)
    original, changed = _fingerprint(built.db_path), _fingerprint(edited)
    first = publish_version(built.db_path, "v1", postgres_url).publication_id
    expected = {first: original}
    seen: list[tuple] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                while not done.is_set():
                    pid, count, digest = conn.execute(READ_SERVING).fetchone()
                    seen.append((pid, (count, digest)))
        except BaseException as exc:  # any error fails the test
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _round in range(2):  # edited, back to the original, the original published again
            result = publish_version(edited, "v1", postgres_url)
            expected[result.publication_id] = changed
            assert result.incremental and result.rows_written > 0 and result.rows_removed > 0
            back = rollback_version(postgres_url)
            assert expected[back.restores] == original
            result = publish_version(built.db_path, "v1", postgres_url)
            expected[result.publication_id] = original
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len({pid for pid, _ in seen}) >= 2, "the readers must have seen switches"
    wrong = [(pid, answer) for pid, answer in seen if expected.get(pid) != answer]
    assert wrong == []


def test_pruning_keeps_the_last_three_publications(built: Project, tmp_path: Path,
                                                   postgres_url: str) -> None:
    """Five publishes alternating two serving sets: the rows only the first two held are
    deleted, those two can no longer be rolled back to, and the three kept still can."""
    from ragmart.serving.postgres.publish import publish_version
    from ragmart.serving.postgres.rollback import rollback_version
    from ragmart.serving.postgres.settings import PostgresServingError

    edited = _edited_copy(built, tmp_path)
    ids = [publish_version(source, "v1", postgres_url).publication_id
           for source in (built.db_path, edited, built.db_path, edited, built.db_path)]
    with psycopg.connect(postgres_url) as conn:
        pruned = [pid for (pid,) in conn.execute(
            "select publication_id from ragmart.publications where pruned_at is not null "
            "order by 1")]
        # every row left belongs to a kept publication
        orphans = conn.execute(
            "select count(*) from ragmart.fct_chunk_embeddings_v1 where not exists (select "
            "from unnest(%s::bigint[]) as k(id) where published_in <= k.id and (removed_in is "
            "null or removed_in > k.id))", (ids[2:],)).fetchone()[0]
        dead = conn.execute("select count(*) from ragmart.fct_chunk_embeddings_v1 "
                            "where removed_in <= %s", (ids[2],)).fetchone()[0]
    assert pruned == ids[:2] and orphans == 0 and dead == 0
    assert [rollback_version(postgres_url).restores for _ in range(2)] == [ids[3], ids[2]]
    assert served_rows(postgres_url, "fct_chunk_embeddings_v1", ["chunk_id", "chunk_text"]) \
        == {c: (c, t) for c, t in _texts(built.db_path).items()}
    with pytest.raises(PostgresServingError, match="no publication before"):
        rollback_version(postgres_url)


def _texts(db: Path) -> dict[str, str]:
    conn = connect(db, read_only=True)
    try:
        return dict(conn.execute("select chunk_id, chunk_text from fct_chunk_embeddings_v1"
                                 ).fetchall())
    finally:
        conn.close()


TRICKY_TEXTS = ["plain", "", None, 'quote " and \'single\'', "comma, semicolon; tab\there",
                "new\nline\r\nCRLF", "back\\slash \\N", "ünïcødé ✓ 𝄞", "NULL", "{braces}"]
TRICKY_GROUPS = [None, [], [None], ['a"b', "c\\d", "x,y", "{z}", " sp ", "NULL", ""], ["é"]]


def test_values_survive_the_copy_byte_for_byte(postgres_url: str) -> None:
    """Package level, every awkward value: quotes, separators, newlines, backslashes, '' and
    NULL told apart, arrays with NULL and quoted elements, float32 extremes, microseconds."""
    import duckdb

    from ragmart.serving.postgres.publish import publish_version

    conn = duckdb.connect()
    conn.execute("""create table fct_chunk_embeddings_v9 (chunk_id varchar, document_id varchar,
        document_version bigint, chunk_text varchar, allowed_groups varchar[],
        is_split_paragraph boolean, created_at timestamp, embedding_model varchar,
        chunker_version varchar, embedding float[3])""")
    rows = []
    for i, text in enumerate(TRICKY_TEXTS):
        groups = TRICKY_GROUPS[i % len(TRICKY_GROUPS)]
        vector = [[1e-38, -0.0, 3.4028235e38], [0.1, -0.2, 1 / 3], [1.0, 2.0, 3.0]][i % 3]
        rows.append((f"doc-{i}#{i}", f"doc-{i}", i, text, groups, i % 2 == 0,
                     f"2026-11-0{1 + i % 9} 10:11:12.{i:06d}", "m", "c", vector))
    conn.executemany("insert into fct_chunk_embeddings_v9 values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     rows)
    first = publish_version(conn, "v9", postgres_url)
    assert first.rows_written == len(rows) and not first.incremental
    names = [d[0] for d in conn.execute("select * from fct_chunk_embeddings_v9").description]
    expected = {r[0]: tuple(float32(v) if n == "embedding" else v
                            for n, v in zip(names, r, strict=True))
                for r in conn.execute("select * from fct_chunk_embeddings_v9").fetchall()}
    assert served_rows(postgres_url, "fct_chunk_embeddings_v9", names) == expected
    # one text changed, one row gone, one added: exactly those rows are written and removed
    conn.execute("update fct_chunk_embeddings_v9 set chunk_text = 'changed' "
                 "where chunk_id = 'doc-1#1'")
    conn.execute("delete from fct_chunk_embeddings_v9 where chunk_id = 'doc-2#2'")
    conn.execute("insert into fct_chunk_embeddings_v9 select 'new#0', 'new', 1, 'new', [], "
                 "false, null, 'm', 'c', [0, 0, 1]::float[3]")
    second = publish_version(conn, "v9", postgres_url)
    assert (second.incremental, second.rows_written, second.rows_removed) == (True, 2, 2)
    expected = {r[0]: tuple(float32(v) if n == "embedding" else v
                            for n, v in zip(names, r, strict=True))
                for r in conn.execute("select * from fct_chunk_embeddings_v9").fetchall()}
    assert served_rows(postgres_url, "fct_chunk_embeddings_v9", names) == expected
