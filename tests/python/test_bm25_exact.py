"""ragmart.retrieval.bm25 and LexicalPostings.exact against DuckDB's own statement (package
level: no dbt build): lexical.scored_sql run by DuckDB over the same integers (a registered
table, as the Retriever's fallback does) must give the same scores, compared with ``==`` on the
floats, and the same order.

- random grids of (num_docs, avgdl, df, tf, len), with the adversarial corners: len 0 and 1,
  df = num_docs and 0 (and past num_docs: a negative decimal), one document, tf past
  2^53 / 22 (DuckDB's decimal cast splits it), avgdl tiny or not a short binary fraction,
  chunks of one to eight terms, one and two threads;
- scores landing exactly on x.5e-9 (DuckDB rounds them away from zero, numpy to even: the
  emulation must be DuckDB's);
- a sum too close to a rounding boundary to be settled by its terms (DuckDB's summation order
  decides) is reported undetermined, and DuckDB's value is one of the two candidates;
- LexicalPostings.exact and memory_lexical.top (with its floor taken from a sample) rank
  heavy ties, as the statement does, by chunk_id.

The end-to-end comparison (Retriever against ragmart.retrieve, every caller and contract) is
tests/python/test_serve_modes.py.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from ragmart.retrieval import bm25
from ragmart.retrieval.lexical import scored_sql
from ragmart.retrieval.memory_lexical import LexicalPostings, floor, top

FTS = "fts_exact"


def _duckdb(num_docs: int, avgdl: float, table: pa.Table, threads: int = 1,
            limit: int | None = None) -> list[tuple[str, float]]:
    """scored_sql over `table` (chunk_id, len, df, tf), as DuckDB ranks it."""
    conn = duckdb.connect()
    try:
        conn.execute(f"set threads = {threads}")
        conn.execute(f"create schema {FTS}; create table {FTS}.stats (num_docs bigint, "
                     "avgdl double)")
        conn.execute(f"insert into {FTS}.stats values ($n, $a)", {"n": num_docs, "a": avgdl})
        conn.register("matches_in", table)
        limit = len(table) + 1 if limit is None else limit
        return conn.execute(f"with matches as (select chunk_id, len, df, tf from matches_in), "
                            f"{scored_sql(FTS, str(limit))}").fetchall()
    finally:
        conn.close()


def _emulated(num_docs: int, avgdl: float, table: pa.Table) -> dict[str, tuple[float, float]]:
    """chunk_id -> (low, high) from bm25: each row's term, Kahan summed per chunk in table
    order."""
    chunk = table["chunk_id"].to_pylist()
    lengths, df, tf = (table[c].to_numpy() for c in ("len", "df", "tf"))
    idfs = {d: bm25.idf(num_docs, d) for d in set(df.tolist())}
    terms = bm25.term_scores(np.array([idfs[d] for d in df.tolist()]), tf,
                             bm25.length_norms(lengths, avgdl))
    ids = list(dict.fromkeys(chunk))
    where = {c: i for i, c in enumerate(ids)}
    at = np.array([where[c] for c in chunk], dtype=np.int64)
    seen = np.zeros(len(ids), dtype=np.int64)
    occurrence = np.zeros(len(chunk), dtype=np.int64)
    for i, row in enumerate(at.tolist()):
        occurrence[i] = seen[row]
        seen[row] += 1
    summed, err = np.zeros(len(ids)), np.zeros(len(ids))
    for j in range(int(seen.max(initial=0))):  # each chunk's j-th row, in table order
        rows = np.flatnonzero(occurrence == j)
        s, e = summed[at[rows]], err[at[rows]]
        bm25.kahan_add(s, e, terms[rows])
        summed[at[rows]], err[at[rows]] = s, e
    low, high = bm25.rounded(summed, seen)
    return dict(zip(ids, zip(low.tolist(), high.tolist(), strict=True), strict=True))


def _grid(rng: np.random.Generator) -> tuple[int, float, pa.Table]:
    num_docs = int(rng.choice([1, 2, 10, 1_000, 100_000, 10 ** 9, 2 ** 40, 2 ** 50]))
    avgdl = float(rng.choice([1.0, 40.0, 0.37, 123.456789, 1e-3, 7.0 / 3, 2.0 ** 40]))
    chunks = int(rng.integers(1, 300))
    lengths = rng.choice([0, 1, 2, 40, 10 ** 6, 2 ** 45], size=chunks) * (
        rng.random(chunks) < 0.5) + rng.integers(0, 200, chunks) * (rng.random(chunks) < 0.5)
    rows: dict[str, list] = {"chunk_id": [], "len": [], "df": [], "tf": []}
    for _ in range(int(rng.integers(1, 9))):  # a term: its df, the chunks holding it
        df = int(rng.choice([0, 1, num_docs, int(rng.integers(0, num_docs + 1)),
                             num_docs + int(rng.integers(1, 10 ** 6))]))  # (df > N: stale)
        for c in rng.choice(chunks, size=int(rng.integers(1, chunks + 1)), replace=False):
            rows["chunk_id"].append(f"c{int(c):05d}")
            rows["len"].append(int(lengths[c]))
            rows["df"].append(df)
            rows["tf"].append(int(rng.choice([int(rng.integers(1, 5)), int(rng.integers(1, 1000)),
                                              bm25.TF_FAST, bm25.TF_FAST + 1,
                                              2 ** int(rng.integers(45, 63)) - 1])))
    return num_docs, avgdl, pa.table({k: pa.array(v, pa.string() if k == "chunk_id"
                                                  else pa.int64()) for k, v in rows.items()})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seed", range(3))
def test_scores_are_duckdbs_to_the_bit(seed: int, threads: int) -> None:
    rng = np.random.default_rng(seed)
    compared = undetermined = 0
    for _ in range(25):
        num_docs, avgdl, table = _grid(rng)
        emulated = _emulated(num_docs, avgdl, table)
        ranked = _duckdb(num_docs, avgdl, table, threads)
        assert {c for c, _ in ranked} == set(emulated)
        for chunk_id, score in ranked:
            low, high = emulated[chunk_id]
            if low == high:
                assert score == low, (num_docs, avgdl, chunk_id, score, low)
            else:
                undetermined += 1
                assert score in (low, high)
            compared += 1
    assert compared > 1_000 and undetermined <= compared // 200


# (num_docs, avgdl, df, tf, len) whose one-term score times 1e9 is exactly k + 0.5, k even:
# DuckDB's std::round gives k + 1, numpy's half to even k
HALVES = [(2 ** 50, 40.0, 1, 31, 4710), (2 ** 50, 40.0, 1, 48, 6391), (2 ** 50, 40.0, 2, 47, 1248),
          (2 ** 50, 40.0, 2, 49, 2333), (2 ** 50, 3.0, 1, 174, 1176), (2 ** 50, 3.0, 2, 108, 1706)]


def test_half_way_scores_round_away_from_zero_as_duckdb_does() -> None:
    for num_docs, avgdl, df, tf, length in HALVES:
        table = pa.table({"chunk_id": ["c"], "len": [length], "df": [df], "tf": [tf]})
        (chunk_id, score), = _duckdb(num_docs, avgdl, table)
        term = bm25.term_scores(bm25.idf(num_docs, df), np.array([tf]),
                                bm25.length_norms(np.array([length]), avgdl))
        y = float(term[0]) * 1e9
        assert y - math.trunc(y) == 0.5 and math.trunc(y) % 2 == 0  # exactly half way
        assert score == _emulated(num_docs, avgdl, table)["c"][0] == float(
            bm25.round9(term)[0])
        assert score != float(np.round(term[0], 9))  # numpy: half to even of x * 1e9


def test_the_idf_is_duckdbs_ln() -> None:
    rng = np.random.default_rng(7)
    num_docs = rng.integers(1, 2 ** 52, 3_000)
    df = (num_docs * rng.random(3_000)).astype(np.int64)
    conn = duckdb.connect()
    conn.register("t", pa.table({"n": num_docs, "df": df}))
    got = [v for (v,) in conn.execute(
        "select ln(((n - df) + 0.5) / (df + 0.5) + 1) from t").fetchall()]
    assert got == [bm25.idf(int(n), int(d)) for n, d in zip(num_docs, df, strict=True)]


def _postings(seed: int, rows: int, terms: int) -> tuple[LexicalPostings, int, float]:
    """A LexicalPostings of `rows` chunks (ids in row order) with heavy ties: few lengths, few
    term frequencies."""
    rng = np.random.default_rng(seed)
    num_docs, avgdl = rows * 3, float(rng.choice([40.0, 12.5, 7.0 / 3]))
    lengths = rng.choice([5, 12, 40, 41], size=rows).astype(np.int64)
    indptr, at, tf = [0], [], []
    for _ in range(terms):
        held = np.sort(rng.choice(rows, size=int(rng.integers(rows // 3, rows)),
                                  replace=False))
        at.append(held)
        tf.append(rng.choice([1, 1, 1, 2, 3], size=len(held)))
        indptr.append(indptr[-1] + len(held))
    postings = LexicalPostings(
        fts=FTS, termids={f"t{t}": t for t in range(terms)},
        df=rng.integers(1, num_docs, terms), indptr=np.array(indptr, dtype=np.int64),
        rows=np.concatenate(at).astype(np.int32), tf=np.concatenate(tf).astype(np.int32),
        row_lengths=lengths, length_norms=bm25.length_norms(lengths, avgdl),
        num_docs=num_docs, chunk_ids=np.array([f"c{i:06d}" for i in range(rows)], dtype=object))
    return postings, num_docs, avgdl


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 10, 60])
def test_postings_rank_the_pool_as_the_statement(seed: int, k: int) -> None:
    postings, num_docs, avgdl = _postings(seed, rows=2_000, terms=4)
    ids = [0, 2, 3] if seed else [1]  # one term: every chunk of a length and tf ties
    held = np.flatnonzero(postings.scores(ids) > 0)
    pool = np.random.default_rng(seed).permutation(held)[: max(k * 5, 300)]
    got = postings.exact(ids, pool, k)
    statement = _duckdb(num_docs, avgdl, postings.matches(ids, pool), limit=k)
    assert got is not None and got == statement
    if len(ids) == 1 and k > 1:  # one term: ties, broken by chunk_id
        assert len({score for _, score in got}) < len(got)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 5, 30])
def test_top_from_a_floor_is_the_statements_top_k_over_every_row(seed: int, k: int) -> None:
    postings, num_docs, avgdl = _postings(seed, rows=30_000, terms=3)
    ids = [0, 1, 2] if seed else [2]
    scores = postings.scores(ids)
    candidates = np.flatnonzero(scores > 0)
    assert floor(scores[candidates], k) is not None  # the sampled floor is taken
    asked: list[int] = []

    def exact(positions: np.ndarray) -> list[tuple[str, float]] | None:
        asked.append(len(positions))
        return postings.exact(ids, positions, k)

    got = top(scores, np.arange(postings.rows_total), k, exact, None)
    everything = _duckdb(num_docs, avgdl, postings.matches(ids, candidates), limit=k)
    assert got == everything
    assert max(asked) < len(candidates)  # not every row was scored exactly
    # no term of the question in any chunk: no candidate, nothing asked
    before = len(asked)
    assert top(np.zeros(postings.rows_total), np.arange(postings.rows_total), k, exact,
               None) == [] and len(asked) == before


def test_an_undetermined_sum_in_the_top_k_asks_duckdb(monkeypatch) -> None:
    """A sum within its ordering margin of a rounding boundary: exact gives None (the caller
    runs DuckDB's statement), unless that row cannot reach the top k."""
    postings, _, _ = _postings(0, rows=50, terms=2)
    ids = [0, 1]
    both = np.flatnonzero(postings.scores([0]) * postings.scores([1]) > 0)
    row = int(both[0])
    # a margin wide enough to straddle every boundary: every two-term sum undetermined
    monkeypatch.setattr(bm25, "order_margin",
                        lambda sums, terms: np.where(terms > 1, 1e-8, 0.0))
    assert postings.exact(ids, np.array([row]), 1) is None
    single = np.flatnonzero((postings.scores([0]) > 0) ^ (postings.scores([1]) > 0))
    ranked = postings.exact(ids, single, 3)
    assert ranked is not None and len(ranked) == min(3, len(single))
    # an undetermined row that cannot reach the top k does not matter
    best = int(single[np.argmax(postings.scores(ids)[single])])
    weakest = int(both[np.argmin(postings.scores(ids)[both])])
    if postings.scores(ids)[weakest] < postings.scores(ids)[best] - 1e-6:
        assert postings.exact(ids, np.array([best, weakest]), 1) is not None
