"""The BM25 statistics on PostgreSQL after a purge and after pruning, through the CLI.

After `ragmart purge`, lexical scores on PostgreSQL equal those of a fresh full publish of the
purged build to a second database (every kept publication: a rollback serves them too); a
version that pruning retires leaves no statistics table behind.
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
