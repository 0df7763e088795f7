"""Hybrid search in a Retriever fuses the vector ranking's ids read from its vectors in memory
(fusion._DuckDBModes.vector_ranking) instead of a depth-RRF_DEPTH search_contract: the whole
answer (rows, scores, strategy, counts, abstentions) must be the one search_contract's gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dbt_harness import ROOT, Project
from test_hybrid import build_hybrid_deployment
from test_serve_modes import CALLERS, CONTRACTS, QUESTIONS

from ragmart.retrieval import fusion
from ragmart.retrieval.api import Retriever

NOW = dt.datetime(2026, 11, 30, 12)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_hybrid_deployment(tmp_path_factory.mktemp("hybrid-ranking"))


@pytest.mark.slow
def test_the_ranking_from_memory_gives_search_contracts_answer(built: Project,
                                                                monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the repository's contract file
    ranked = fusion._DuckDBModes.vector_ranking
    taken = []

    def counted(self, params, depth):
        out = ranked(self, params, depth)
        taken.append(out is not None)
        return out

    with Retriever(db_path=Path(built.db_path)) as reader:
        for question in QUESTIONS:
            for groups in CALLERS:
                for contract in CONTRACTS:
                    for k in (3, 60):  # 60: deeper than RRF_DEPTH
                        # one clock: a clock-bound contract's eligible set is counted when
                        # computed at the same moment (execution._eligible_rows)
                        options = {"k": k, "groups": groups, "contract": contract,
                                   "now": NOW}
                        monkeypatch.setattr(fusion._DuckDBModes, "vector_ranking", counted)
                        fast = reader.retrieve(question, **options)  # the default: hybrid
                        monkeypatch.setattr(fusion._DuckDBModes, "vector_ranking",
                                            lambda self, params, depth: None)
                        full = reader.retrieve(question, mode="hybrid", **options)
                        assert fast == full, (question, groups, contract, k)
                        assert fast.strategy.startswith(("rrf(", "none")), fast.strategy
    assert taken.count(True) > 50 and not all(taken)  # both the fast path and the fallback
