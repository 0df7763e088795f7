"""Lexical and hybrid retrieval through the public interface, on a real dbt build.

One deployment is built per module (the sample corpus plus documents carrying words no other
document has); a test that changes it works on a copy. What is proved: `--mode` on the CLI and
`mode=` in the Python API; a chunk the caller may not see, or that the contract or as-of
excludes, is never returned whatever the question's words; the same answer twice with ties by
chunk_id; the full-text index and the serving set agree after an incremental build that
deletes and adds documents (searched through the stale index plus its delta), after a publish
and after a purge (no word of the purged document left in the index's tables).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cdc_files import dms_csv, document, ts
from dbt_harness import Project

import ragmart
from ragmart.duck import connect
from ragmart.retrieval.results import RetrievalError

SECRET_WORD = "quuxplatypus"  # only in hyb-secret (legal only)
VICTIM_WORD = "zorbulant"  # only in hyb-victim (staff): deleted, then purged
TWIN_WORD = "tweedlum"  # in the two identical twins (staff): tied scores
LATE_WORD = "frobnicator"  # only in hyb-late, landed after the first build
FTS = "fts_main_fct_chunk_embeddings_v1"


def _doc(doc_id: str, seq: int, word: str, groups: list[str], title: str | None = None,
         op: str = "I", doc_type: str = "policy") -> dict:
    text = document(title or f"Hybrid {doc_id}", {
        "Overview": [f"The {word} register lists every item under code HX-{seq}.",
                     "Staff consult it before approving a purchase order."]})
    return {"op": op, "seq": seq, "document_id": doc_id, "title": title or f"Hybrid {doc_id}",
            "content": text, "allowed_groups": groups, "document_type": doc_type}


def build_hybrid_deployment(workdir: Path) -> Project:
    """The sample plus the documents whose words no other has, built (test_postgres_hybrid
    builds it too)."""
    project = Project(workdir)
    project.land_sample()
    twin = _doc("hyb-twin-a", 200, TWIN_WORD, ["staff"], title="Twin register")
    project.land("dms/0200_hybrid.csv", dms_csv([
        _doc("hyb-secret", 201, SECRET_WORD, ["legal"]),
        _doc("hyb-victim", 202, VICTIM_WORD, ["staff"]),
        twin,
        {**twin, "document_id": "hyb-twin-b", "seq": 203},
    ]))
    project.build()
    return project


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_hybrid_deployment(tmp_path_factory.mktemp("hybrid-base"))


@pytest.fixture
def deployment(built: Project, tmp_path: Path) -> Project:
    shutil.copytree(built.workdir, tmp_path / "d")
    return Project(tmp_path / "d")


def _ask(project: Project, question: str, *args: str) -> dict:
    proc = project.ragmart("retrieve", question, "--json", *args, check=False)
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout)


def _documents(answer: dict) -> list[str]:
    return [r["document_id"] for r in answer["results"]]


def test_cli_mode_finds_an_exact_term_and_refuses_an_unknown_mode(built: Project) -> None:
    lexical = _ask(built, f"what is {VICTIM_WORD}?", "--mode", "lexical", "--groups", "staff")
    assert lexical["strategy"] == "bm25" and not lexical["abstained"]
    assert _documents(lexical)[0] == "hyb-victim"
    assert _documents(lexical) == ["hyb-victim"]  # only chunks holding a term of the question
    hybrid = _ask(built, f"what is {VICTIM_WORD}?", "--mode", "hybrid", "--groups", "staff")
    assert hybrid["strategy"].startswith("rrf(") and _documents(hybrid)[0] == "hyb-victim"
    # the vector list fills the rest: every eligible chunk (3 for staff), none for lexical
    assert hybrid["eligible_chunks"] == 3 and len(hybrid["results"]) == 3
    default = _ask(built, f"what is {VICTIM_WORD}?", "--groups", "staff")
    assert default["strategy"].startswith("rrf(")  # the documented default mode
    proc = built.ragmart("retrieve", "refunds", "--mode", "fuzzy", check=False)
    assert proc.returncode == 2 and "--mode" in proc.stderr


def test_lexical_abstains_with_its_own_reason_and_every_mode_with_the_clause_counts(
        built: Project) -> None:
    none = _ask(built, "xyzzyplugh wibblefrotz", "--mode", "lexical", "--all-groups")
    assert none["abstained"] and "no eligible chunk contains any term" in none["reason"]
    assert "wibblefrotz" in none["reason"]
    for mode in ("vector", "lexical", "hybrid"):
        hidden = _ask(built, SECRET_WORD, "--mode", mode)  # no group: nothing visible
        assert hidden["abstained"] and hidden["clauses"], mode
        assert "visible to a caller without groups" in hidden["reason"]


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_a_chunk_the_caller_may_not_see_never_appears_whatever_the_terms(
        built: Project, mode: str) -> None:
    db = built.db_path
    question = f"{SECRET_WORD} register {SECRET_WORD} HX-201"
    for groups in (["staff"], ["hr", "finance"], [], None):
        result = ragmart.retrieve(question, mode=mode, groups=groups, db_path=db, k=20)
        assert "hyb-secret" not in {c.document_id for c in result}, groups
    seen = ragmart.retrieve(question, mode=mode, groups=["legal"], db_path=db)
    assert seen[0].document_id == "hyb-secret"
    # a contract clause and the caller's filter apply too: another document type only
    typed = ragmart.retrieve(question, mode=mode, groups=["legal"], doc_types=["faq"],
                             db_path=db)
    assert "hyb-secret" not in {c.document_id for c in typed}
    # as of a time before the document was written, it does not exist
    before = ragmart.retrieve(question, mode=mode, groups=["legal"], db_path=db,
                              as_of=ts(150))
    assert "hyb-secret" not in {c.document_id for c in before}
    after = ragmart.retrieve(question, mode=mode, groups=["legal"], db_path=db,
                             as_of=ts(400))
    assert after[0].document_id == "hyb-secret"


def test_same_answer_twice_and_ties_broken_by_chunk_id(built: Project) -> None:
    with ragmart.Retriever(db_path=built.db_path) as reader:
        answers = [reader.retrieve(f"{TWIN_WORD} register", mode="lexical", groups=["staff"],
                                   k=4) for _ in range(2)]
        hybrid = [reader.retrieve(f"{TWIN_WORD} register", mode="hybrid", groups=["staff"])
                  for _ in range(2)]
    assert answers[0] == answers[1] and hybrid[0] == hybrid[1]
    ids = [c.chunk_id for c in answers[0]]
    twins = [i for i in ids if i.startswith("hyb-twin-")]
    # the twins' chunks have the same text, so the same score: chunk_id orders them
    assert len(twins) >= 2 and twins == sorted(twins)
    assert ids[:len(twins)] == twins and [c.rank for c in answers[0]] == list(
        range(1, len(ids) + 1))


def _indexed(project: Project, database: Path | None = None) -> set[str]:
    conn = connect(database or project.db_path, read_only=True)
    try:
        return {name for (name,) in conn.execute(f"select name from {FTS}.docs").fetchall()}
    finally:
        conn.close()


def test_an_incremental_build_that_deletes_and_adds_keeps_lexical_search_exact(
        deployment: Project) -> None:
    project = deployment
    victim_chunks = {r[0] for r in project.query(
        "select chunk_id from fct_chunk_embeddings_v1 where document_id = 'hyb-victim'")}
    assert victim_chunks and victim_chunks <= _indexed(project)
    project.land("dms/0300_change.csv", dms_csv([
        _doc("hyb-victim", 300, VICTIM_WORD, ["staff"], op="D"),
        _doc("hyb-late", 301, LATE_WORD, ["staff"]),
    ]))
    project.build()
    indexed = _indexed(project)
    late_chunks = {r[0] for r in project.query(
        "select chunk_id from fct_chunk_embeddings_v1 where document_id = 'hyb-late'")}
    # small changes: the index was not rebuilt (still holds the deleted document's chunks,
    # lacks the new ones), yet search is exact through the join and the delta scan
    assert victim_chunks <= indexed and late_chunks and not late_chunks & indexed
    for mode in ("lexical", "hybrid"):
        gone = ragmart.retrieve(VICTIM_WORD, mode=mode, groups=["staff"],
                                db_path=project.db_path)
        assert "hyb-victim" not in {c.document_id for c in gone}, mode
        new = ragmart.retrieve(LATE_WORD, mode=mode, groups=["staff"], db_path=project.db_path)
        assert new[0].document_id == "hyb-late", mode
    assert ragmart.retrieve(VICTIM_WORD, mode="lexical", groups=["staff"],
                            db_path=project.db_path).abstained

    # publish: the (slim) snapshot gets its own index, of exactly the serving set
    project.ragmart("publish", "v1")
    (snapshot,) = (project.workdir / "published").glob("v1-*.duckdb")
    conn = connect(snapshot, read_only=True)
    try:
        served = {r[0] for r in conn.execute(
            "select chunk_id from fct_chunk_embeddings_v1").fetchall()}
    finally:
        conn.close()
    assert _indexed(project, snapshot) == served
    answer = _ask(project, LATE_WORD, "--mode", "lexical", "--groups", "staff")
    assert _documents(answer)[0] == "hyb-late" and answer["serving"] is not None


def test_the_delta_is_scored_as_the_index_scores_it(deployment: Project) -> None:
    """Chunks the index lacks are scored by tokenizing their text: the same BM25 as indexed
    chunks, so a stale index ranks as a fresh one with the same statistics."""
    questions = [f"{TWIN_WORD} register purchase", "refund approval within 30 days",
                 "parental leave weeks", "HX-202 code"]
    before = {q: [(c.chunk_id, c.rank) for c in ragmart.retrieve(
        q, mode="lexical", groups=ragmart.ALL_GROUPS, db_path=deployment.db_path, k=10)]
        for q in questions}
    conn = connect(deployment.db_path)
    try:  # forget a third of the indexed chunks (statistics and dictionary kept)
        conn.execute(f"delete from {FTS}.docs where hash(name) % 3 = 0")
        assert conn.execute(f"select count(*) from {FTS}.docs").fetchone()[0] > 0
        conn.execute("checkpoint")
    finally:
        conn.close()
    after = {q: [(c.chunk_id, c.rank) for c in ragmart.retrieve(
        q, mode="lexical", groups=ragmart.ALL_GROUPS, db_path=deployment.db_path, k=10)]
        for q in questions}
    assert after == before and all(before.values())


def test_purge_leaves_no_word_of_the_document_in_the_full_text_index(
        deployment: Project) -> None:
    project = deployment
    project.ragmart("publish", "v1")
    databases = [project.db_path, *(project.workdir / "published").glob("v1-*.duckdb")]
    for database in databases:
        conn = connect(database, read_only=True)
        try:
            assert conn.execute(f"select count(*) from {FTS}.dict where term like $t",
                                {"t": SECRET_WORD[:9] + "%"}).fetchone()[0] == 1, database
        finally:
            conn.close()
    project.ragmart("purge", "--document-id", "hyb-secret")
    databases = [project.db_path, *(project.workdir / "published").glob("v1-*.duckdb")]
    for database in databases:
        conn = connect(database, read_only=True)
        try:
            assert conn.execute(f"select count(*) from {FTS}.dict where term like $t",
                                {"t": SECRET_WORD[:9] + "%"}).fetchone()[0] == 0, database
            assert not conn.execute(
                f"select name from {FTS}.docs where starts_with(name, 'hyb-secret')"
            ).fetchall(), database
            served = conn.execute("select count(*) from fct_chunk_embeddings_v1").fetchone()[0]
            assert conn.execute(f"select count(*) from {FTS}.docs").fetchone()[0] == served
        finally:
            conn.close()
    assert ragmart.retrieve(SECRET_WORD, mode="lexical", groups=["legal"],
                            db_path=project.db_path).abstained


def test_lexical_needs_the_question_and_an_index(built: Project, tmp_path: Path) -> None:
    with ragmart.Retriever(db_path=built.db_path) as reader:
        vector = reader.provider.embed(["refunds"])[0]
        assert reader.search(vector, groups=["staff"]).strategy != "bm25"  # vector by default
        with pytest.raises(RetrievalError, match="needs the question"):
            reader.search(vector, mode="lexical", groups=["staff"])
        with pytest.raises(RetrievalError, match="mode must be one of"):
            reader.retrieve("refunds", mode="semantic")
    copy = tmp_path / "no-index.duckdb"
    shutil.copy(built.db_path, copy)
    conn = connect(copy)
    try:
        conn.execute(f"drop schema {FTS} cascade")
        conn.execute("checkpoint")
    finally:
        conn.close()
    with pytest.raises(RetrievalError, match="no full-text index"):
        ragmart.retrieve("refunds", mode="hybrid", db_path=copy, groups=["staff"])
    assert ragmart.retrieve("refunds", mode="vector", db_path=copy, groups=["finance"])
    # without an index, the default mode is vector (a database built before lexical search)
    default = ragmart.retrieve("refunds", db_path=copy, groups=["finance"])
    assert default and not default.strategy.startswith("rrf(")


def test_eval_reports_every_mode_on_the_whole_set_and_the_exact_term_questions(
        built: Project) -> None:
    out = built.workdir / "target" / "eval-modes"
    proc = built.ragmart("eval", "--modes", "--json", "--out", str(out))
    modes = {m["mode"]: m for m in json.loads(proc.stdout)["modes"]}
    assert sorted(modes) == ["hybrid", "lexical", "vector"]
    for m in modes.values():
        assert m["all"]["queries"] == 101 and m["exact_terms"]["queries"] == 24
        assert set(m["exact_terms"]) == {"queries", "recall@5", "mrr", "ndcg@10"}
    # exact terms are what lexical search is for, whatever the embedding model
    assert modes["lexical"]["exact_terms"]["mrr"] > 0.9
    assert "## Search modes" in (out / "eval_v1.md").read_text()
