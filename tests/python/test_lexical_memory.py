"""ragmart.retrieval.memory_lexical.top, the candidate pools of lexical search in memory, against
a brute-force ranking (package level: no dbt build).

The "statement" here is a stand-in with what makes the real one differ from numpy: its scores
are the memory scores moved by up to 1e-12 and rounded to 1e-9 (DuckDB's fsum and round), it
ranks by (score desc, chunk_id) and it drops the rows a contract excludes (the in-memory
eligible set may be a superset). Whatever the ties, the pools must give exactly its top k over
every row, or None (the caller's full statement) when a pool would pass POOL_MAX.
The end-to-end comparison with DuckDB is tests/python/test_serve_modes.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragmart.retrieval.memory_lexical import POOL_MAX, top


def _world(seed: int, rows: int, distinct: int):
    rng = np.random.default_rng(seed)
    # few distinct scores: heavy ties, as chunks of one length holding the same terms
    levels = np.round(rng.uniform(0.5, 9.0, distinct), 6)
    scores = np.where(rng.random(rows) < 0.3, 0.0, levels[rng.integers(0, distinct, rows)])
    noise = rng.uniform(-1e-12, 1e-12, rows)  # the statement's own arithmetic
    chunk_ids = np.array([f"c{i:06d}" for i in range(rows)], dtype=object)
    truly = rng.random(rows) < 0.8  # what the statement's clauses admit
    return rng, scores, noise, chunk_ids, truly


def _statement(scores, noise, chunk_ids, truly, k, asked):
    def exact(positions: np.ndarray) -> list[tuple[str, float]]:
        asked.append(len(positions))
        kept = [int(i) for i in positions if truly[i] and scores[i] > 0]
        ranked = sorted(((str(chunk_ids[i]), round(float(scores[i] + noise[i]), 9))
                         for i in kept), key=lambda t: (-t[1], t[0]))
        return ranked[:k]
    return exact


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 10, 50])
def test_the_pools_give_the_statements_top_k_over_every_row(seed: int, k: int) -> None:
    rng, scores, noise, chunk_ids, truly = _world(seed, rows=3_000, distinct=40 + seed * 30)
    eligible = np.sort(rng.choice(3_000, size=2_500, replace=False))  # a superset of truly
    truly[np.setdiff1d(np.arange(3_000), eligible)] = False
    asked: list[int] = []
    got = top(scores, eligible, k, _statement(scores, noise, chunk_ids, truly, k, asked))
    everything = _statement(scores, noise, chunk_ids, truly, k, [])(np.arange(3_000))
    if got is None:  # ties past POOL_MAX: the caller's full statement answers
        assert max(asked, default=0) <= POOL_MAX
        return
    assert got == everything
    assert asked and max(asked) < 3_000  # it did not score every row


def test_equal_scores_at_the_edge_enter_the_pool_together() -> None:
    scores = np.array([5.0, 3.0, 3.0, 3.0, 3.0, 1.0, 0.0])
    chunk_ids = np.array(["e", "d", "c", "b", "a", "f", "g"], dtype=object)
    noise = np.zeros(len(scores))
    asked: list[int] = []
    exact = _statement(scores, noise, chunk_ids, np.ones(len(scores), bool), 2, asked)
    assert top(scores, np.arange(len(scores)), 2, exact) == [("e", 5.0), ("a", 3.0)]
    assert asked == [5]  # the four tied at 3.0 (a comes first by chunk_id), not f or g


def test_no_match_scores_nothing_and_a_pool_past_the_cap_falls_back() -> None:
    asked: list[int] = []
    nothing = np.zeros(10)
    ids = np.array([f"c{i}" for i in range(10)], dtype=object)
    assert top(nothing, np.arange(10), 3, _statement(nothing, nothing, ids, np.ones(10, bool),
                                                    3, asked)) == []
    assert asked == []
    rows = POOL_MAX + 10
    tied = np.ones(rows)  # a one-word question: every chunk holding it once ties
    ids = np.array([f"c{i:06d}" for i in range(rows)], dtype=object)
    assert top(tied, np.arange(rows), 5, _statement(tied, np.zeros(rows), ids,
                                                    np.ones(rows, bool), 5, asked)) is None
    assert asked == []


def test_rows_the_statement_drops_grow_the_pool() -> None:
    scores = np.linspace(10.0, 1.0, 400)
    ids = np.array([f"c{i:04d}" for i in range(400)], dtype=object)
    truly = np.ones(400, bool)
    truly[:150] = False  # min_similarity drops the 150 best by terms
    asked: list[int] = []
    got = top(scores, np.arange(400), 10, _statement(scores, np.zeros(400), ids, truly, 10,
                                                     asked))
    assert got == [(f"c{i:04d}", round(float(scores[i]), 9)) for i in range(150, 160)]
    assert len(asked) > 1 and asked[0] == 10
