"""A Retriever's lexical and hybrid answers read their rows from memory (memory.ServingVectors.
rows_at: no SQL for the rows BM25 and the fusion chose); they must be exactly the answers of the
search that reads them with SQL (`ragmart.retrieve`, no vectors in memory): the same chunks,
order, distances, sources and scores, for every kind of caller, contract and mode, on the
hybrid deployment of test_hybrid (words only one document has, documents another group may
not see, identical twins tied by chunk_id), with a full-text index of every row (the ranking
statement then skips the delta's scan, asked once per snapshot) and with one lacking a third
of them (the delta scored from the text).
"""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest
from dbt_harness import ROOT, Project
from test_hybrid import FTS, SECRET_WORD, TWIN_WORD, build_hybrid_deployment

import ragmart
from ragmart.duck import connect
from ragmart.retrieval.api import Retriever

QUESTIONS = (f"{TWIN_WORD} register", f"{SECRET_WORD} purchase order", "referral bonus",
             "how many vacation days do I get", "HX-201 code")
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
    with Retriever(db_path=db) as reader:
        assert reader.vectors is not None and reader.vectors.records is not None
        reader.retrieve("register", mode="lexical", groups=["staff"])
        assert reader.vectors.facts["lexical_delta"] is stale
        for question in QUESTIONS:
            for groups in CALLERS:
                for contract in CONTRACTS:
                    options = {"k": 6, "groups": groups, "contract": contract, "mode": mode}
                    fast = reader.retrieve(question, **options)
                    exact = ragmart.retrieve(question, db_path=db, **options)
                    # (eligible_chunks and strategy say how each searched: in memory, a
                    # clock-bound contract's count is not kept)
                    assert (fast.chunks, fast.abstained, fast.reason) == (
                        exact.chunks, exact.abstained, exact.reason), (question, groups,
                                                                      contract)
                    compared += len(fast.chunks)
    assert compared > 50  # answers with chunks were compared, not only abstentions
