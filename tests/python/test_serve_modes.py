"""A Retriever's lexical and hybrid answers read their rows from memory (memory.ServingVectors.
rows_at: no SQL for the rows BM25 and the fusion chose); they must be exactly the answers of the
search that reads them with SQL (`ragmart.retrieve`, no vectors in memory): the same chunks,
order, distances, sources and scores, for every kind of caller, contract and mode, on the
hybrid deployment of test_hybrid (words only one document has, documents another group may
not see, identical twins tied by chunk_id), with a full-text index of every row (the ranking
statement then skips the delta's scan, asked once per snapshot) and with one lacking a third
of them (the delta scored from the text).

Without a delta the Retriever ranks from the index's postings in memory (ragmart.retrieval.
memory_lexical: candidates in numpy, scored by the ranking statement's expression): the same
comparison holds, and the full statement must not run. With a delta it runs (the fallback).
"""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest
from cdc_files import ts
from dbt_harness import ROOT, Project
from test_hybrid import FTS, SECRET_WORD, TWIN_WORD, build_hybrid_deployment

import ragmart
from ragmart.duck import connect
from ragmart.retrieval import lexical
from ragmart.retrieval.api import Retriever
from ragmart.retrieval.memory_lexical import FACT, LexicalPostings

QUESTIONS = (f"{TWIN_WORD} register", f"{SECRET_WORD} purchase order", "referral bonus",
             "how many vacation days do I get", "HX-201 code",
             "xylophonequark",  # a term in no chunk: lexical abstains, hybrid answers by meaning
             "the of and")  # stopwords only: no term at all
CALLERS = (["staff"], ["legal"], ["hr", "managers"], ragmart.ALL_GROUPS)
CONTRACTS = (None, "policy_answers", "current_handbook")  # policy_answers: min_similarity


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_hybrid_deployment(tmp_path_factory.mktemp("serve-modes"))


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_rows_from_memory_are_the_sql_searchs(built: Project, mode: str, stale: bool,
                                             monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)  # the repository's contract file
    db = Path(built.db_path)
    if stale:  # the index forgets a third of the chunks (statistics and dictionary kept)
        db = Path(shutil.copy(db, tmp_path / "stale.duckdb"))
        with closing(connect(db)) as conn:
            conn.execute(f"delete from {FTS}.docs where hash(name) % 3 = 0; checkpoint")
    compared = 0
    full_statements = []
    ranking_sql = lexical.ranking_sql

    def counted(*args, **kwargs):
        full_statements.append(kwargs.get("matches") is None)
        return ranking_sql(*args, **kwargs)

    with Retriever(db_path=db) as reader:
        assert reader.vectors is not None and reader.vectors.records is not None
        reader.retrieve("register", mode="lexical", groups=["staff"])
        assert reader.vectors.facts["lexical_delta"] is stale
        # a delta: no postings in memory, the statement answers
        assert isinstance(reader.vectors.facts[FACT], LexicalPostings) is not stale
        for question in QUESTIONS:
            for groups in CALLERS:
                for contract in CONTRACTS:
                    options = {"k": 6, "groups": groups, "contract": contract, "mode": mode}
                    monkeypatch.setattr(lexical, "ranking_sql", counted)
                    fast = reader.retrieve(question, **options)
                    monkeypatch.setattr(lexical, "ranking_sql", ranking_sql)
                    exact = ragmart.retrieve(question, db_path=db, **options)
                    # (eligible_chunks and strategy say how each searched: in memory, a
                    # clock-bound contract's count is not kept)
                    assert (fast.chunks, fast.abstained, fast.reason) == (
                        exact.chunks, exact.abstained, exact.reason), (question, groups,
                                                                      contract)
                    compared += len(fast.chunks)
    assert compared > 50  # answers with chunks were compared, not only abstentions
    assert any(full_statements) is stale and (stale or full_statements.count(False) > 0)


def test_ties_break_by_chunk_id_and_as_of_reads_the_history(built: Project, monkeypatch
                                                            ) -> None:
    """The twins' chunks tie on BM25 (same text): the postings in memory rank them as the
    statement does, by chunk_id, with the same scores to the bit. An as-of search (the
    history, not the serving set in memory) gives the SQL search's answer too."""
    monkeypatch.chdir(ROOT)
    db = Path(built.db_path)
    as_of = ts(400)  # after every landing of the deployment
    with Retriever(db_path=db) as reader:
        for mode in ("lexical", "hybrid"):
            fast = reader.retrieve(f"{TWIN_WORD} register", k=4, mode=mode, groups=["staff"])
            exact = ragmart.retrieve(f"{TWIN_WORD} register", k=4, mode=mode, groups=["staff"],
                                     db_path=db)
            assert fast.chunks == exact.chunks, mode
            twins = [c for c in fast if c.document_id.startswith("hyb-twin-")]
            assert len(twins) >= 2 and twins[0].lexical_score == twins[1].lexical_score
            assert [c.chunk_id for c in twins] == sorted(c.chunk_id for c in twins)
            for question in (f"{TWIN_WORD} register", "referral bonus", "xylophonequark"):
                past = reader.retrieve(question, k=5, mode=mode, groups=["staff"], as_of=as_of)
                assert past.chunks == ragmart.retrieve(
                    question, k=5, mode=mode, groups=["staff"], as_of=as_of,
                    db_path=db).chunks, (mode, question)


@pytest.mark.slow
def test_a_publish_and_a_purge_reload_the_postings(built: Project, tmp_path: Path,
                                                    monkeypatch) -> None:
    """A Retriever following publishes loads the new snapshot's postings with its vectors (a
    deleted document's words stop matching at once), and one opened after a purge reads the
    rebuilt index (the purged document's words match nothing): answers equal the SQL's."""
    from cdc_files import dms_csv
    from test_hybrid import VICTIM_WORD, _doc

    shutil.copytree(built.workdir, tmp_path / "d")
    project = Project(tmp_path / "d")
    for key, value in project.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    project.ragmart("publish", "v1")

    def same(reader: Retriever, question: str, groups: list[str]) -> list[str]:
        documents = []
        for mode in ("lexical", "hybrid"):
            fast = reader.retrieve(question, k=5, mode=mode, groups=groups)
            exact = ragmart.retrieve(question, k=5, mode=mode, groups=groups,
                                     db_path=reader.path)
            assert (fast.chunks, fast.reason) == (exact.chunks, exact.reason), (question, mode)
            documents.append([c.document_id for c in fast] if mode == "lexical" else [])
        return documents[0]

    with Retriever(recheck_seconds=0) as reader:
        first = reader.vectors.facts[FACT]
        assert isinstance(first, LexicalPostings)
        assert same(reader, VICTIM_WORD, ["staff"])[0] == "hyb-victim"
        project.land("dms/0300_change.csv", dms_csv([
            _doc("hyb-victim", 300, VICTIM_WORD, ["staff"], op="D")]))
        project.build()
        project.ragmart("publish", "v1")
        assert "hyb-victim" not in same(reader, VICTIM_WORD, ["staff"])
        assert reader.vectors.facts[FACT] is not first  # the new snapshot's postings
        assert same(reader, SECRET_WORD, ["legal"])[0] == "hyb-secret"
    # the build database's index was not rebuilt for one deletion: it still holds the deleted
    # document's chunks, which are no longer served (and lacks none): postings dropped
    with closing(connect(project.db_path, read_only=True)) as conn:
        assert conn.execute(f"select count(*) from {FTS}.docs where starts_with(name, "
                            "'hyb-victim')").fetchone()[0] > 0
    with Retriever(db_path=project.db_path) as reader:
        assert isinstance(reader.vectors.facts[FACT], LexicalPostings)
        for question in (VICTIM_WORD, f"{VICTIM_WORD} register", "register purchase order"):
            assert "hyb-victim" not in same(reader, question, ["staff"])
    project.ragmart("purge", "--document-id", "hyb-secret")
    with Retriever(recheck_seconds=0) as reader:
        assert isinstance(reader.vectors.facts[FACT], LexicalPostings)
        assert same(reader, SECRET_WORD, ["legal"]) == []
        assert reader.retrieve(SECRET_WORD, mode="lexical", groups=["legal"]).abstained


def test_the_question_is_tokenized_as_the_index_tokenizes_it(built: Project) -> None:
    """LexicalPostings.terms splits an ASCII question in Python: its terms must be those of
    the index's own tokenize macro, stopwords and stemmer (lexical.terms_of), for any text."""
    questions = ("Refund approval within 30 days?", "POL-2291: the I-9 form's deadline",
                 "  the of and  ", "running RUNS ran runner's", "HX-201/HX-202,code;;x",
                 "tab\tnew\nline", "Café naïve résumé", "ÅNGSTRÖM 12ºC", "", "--", "a1b2 3c")
    with Retriever(db_path=built.db_path) as reader:
        postings = reader.vectors.facts[FACT]
        for question in (*questions, *questions):  # the second time from its kept stems
            assert postings.terms(reader.conn, question) == lexical.terms_of(
                reader.conn, postings.fts, question), question


def test_lean_searches_score_bm25_without_a_statement(built: Project, monkeypatch) -> None:
    """With the eligible set exact and no distance clause, the Retriever scores BM25 in numpy
    (ragmart.retrieval.bm25 through LexicalPostings.exact): neither the ranking statement nor
    the pool's scoring statement runs, and the answers (twins tied, broken by chunk_id; a term
    in no chunk; stopwords only) are ragmart.retrieve's, scores to the bit."""
    monkeypatch.chdir(ROOT)
    db = Path(built.db_path)
    statements: list[str] = []
    originals = {name: getattr(lexical, name) for name in ("ranking_sql", "rank_matches")}
    for name, original in originals.items():
        monkeypatch.setattr(lexical, name, lambda *a, _f=original, _n=name, **kw: (
            statements.append(_n), _f(*a, **kw))[1])
    scored: list[bool] = []
    exact = LexicalPostings.exact

    def spied(self, *args):
        ranked = exact(self, *args)
        scored.append(ranked is not None)
        return ranked

    monkeypatch.setattr(LexicalPostings, "exact", spied)
    asked = [(question, groups, mode) for question in QUESTIONS
             for groups in (["staff"], ragmart.ALL_GROUPS) for mode in ("lexical", "hybrid")]
    with Retriever(db_path=db) as reader:
        fast = [reader.retrieve(q, k=6, groups=g, mode=m) for q, g, m in asked]
    assert statements == [] and len(scored) >= 16 and all(scored)
    for name, original in originals.items():
        monkeypatch.setattr(lexical, name, original)
    for (question, groups, mode), answer in zip(asked, fast, strict=True):
        exact_answer = ragmart.retrieve(question, k=6, groups=groups, mode=mode, db_path=db)
        assert (answer.chunks, answer.abstained, answer.reason) == (
            exact_answer.chunks, exact_answer.abstained, exact_answer.reason), (question, mode)
    twins = [c for c in fast[asked.index((f"{TWIN_WORD} register", ["staff"], "lexical"))]
             if c.document_id.startswith("hyb-twin-")]
    assert len(twins) >= 2 and twins[0].lexical_score == twins[1].lexical_score
    assert [c.chunk_id for c in twins] == sorted(c.chunk_id for c in twins)
    for question in ("xylophonequark", "the of and"):  # no term in any chunk / no term at all
        assert fast[asked.index((question, ["staff"], "lexical"))].abstained
