"""Lexical and hybrid search served from PostgreSQL, through the public interface, with the
answers of DuckDB serving.

One deployment per module (the sample corpus plus the hybrid tests' documents, with words no
other document has), built by dbt and published by `ragmart publish v1` with
RAGMART_SERVING_URL set; a test that changes it works on a copy and a database of its own.
What is proved: the same answers (ids, order, distances, BM25 scores) from both engines for
every judged question in all three modes; the default mode is hybrid on PostgreSQL too; a chunk
the caller may not see, or that the contract or as-of excludes, never appears whatever the
question's words; an incremental publish carries the new chunks' terms and drops the deleted
ones'; purge removes a document's terms from every publication.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdc_files import dms_csv, ts
from dbt_harness import Project
from test_hybrid import (
    LATE_WORD,
    SECRET_WORD,
    TWIN_WORD,
    VICTIM_WORD,
    _doc,
    build_hybrid_deployment,
)
from test_postgres_retrieval import _database, _drop

import ragmart
from ragmart.duck import connect
from ragmart.quality.judged import JUDGED_QUERIES, load_judged_queries
from ragmart.retrieval.fusion import RRF_DEPTH
from ragmart.retrieval.results import RetrievalError

psycopg = pytest.importorskip("psycopg")

MODES = ("vector", "lexical", "hybrid")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_hybrid_deployment(tmp_path_factory.mktemp("pg-hybrid"))


@pytest.fixture(scope="module")
def published(built: Project, postgres_server: str) -> Iterator[tuple[Project, str]]:
    """The deployment published to a database of this module's own: (project, its URL)."""
    url = _database(postgres_server)
    built.extra_env["RAGMART_SERVING_URL"] = url
    try:
        built.ragmart("publish", "v1")
        yield built, url
    finally:
        del built.extra_env["RAGMART_SERVING_URL"]
        _drop(postgres_server, url)


@pytest.fixture
def deployment(built: Project, tmp_path: Path, postgres_url: str) -> Project:
    """A copy of the deployment, published to a fresh database."""
    shutil.copytree(built.workdir, tmp_path / "d")
    project = Project(tmp_path / "d", extra_env={"RAGMART_SERVING_URL": postgres_url})
    project.ragmart("publish", "v1")
    return project


def _snapshot(project: Project) -> Path:
    """The DuckDB snapshot serving (what the last publish sent to PostgreSQL)."""
    return max((project.workdir / "published").glob("v1-*.duckdb"),
               key=lambda p: p.stat().st_mtime)


def _answer(result) -> dict:
    """A result without what differs by engine (as test_postgres_retrieval compares): the
    strategy's vector part, the eligible count, the distances' last float32 bits (compared
    to 1e-6 by `_same`)."""
    data = result.to_dict()
    data["strategy"] = data["strategy"] if data["strategy"] in ("bm25", "none") else None
    data.pop("eligible_chunks")
    distances = [row.pop("distance") for row in data["results"]]
    return {**data, "distances": [round(d, 6) for d in distances]}


def _same(got, want) -> bool:
    """_answer(got) == _answer(want), the distances within 2e-6."""
    a, b = _answer(got), _answer(want)
    return a.pop("distances") == pytest.approx(b.pop("distances"), abs=2e-6) and a == b


@pytest.mark.parametrize("every", [
    False, pytest.param(True, marks=pytest.mark.slow, id="every-judged-question")])
def test_same_answers_and_scores_as_duckdb_for_the_judged_questions_in_every_mode(
        published: tuple[Project, str], monkeypatch: pytest.MonkeyPatch, every: bool) -> None:
    """Every judged question (the first 15 in the fast run, the exact-term ones among them)."""
    project, url = published
    judged = load_judged_queries(ROOT / JUDGED_QUERIES)
    questions = [q.question for q in (judged if every else judged[:10] + judged[-5:])]
    questions += [f"what is {VICTIM_WORD}?", f"{TWIN_WORD} register", "xyzzyplugh"]
    monkeypatch.delenv("RAGMART_SERVING_URL", raising=False)
    duck = ragmart.Retriever(db_path=_snapshot(project))
    monkeypatch.setenv("RAGMART_SERVING_URL", url)
    pg = ragmart.Retriever()
    try:
        compared = 0
        for question in questions:
            for groups in (ragmart.ALL_GROUPS, ["staff"]):
                for mode in MODES:
                    want = duck.retrieve(question, mode=mode, groups=groups, k=10)
                    got = pg.retrieve(question, mode=mode, groups=groups, k=10)
                    assert _same(got, want), (question, groups, mode)
                    compared += bool(want.chunks)
                default = pg.retrieve(question, groups=groups, k=10)
                assert default.strategy.startswith("rrf("), question  # hybrid by default
                assert _same(default, duck.retrieve(question, mode="hybrid", groups=groups,
                                                    k=10))
        assert compared > 2 * 3 * len(questions) * 0.8  # mostly answers, not abstentions
        # the BM25 scores themselves, to the depth hybrid fuses, per engine's ranking
        for question in questions:
            assert _scores(pg, question) == _scores(duck, question), question
    finally:
        duck.close()
        pg.close()


def _scores(reader: ragmart.Retriever, question: str) -> list[tuple[str, float]]:
    """(chunk_id, BM25 score) of every chunk's lexical ranking for `question`, to RRF_DEPTH,
    through the engine's ranking (the scores a lexical result is ordered by)."""
    from ragmart.retrieval import fusion
    from ragmart.retrieval import postgres as pg_retrieval
    from ragmart.retrieval.request import parameters

    vector = [float(x) for x in reader.provider.embed([question])[0]]
    params = parameters(vector, k=RRF_DEPTH, contract=None, groups=ragmart.ALL_GROUPS,
                        doc_types=None, as_of=None, now=None)
    params["question"] = question
    if reader._postgres is not None:
        conn = reader._postgres.conn
        engine = pg_retrieval._PostgresModes(conn, pg_retrieval.serving(conn), vector, {})
    else:
        engine = fusion._DuckDBModes(reader.conn, reader.tables, vector, {})
    return engine.rank("live", params)


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_a_chunk_the_caller_may_not_see_never_appears_whatever_the_terms(
        published: tuple[Project, str], monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("RAGMART_SERVING_URL", published[1])
    question = f"{SECRET_WORD} register {SECRET_WORD} HX-201"
    for groups in (["staff"], ["hr", "finance"], [], None):
        result = ragmart.retrieve(question, mode=mode, groups=groups, k=20)
        assert "hyb-secret" not in {c.document_id for c in result}, groups
    seen = ragmart.retrieve(question, mode=mode, groups=["legal"])
    assert seen[0].document_id == "hyb-secret"
    typed = ragmart.retrieve(question, mode=mode, groups=["legal"], doc_types=["faq"])
    assert "hyb-secret" not in {c.document_id for c in typed}
    before = ragmart.retrieve(question, mode=mode, groups=["legal"], as_of=ts(150))
    assert "hyb-secret" not in {c.document_id for c in before}
    after = ragmart.retrieve(question, mode=mode, groups=["legal"], as_of=ts(400))
    assert after[0].document_id == "hyb-secret"


def _ask(project: Project, question: str, *args: str) -> dict:
    proc = project.ragmart("retrieve", question, "--json", *args, check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout)


def test_cli_modes_abstentions_and_ties_on_postgres(published: tuple[Project, str]) -> None:
    project, url = published
    project.extra_env["RAGMART_SERVING_URL"] = url
    lexical = _ask(project, f"what is {VICTIM_WORD}?", "--mode", "lexical", "--groups", "staff")
    assert lexical["strategy"] == "bm25" and not lexical["abstained"]
    assert [r["document_id"] for r in lexical["results"]] == ["hyb-victim"]
    hybrid = _ask(project, f"what is {VICTIM_WORD}?", "--groups", "staff")  # the default
    assert hybrid["strategy"].startswith("rrf(") and len(hybrid["results"]) == 3  # all staff
    assert hybrid["results"][0]["document_id"] == "hyb-victim"
    none = _ask(project, "xyzzyplugh wibblefrotz", "--mode", "lexical", "--all-groups")
    assert none["abstained"] and "no eligible chunk contains any term" in none["reason"]
    assert "wibblefrotz" in none["reason"]
    for mode in MODES:
        hidden = _ask(project, SECRET_WORD, "--mode", mode)  # no group: nothing visible
        assert hidden["abstained"] and hidden["clauses"], mode
        assert "visible to a caller without groups" in hidden["reason"]
    twins = _ask(project, f"{TWIN_WORD} register", "--mode", "lexical", "--groups", "staff",
                 "-k", "4")
    ids = [r["chunk_id"] for r in twins["results"] if r["document_id"].startswith("hyb-twin")]
    assert len(ids) >= 2 and ids == sorted(ids)  # the same score: chunk_id orders them


def _lexical_rows(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_an_incremental_publish_carries_only_the_changed_chunks_terms(
        deployment: Project, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    project = deployment
    (bags_before,) = _lexical_rows(postgres_url, "select count(*) from "
                                   "ragmart.lexical_chunks_v1 where removed_in is null")[0]
    project.land("dms/0300_change.csv", dms_csv([
        _doc("hyb-victim", 300, VICTIM_WORD, ["staff"], op="D"),
        _doc("hyb-late", 301, LATE_WORD, ["staff"]),
    ]))
    project.build()
    publication = json.loads(project.ragmart("publish", "v1").stdout)["postgres"]
    assert publication["incremental"]
    pid = publication["publication_id"]
    late = {r[0] for r in project.query(
        "select chunk_id from fct_chunk_history_v1 where document_id = 'hyb-late'")}
    written = {r[0] for r in _lexical_rows(
        postgres_url, "select chunk_id from ragmart.lexical_chunks_v1 where published_in = %s",
        pid)}
    assert late and written == late  # the history keeps the deleted document's chunks
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    for mode in ("lexical", "hybrid"):
        gone = ragmart.retrieve(VICTIM_WORD, mode=mode, groups=["staff"])
        assert "hyb-victim" not in {c.document_id for c in gone}, mode
        new = ragmart.retrieve(LATE_WORD, mode=mode, groups=["staff"])
        assert new[0].document_id == "hyb-late", mode
    assert ragmart.retrieve(VICTIM_WORD, mode="lexical", groups=["staff"]).abstained
    monkeypatch.delenv("RAGMART_SERVING_URL")
    duck = ragmart.retrieve(LATE_WORD, mode="lexical", groups=["staff"],
                            db_path=_snapshot(project))
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    pg = ragmart.retrieve(LATE_WORD, mode="lexical", groups=["staff"])
    assert _same(pg, duck)
    (bags_after,) = _lexical_rows(postgres_url, "select count(*) from "
                                  "ragmart.lexical_chunks_v1 where removed_in is null")[0]
    assert bags_after == bags_before + len(late)  # history: nothing removed
    # rollback: the previous publication's statistics serve again, no data written
    project.ragmart("rollback")
    assert ragmart.retrieve(VICTIM_WORD, mode="lexical", groups=["staff"])[0].document_id \
        == "hyb-victim"


def test_purge_removes_the_documents_terms_from_every_publication(
        deployment: Project, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    project = deployment
    like = SECRET_WORD[:9] + "%"
    term_sql = "select count(*) from ragmart.lexical_terms_v1 where term like %s"
    bag_sql = ("select count(*) from ragmart.lexical_chunks_v1 where document_id = %s "
               "or exists (select from unnest(terms) as t where t like %s)")
    assert _lexical_rows(postgres_url, term_sql, like) == [(1,)]
    assert _lexical_rows(postgres_url, bag_sql, "hyb-secret", like)[0][0] > 0
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    assert ragmart.retrieve(SECRET_WORD, mode="lexical", groups=["legal"])[0].document_id \
        == "hyb-secret"
    project.ragmart("purge", "--document-id", "hyb-secret")
    assert _lexical_rows(postgres_url, term_sql, like) == [(0,)]
    assert _lexical_rows(postgres_url, bag_sql, "hyb-secret", like) == [(0,)]
    assert ragmart.retrieve(SECRET_WORD, mode="lexical", groups=["legal"]).abstained
    hybrid = ragmart.retrieve(SECRET_WORD, mode="hybrid", groups=["legal"], k=50)
    assert "hyb-secret" not in {c.document_id for c in hybrid}
    # the other documents' terms stay: lexical search still finds them
    assert ragmart.retrieve(TWIN_WORD, mode="lexical", groups=["staff"])[0].document_id \
        .startswith("hyb-twin")


def test_a_publication_without_terms_searches_by_vector_and_refuses_lexical(
        built: Project, tmp_path: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ragmart.serving.postgres.publish import publish_version

    copy = tmp_path / "no-index.duckdb"
    shutil.copy(built.db_path, copy)
    conn = connect(copy)
    try:
        conn.execute("drop schema fts_main_fct_chunk_embeddings_v1 cascade")
        conn.execute("checkpoint")
    finally:
        conn.close()
    publish_version(copy, "v1", postgres_url)
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    default = ragmart.retrieve("refunds", groups=["finance"])
    assert default and not default.strategy.startswith("rrf(")
    with pytest.raises(RetrievalError, match="no BM25 statistics"):
        ragmart.retrieve("refunds", mode="hybrid", groups=["finance"])
    with ragmart.Retriever() as reader, pytest.raises(RetrievalError,
                                                      match="needs the question"):
        reader.search(reader.provider.embed(["refunds"])[0], mode="lexical", groups=["staff"])


@pytest.fixture(scope="module")
def tiny_lexical(tmp_path_factory: pytest.TempPathFactory, postgres_server: str
                 ) -> Iterator[tuple[Path, list[dict], str]]:
    """The contract tests' tiny database with a full-text index of its serving set, and its
    publication to PostgreSQL: (path, reference rows, URL)."""
    from test_retrieval_contracts import TABLES, build_tiny_database

    from ragmart.serving import lexical_index
    from ragmart.serving.postgres.publish import publish_version

    path = tmp_path_factory.mktemp("tiny-lexical") / "ragmart.duckdb"
    rows = build_tiny_database(path)
    conn = connect(path)
    try:
        lexical_index.rebuild(conn, TABLES.serving)
        conn.execute("checkpoint")
    finally:
        conn.close()
    url = _database(postgres_server)
    publish_version(path, "v1", url)
    try:
        yield path, rows, url
    finally:
        _drop(postgres_server, url)


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_every_clause_applies_to_lexical_and_hybrid_search_on_both_engines(
        tiny_lexical, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each contract clause, through ragmart.retrieve in modes lexical and hybrid: the chunks
    returned are exactly those the plain-Python reference of the contract tests admits (every
    tiny chunk's text holds the word "text", so BM25 ranks every eligible chunk)."""
    import yaml
    from test_retrieval_contracts import CALLER, CLAUSE_CASES, NOW, reference

    from ragmart.embedding.providers import HashingProvider
    from ragmart.retrieval.clauses import CLAUSES
    from ragmart.retrieval.contracts import load_contracts

    path, rows, url = tiny_lexical
    where: dict = {"db_path": path}
    if engine == "postgres":
        monkeypatch.setenv("RAGMART_SERVING_URL", url)
        where = {}
    provider = HashingProvider()
    question = "text of travel rules"
    q = provider.embed([question])[0]
    for clause in CLAUSES:
        good_file = tmp_path / f"good_{clause.name}.yml"
        good_file.write_text(yaml.safe_dump({"version": 1, "contracts": {
            "case": {clause.name: CLAUSE_CASES[clause.name][0],
                     "access": {"missing_allowed_groups": "allow"}}}}))
        want = set(reference(rows, q, load_contracts(good_file).get("case"), groups=CALLER,
                             k=10**6))
        assert want, clause.name
        for mode in ("lexical", "hybrid"):
            got = ragmart.retrieve(question, k=1000, provider=provider, now=NOW, mode=mode,
                                   contract="case", contracts_path=good_file, groups=CALLER,
                                   **where)
            assert {c.chunk_id for c in got} == want, (clause.name, mode)
            assert got.strategy == "bm25" if mode == "lexical" else got.strategy.startswith(
                "rrf("), (clause.name, mode)
