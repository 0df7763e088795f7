"""Issue 15's named gaps of PostgreSQL serving, through the public interfaces.

- The SQL function ``ragmart.retrieve`` returns ``source`` as every other interface does (the
  rule of ragmart.retrieval.citations, applied once at publish), live and as of a moment.
- ``ragmart versions`` with the PostgreSQL server unreachable shows the DuckDB side, one line
  for PostgreSQL (URL masked), and exits DEGRADED.
- A publish leaves the row-level security policies and the function in place when they have
  not changed (no ACCESS EXCLUSIVE lock on a reader's table), and mapped roles keep reading
  through it.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from dbt_harness import Project
from sample_deployment import sample_deployment  # noqa: F401 - the fixture `built`

from ragmart.embedding.providers.hashing import HashingProvider
from ragmart.exit_codes import Exit
from ragmart.retrieval.api import ALL_GROUPS, Retriever
from ragmart.serving.postgres.publish import publish_version

psycopg = pytest.importorskip("psycopg")

QUESTIONS = ("How many days of annual leave do I get?", "travel expenses and per diem",
             "security incident reporting")


def _vector(question: str) -> str:
    values = HashingProvider().embed([question])[0]
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def _moments(project: Project) -> list:
    """Moments inside the sample's history where some document had an earlier version."""
    return [m for (m,) in project.query(
        "select distinct document_valid_to from fct_chunk_history_v1 "
        "where document_valid_to is not null order by 1")]


def test_the_sql_function_returns_source_as_every_interface(built: Project, postgres_url: str,
                                                            monkeypatch) -> None:
    """`ragmart publish` (the CLI) to PostgreSQL, then ragmart.retrieve(...) in SQL: each row's
    `source` is the one the Python search on PostgreSQL and the DuckDB table macro give for
    the same chunk, live and as of a past moment; most sample documents have one."""
    built.extra_env["RAGMART_SERVING_URL"] = postgres_url
    try:
        built.ragmart("publish", "v1")
    finally:
        built.extra_env.pop("RAGMART_SERVING_URL")
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    provider = HashingProvider()
    retriever = Retriever(provider=provider)
    moments = _moments(built)
    assert moments
    seen = []
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for question in QUESTIONS:
                for as_of in (None, moments[0]):
                    rows = conn.execute(
                        "select chunk_id, document_version, source from ragmart.retrieve("
                        "%s::vector, 8, all_groups => true, as_of => %s::timestamp)",
                        (_vector(question), as_of)).fetchall()
                    python = retriever.retrieve(question, k=8, groups=ALL_GROUPS,
                                                as_of=as_of, mode="vector")
                    assert [(c.chunk_id, c.document_version, c.source) for c in python] == rows
                    macro = built.query(
                        f"select chunk_id, document_version, source from ragmart_retrieve_v1("
                        f"'{_vector(question)}'::float[384], 8, all_groups := true, "
                        "as_of := $as_of::timestamp)", {"as_of": as_of})
                    assert macro == rows, (question, as_of)
                    seen += [source for _, _, source in rows]
    finally:
        retriever.close()
    assert sum(source is not None for source in seen) > len(seen) / 2
    assert any(source is None for source in seen) or len(set(seen)) > 1


def test_versions_shows_duckdb_and_one_line_when_postgres_is_unreachable(
        built: Project) -> None:
    url = "postgresql://ragmart:s3cret-pw@127.0.0.1:1/ragmart?password=s3cret-pw"
    built.extra_env["RAGMART_SERVING_URL"] = url
    try:
        text = built.ragmart("versions", check=False)
        as_json = built.ragmart("versions", "--json", check=False)
    finally:
        built.extra_env.pop("RAGMART_SERVING_URL")
    assert text.returncode == Exit.DEGRADED == as_json.returncode, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0][2:].startswith("v1: ") and " chunks / " in lines[0]  # the DuckDB side
    [postgres] = [line for line in lines if line.startswith("postgres ")]
    assert postgres.startswith("postgres postgresql://ragmart:***@127.0.0.1:1/ragmart"
                               "?password=***: unreachable")
    assert "s3cret-pw" not in text.stdout + text.stderr + as_json.stdout + as_json.stderr
    [row] = json.loads(as_json.stdout)
    assert row["version"] == "v1" and row["chunks"] > 0
    assert "cannot connect" in row["postgres"]["unreachable"]


POLICIES = ("select c.relname, p.oid, p.xmin::text from pg_policy as p "
            "join pg_class as c on c.oid = p.polrelid order by 1")
FUNCTION = ("select p.oid, p.xmin::text from pg_proc as p join pg_namespace as n "
            "on n.oid = p.pronamespace where n.nspname = 'ragmart' and p.proname = 'retrieve'")


def _edited(built: Project, tmp_path: Path) -> Path:
    """A copy of the build database with some chunk texts changed (an incremental publish
    writes and removes rows)."""
    import shutil

    from ragmart.duck import connect

    copy = tmp_path / "edited.duckdb"
    shutil.copyfile(built.db_path, copy)
    conn = connect(copy)
    try:
        conn.execute("update fct_chunk_embeddings_v1 set chunk_text = chunk_text || ' (edited)'"
                     " where hash(chunk_id) % 5 = 0")
    finally:
        conn.close()
    return copy


def test_a_publish_leaves_the_policies_in_place_and_readers_keep_reading(
        built: Project, postgres_url: str, tmp_path: Path) -> None:
    """After the first publish creates them, later publishes (changed rows, or none) neither
    re-create the policies nor the function (the same catalog rows), take no lock that a
    reader waits for, and a mapped role reads its chunks through them without an error."""
    publish_version(built.db_path, "v1", postgres_url)
    role = f"reader_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        owner.execute(f'create role "{role}" login')
        built.extra_env["RAGMART_SERVING_URL"] = postgres_url
        try:
            built.ragmart("postgres", "grant", role, "--groups", "all-staff")
        finally:
            built.extra_env.pop("RAGMART_SERVING_URL")
        policies, function = owner.execute(POLICIES).fetchall(), owner.execute(FUNCTION
                                                                               ).fetchall()
        assert len(policies) >= 5 and len(function) == 1
    parts = urlsplit(postgres_url)  # the test server trusts local users
    reader_url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    with psycopg.connect(reader_url, autocommit=True) as conn:
        expected = conn.execute("select count(*) from ragmart.fct_chunk_embeddings_v1"
                                ).fetchone()[0]
    assert expected > 0
    counts, errors, done = [], [], threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(reader_url, autocommit=True) as conn:
                conn.execute("set lock_timeout = '2s'")  # a reader held by a lock fails
                while not done.is_set():
                    counts.append(conn.execute(
                        "select count(*) from ragmart.retrieve(%s::vector, 3, "
                        "all_groups => true)", (_vector(QUESTIONS[0]),)).fetchone()[0])
        except BaseException as exc:  # any error fails the test
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        edited = _edited(built, tmp_path)
        for source in (edited, built.db_path, built.db_path):
            publication = publish_version(source, "v1", postgres_url)
    finally:
        done.set()
        thread.join()
    assert errors == [] and counts and set(counts) == {3}
    assert publication.incremental
    with psycopg.connect(postgres_url, autocommit=True) as owner:
        assert owner.execute(POLICIES).fetchall() == policies
        assert owner.execute(FUNCTION).fetchall() == function
        owner.execute(f'drop owned by "{role}"')
        owner.execute(f'drop role "{role}"')


def test_the_plan_skips_the_count_when_the_sample_estimate_is_clear(
        built: Project, postgres_url: str, monkeypatch) -> None:
    """With the exact threshold lowered to the sample's scale, a search admitting every chunk
    goes through the index and one admitting a few is scored exactly, both without counting
    the eligible rows (the page sample decided), and both answer as the exact scan does,
    through the Python search and the SQL function; between the margins the count decides."""
    from ragmart.retrieval import postgres as postgres_retrieval
    from ragmart.retrieval import postgres_sql
    from ragmart.serving.postgres import access

    publish_version(built.db_path, "v1", postgres_url)
    counted = []
    count_sql = postgres_retrieval.eligible_count_sql
    monkeypatch.setattr(postgres_retrieval, "eligible_count_sql",
                        lambda *a, **kw: counted.append(1) or count_sql(*a, **kw))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        chunks = conn.execute("select count(*) from ragmart.fct_chunk_embeddings_v1"
                              ).fetchone()[0]
        rare, few = conn.execute(
            "select document_type, count(*) from ragmart.fct_chunk_embeddings_v1 "
            "group by 1 order by 2, 1 limit 1").fetchone()
        assert few * 8 < chunks
        monkeypatch.setattr(postgres_sql, "EXACT_MAX_ELIGIBLE", few * 2)  # few <= max / 2
        with conn.transaction():
            access.install_access(conn, "v1")  # the function's plan at this threshold
        for question in QUESTIONS:
            query = HashingProvider().embed([question])[0]
            for doc_types, strategy in ((None, "hnsw"), ([rare], "exact")):
                got = postgres_retrieval.search_contract(
                    conn, query, k=5, doc_types=doc_types, groups=ALL_GROUPS)
                exact = postgres_retrieval.search_contract(
                    conn, query, k=5, doc_types=doc_types, groups=ALL_GROUPS, exact=True)
                assert got.strategy == strategy
                assert [c.chunk_id for c in got] == [c.chunk_id for c in exact]
                through = conn.execute(
                    "select chunk_id from ragmart.retrieve(%s::vector, 5, all_groups => true, "
                    "document_types => %s::text[])", (_vector(question), doc_types)).fetchall()
                assert [r[0] for r in through] == [c.chunk_id for c in exact]
        assert counted == []
        # an estimate between the margins: the eligible rows are counted
        monkeypatch.setattr(postgres_sql, "EXACT_MAX_ELIGIBLE", few)
        got = postgres_retrieval.search_contract(conn, HashingProvider().embed(["x"])[0], k=5,
                                                 doc_types=[rare], groups=ALL_GROUPS)
        assert counted == [1] and got.strategy == "exact"


def test_the_fingerprint_logs_follow_the_rows(built: Project, postgres_url: str,
                                               tmp_path: Path) -> None:
    """What an incremental publish compares with (ragmart.live_fingerprints) and what pruning
    deletes by (ragmart.removals) stay exactly the rows' state through full and incremental
    publishes, pruning and a purge: the live rows' fingerprints, and one logged removal per
    row marked removed."""
    from ragmart.serving.postgres.purge import purge_document_rows

    edited = _edited(built, tmp_path)

    def check() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            tables = [t for (t,) in conn.execute(
                "select distinct table_name from ragmart.live_fingerprints order by 1")]
            assert tables == sorted(["dim_document_access", "dim_documents",
                                     "fct_chunk_embeddings_v1", "fct_chunk_history_v1"])
            for table in tables:
                live = conn.execute(
                    f'select row_fingerprint from ragmart."{table}" where removed_in is null '
                    "order by 1").fetchall()
                kept = conn.execute(
                    "select row_fingerprint from ragmart.live_fingerprints where table_name = %s"
                    " order by 1", (table,)).fetchall()
                assert live == kept, table
                removed = conn.execute(
                    f'select removed_in, row_fingerprint from ragmart."{table}" '
                    "where removed_in is not null order by 1, 2").fetchall()
                logged = conn.execute(
                    "select r.publication_id, r.row_fingerprint from ragmart.removals as r "
                    f'where r.table_name = %s and exists (select from ragmart."{table}" as t '
                    "where t.row_fingerprint = r.row_fingerprint) order by 1, 2",
                    (table,)).fetchall()
                assert removed == logged, table

    for source in (built.db_path, edited, built.db_path, edited, built.db_path):
        publication = publish_version(source, "v1", postgres_url)
        check()
    assert publication.pruned_publications  # pruning ran
    [(document,)] = built.query("select document_id from dim_documents order by 1 limit 1")
    assert purge_document_rows(postgres_url, document)
    check()
    again = publish_version(built.db_path, "v1", postgres_url)
    assert again.incremental
    check()
