"""Upkeep of the PostgreSQL serving target: BM25 statistics after a purge and pruning, and the
HNSW settings searches run with.

After `ragmart purge`, lexical scores on PostgreSQL equal those of a fresh full publish of the
purged build to a second database (every kept publication: a rollback serves them too); a
version that pruning retires leaves no statistics table behind; the index is built with
schema.HNSW_M / HNSW_EF_CONSTRUCTION and a reader's index scan runs under postgres_sql's
EF_SEARCH and ITERATIVE_SCAN (the SQL function declares them too).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dbt_harness import Project
from test_hybrid import TWIN_WORD, build_hybrid_deployment
from test_postgres_retrieval import _database, _drop

psycopg = pytest.importorskip("psycopg")

URL = "RAGMART_SERVING_URL"
# a word of the twins (two documents), one of every sample document, a mix
QUESTIONS = (f"{TWIN_WORD} register", "refund policy", "how many days of leave")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_hybrid_deployment(tmp_path_factory.mktemp("pg-terms"))


def _lexical(project: Project, question: str) -> list[tuple[str, str, float]]:
    """(document_id, chunk_id, BM25 score) of `ragmart retrieve --mode lexical --json`."""
    proc = project.ragmart("retrieve", question, "--mode", "lexical", "--all-groups", "-k",
                           "20", "--json", check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return [(r["document_id"], r["chunk_id"], r["lexical_score"])
            for r in json.loads(proc.stdout)["results"]]


def _same_scores(got: list[tuple], want: list[tuple]) -> bool:
    return [r[:2] for r in got] == [r[:2] for r in want] and \
        [r[2] for r in got] == pytest.approx([r[2] for r in want], rel=1e-8)


def test_purge_leaves_the_scores_of_a_fresh_publish_without_the_document(
        built: Project, tmp_path: Path, postgres_server: str) -> None:
    shutil.copytree(built.workdir, tmp_path / "d")
    first, fresh = _database(postgres_server), _database(postgres_server)
    project = Project(tmp_path / "d", extra_env={URL: first})
    try:
        project.ragmart("publish", "v1")
        project.ragmart("publish", "v1")  # two kept publications of the same content
        before = {q: _lexical(project, q) for q in QUESTIONS}
        assert any(before.values())
        project.ragmart("purge", "--document-id", "hyb-twin-a")
        purged = {q: _lexical(project, q) for q in QUESTIONS}
        project.ragmart("rollback")  # the earlier publication: purged the same way
        rolled_back = {q: _lexical(project, q) for q in QUESTIONS}
        project.extra_env[URL] = fresh
        project.ragmart("publish", "v1")
        want = {q: _lexical(project, q) for q in QUESTIONS}
        for q in QUESTIONS:
            assert want[q], q
            assert "hyb-twin-a" not in {d for d, _, _ in want[q]}
            assert _same_scores(purged[q], want[q]), (q, purged[q], want[q])
            assert _same_scores(rolled_back[q], want[q]), q
        # the twins' word was in two documents, now one: its score rose
        twin = QUESTIONS[0]
        score = {c: s for _, c, s in before[twin]}
        assert purged[twin][0][2] > score[purged[twin][0][1]]
    finally:
        _drop(postgres_server, first)
        _drop(postgres_server, fresh)


def _with_v2(built: Project, target: Path) -> Path:
    """A copy of the build database also holding v2: v1's per-version tables copied, with
    their own full-text index, as a build of a second index version leaves them."""
    from ragmart.duck import connect, load_extension
    from ragmart.relations import Relations
    from ragmart.serving import lexical_index

    shutil.copy(built.db_path, target)
    conn = connect(target)
    try:
        for old, new in ((Relations("v1").serving, Relations("v2").serving),
                         (Relations("v1").history, Relations("v2").history)):
            conn.execute(f"create table {new} as select * from {old}")
        load_extension(conn, "fts")
        conn.execute(lexical_index.create_index_sql(Relations("v2").serving))
        conn.execute("checkpoint")
    finally:
        conn.close()
    return target


def test_publishing_past_the_retention_drops_a_retired_versions_term_tables(
        built: Project, tmp_path: Path, postgres_url: str) -> None:
    """Publish v1, then v2 as many times as publications are kept: v1 serves no kept
    publication any more, and none of its tables is left, its BM25 statistics included."""
    from ragmart.serving.postgres.publish import KEEP_PUBLICATIONS, publish_version

    source = _with_v2(built, tmp_path / "two.duckdb")
    publish_version(source, "v1", postgres_url)

    def tables(version: str) -> list[str]:
        with psycopg.connect(postgres_url) as conn:
            return [t for (t,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = "
                "'ragmart' and table_name like %s order by 1", (f"%\\_{version}",))]

    assert any(t.startswith("lexical_") for t in tables("v1"))
    for _ in range(KEEP_PUBLICATIONS):
        publish_version(source, "v2", postgres_url)
    assert tables("v1") == []
    assert {t.split("_")[0] for t in tables("v2")} >= {"fct", "lexical"}


class _Recording:
    """A reader's connection that records the session's HNSW settings whenever the index's
    candidates are asked for (the statement ordered by distance alone)."""

    def __init__(self, conn, seen: list) -> None:
        self.conn, self.seen = conn, seen

    def execute(self, query, params=None, **kw):
        if "order by eligible.distance\n" in str(query):
            self.seen.append(self.conn.execute(
                "select current_setting('hnsw.ef_search'), "
                "current_setting('hnsw.iterative_scan')").fetchone())
        return self.conn.execute(query, params, **kw)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_the_index_and_a_readers_index_scan_use_the_chosen_settings(
        built: Project, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragmart.embedding.providers import HashingProvider
    from ragmart.retrieval import postgres, postgres_sql
    from ragmart.retrieval.postgres import PostgresReader
    from ragmart.serving.postgres.publish import publish_version
    from ragmart.serving.postgres.schema import HNSW_EF_CONSTRUCTION, HNSW_M

    publish_version(built.db_path, "v1", postgres_url)
    with psycopg.connect(postgres_url) as conn:
        (options,) = conn.execute("select reloptions from pg_class where relname = "
                                  "'fct_chunk_embeddings_v1_embedding_hnsw'").fetchone()
        (config,) = conn.execute(
            "select proconfig from pg_proc as p join pg_namespace as n on n.oid = "
            "p.pronamespace where n.nspname = 'ragmart' and p.proname = 'retrieve'").fetchone()
    assert sorted(options) == sorted([f"m={HNSW_M}", f"ef_construction={HNSW_EF_CONSTRUCTION}"])
    assert {f"hnsw.ef_search={postgres_sql.EF_SEARCH}",
            f"hnsw.iterative_scan={postgres_sql.ITERATIVE_SCAN}"} <= set(config)
    # the sample is small enough for the exact plan: the index path, forced
    monkeypatch.setattr(postgres, "_few_eligible", lambda *args: False)
    seen: list = []
    reader = PostgresReader(postgres_url)
    reader.conn = _Recording(reader.conn, seen)
    try:
        vector = HashingProvider().embed(["refund policy"])[0]
        result = reader.search(vector, mode="vector", k=5, groups=["staff"])
    finally:
        reader.close()
    assert result.strategy.startswith("hnsw") and result.chunks
    assert seen and set(seen) == {(str(postgres_sql.EF_SEARCH), postgres_sql.ITERATIVE_SCAN)}
    # a larger publication searches wider: one ef_search per CHUNKS_PER_EF_SEARCH chunks, at
    # most EF_SEARCH_MAX (its chunks as the publications row says, here rewritten)
    step = postgres_sql.CHUNKS_PER_EF_SEARCH
    for chunks, ef_search in [(700 * step, 700), (5_000 * step, postgres_sql.EF_SEARCH_MAX),
                              (10 * step, postgres_sql.EF_SEARCH)]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("update ragmart.publications set chunks = %s where publication_id = "
                         "(select publication_id from ragmart.serving)", (chunks,))
        seen.clear()
        reader = PostgresReader(postgres_url)
        reader.conn = _Recording(reader.conn, seen)
        try:
            assert reader.search(vector, mode="vector", k=5, groups=["staff"]).chunks
            wide = reader.search(vector, mode="vector", k=995, groups=["staff"])
        finally:
            reader.close()
        assert wide.chunks
        widest = min(postgres_sql.EF_SEARCH_MAX, max(ef_search, 995 + postgres_sql.TIE_MARGIN))
        assert [ef for ef, _ in seen] == [str(ef_search), str(widest)]
