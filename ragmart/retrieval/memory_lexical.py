"""The full-text index's postings in memory, for a long-lived reader: BM25 candidates at numpy
speed, the printed scores still DuckDB's.

The ranking statement of ragmart.retrieval.lexical joins the eligible set with every posting of
the question's terms: on bench/serve.py's 100,000 chunks (six question words, each in ~13% of
the chunks) it reads ~70,000 postings and cost ~80 ms of CPU per search. A Retriever reads the
index's postings once per snapshot (`LexicalPostings.load`: the read-only file cannot change
under it), as ragmart.retrieval.memory keeps the vectors:

- ``terms`` grouped by (termid, docid) into arrays ordered by term (CSR: each term's rows and
  term frequencies), each fts docid mapped to its row in the serving vectors (ServingVectors'
  order); the postings of a docid the serving set no longer holds (a deleted document) or
  that ``docs`` lacks are dropped, as the statement's joins drop them; ``dict`` (term ->
  termid, document frequency) and ``stats`` (N, average length) as they are;
- a search tokenizes the question as the index does (`terms`: in Python for an ASCII question,
  each token stemmed once by DuckDB's ``stem``; else the index's own macro, lexical.terms_of),
  adds up fts' BM25 over those terms' postings in float64 into one score per row
  (np.bincount), keeps the eligible rows (the set the Retriever's vector search remembers,
  ragmart.retrieval.execution._eligible_rows) and takes a pool of the best (`top`);
- the pool is scored with the statement's own arithmetic, without it (`exact`:
  ragmart.retrieval.bm25 reproduces lexical.scored_sql's float operations as DuckDB binds
  them, its Kahan fsum and its round(, 9)): ids, order and scores are the statement's, to the
  bit. A pool whose top k holds a sum DuckDB's summation order could round either way
  (within a few ulps of a 1e-9 boundary: about one chunk in 10,000) is scored by DuckDB
  instead: the integers the statement reads from the index for those chunks (docs.len,
  dict.df, the term's count in ``terms``) handed to scored_sql via the registered view
  LEXICAL_MATCHES_VIEW. When the eligible set is not exactly the statement's (a clock-bound
  contract's superset) or a distance clause applies (min_similarity), the whole statement
  runs, its eligible chunks restricted to the pool's ids, and re-applies every clause.
- the candidates' scores are float32 weights per posting (`weights`) times each term's idf:
  within SLACK (relative, and at least 1e-6) of the exact ones. The pool holds every row
  within SLACK of the k-th best (of the rows above a sampled floor first: `top`); it is exact
  only when the k-th exact score beats the best score left outside by more than SLACK;
  otherwise it grows. Past POOL_MAX rows (ties: a one-word question ties every chunk holding
  the word once at the same length) a pool DuckDB would score is not worth it: the full
  statement answers (`rank` None); pools scored in numpy have no such cap.

It applies to live searches of a snapshot whose index holds every served row. When the index
lacks rows (the delta a whole-file snapshot keeps between rebuilds, scored from the text at
query time), `load` returns None and the statement answers as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ragmart.relations import LEXICAL_MATCHES_VIEW as MATCHES_VIEW
from ragmart.retrieval import bm25, lexical
from ragmart.retrieval.clauses import DISTANCE_CLAUSES, Render, active_clauses
from ragmart.retrieval.execution import _eligible_rows
from ragmart.retrieval.memory import ServingVectors
from ragmart.retrieval.sql import Tables, literal_list
from ragmart.serving.lexical_index import (
    IGNORE,
    STEMMER,
    ensure_loaded,
    has_index,
    schema_of,
)

K1, B = lexical.K1, lexical.B  # fts' BM25 parameters, as the statement writes them
# relative and absolute: the float32 weights' sum against the exact score (rounded to 1e-9)
SLACK = 1e-6
POOL_MAX = 2_000  # more candidate ids than this: the full statement is cheaper
FACT = "lexical_postings"  # the keys in ServingVectors.facts
ROWS_FACT = "row_of_chunk"
DELTA_FACT = "lexical_delta"  # lexical.has_delta of the snapshot
SAMPLED = 1024  # candidates past this many: first the pools above a floor (`floor`)
UNDECIDED = object()  # _pools: the rows above the floor cannot tell the top k
STEMS_MAX = 100_000  # tokens whose stem a LexicalPostings keeps
_SEPARATORS = re.compile(IGNORE)


def slack(score: float) -> float:
    return SLACK * max(1.0, abs(score))


@dataclass
class LexicalPostings:
    """The postings of one full-text index by term, in the row positions of ServingVectors."""

    fts: str  # the index's schema
    termids: dict[str, int]  # term -> termid
    df: np.ndarray  # int64 by termid: document frequency (dict.df)
    indptr: np.ndarray  # int64 (termids + 1,): term t's postings are [indptr[t], indptr[t+1])
    rows: np.ndarray  # int32: each posting's row position
    tf: np.ndarray  # int32: each posting's term frequency (its count in ``terms``)
    row_lengths: np.ndarray  # int64 by row: docs.len
    length_norms: np.ndarray  # float64 by row: k1 (1 - b + b len / avgdl)
    num_docs: int
    chunk_ids: np.ndarray  # the rows' chunk ids (ServingVectors.chunk_ids, in DuckDB's order)
    exact_terms: bool = True  # whether `exact` can score (avgdl > 0 and finite)
    stopwords: frozenset[str] = frozenset()
    stems: dict[str, str] = field(default_factory=dict)  # token -> stem, as DuckDB stems
    # float32 per posting: tf (k1 + 1) / (tf + length_norm), its BM25 without the idf
    # (relative error 2^-24: `scores`, the candidates; `exact` scores the pool)
    weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tf = self.tf.astype(np.float64)
        self.weights = (tf * (K1 + 1) / (tf + self.length_norms[self.rows])).astype(np.float32)

    @property
    def rows_total(self) -> int:
        return len(self.chunk_ids)

    @classmethod
    def load(cls, conn: duckdb.DuckDBPyConnection, serving_table: str,
             vectors: ServingVectors) -> LexicalPostings | None:
        """The postings of `serving_table`'s index on the read-only `conn` (the one `vectors`
        were loaded from), or None when there is no index or it lacks a served row."""
        if not has_index(conn, serving_table):
            return None
        fts = schema_of(serving_table)
        docs = conn.execute(f"select docid, name, len from {fts}.docs").to_arrow_table()
        chunk_index = pa.array(vectors.chunk_ids.tolist(), pa.string())
        position = pc.fill_null(pc.index_in(docs["name"], value_set=chunk_index), -1
                                ).to_numpy(zero_copy_only=False).astype(np.int64)
        served = np.bincount(position[position >= 0], minlength=vectors.rows)
        if np.count_nonzero(served) < vectors.rows:
            return None  # a served row the index lacks: the delta, scored from the text
        docids = docs["docid"].to_numpy()
        by_docid = np.full(int(docids.max()) + 1 if len(docids) else 0, -1, dtype=np.int64)
        by_docid[docids] = position
        row_lengths = np.zeros(vectors.rows, dtype=np.int64)
        row_lengths[position[position >= 0]] = docs["len"].to_numpy()[position >= 0]
        num_docs, avgdl = conn.execute(f"select num_docs, avgdl from {fts}.stats").fetchone()
        dictionary = conn.execute(f"select termid, term, df from {fts}.dict").to_arrow_table()
        termid = dictionary["termid"].to_numpy()
        size = int(termid.max()) + 1 if len(termid) else 0
        df = np.zeros(size, dtype=np.int64)
        df[termid] = dictionary["df"].to_numpy()
        # one row per occurrence; counted by (termid, row) here: numpy's sort of one int64 key
        # is faster than DuckDB's group by and order by (100k chunks: 4M rows, ~2-3x); each
        # term's postings end up in row order (`exact` finds a row's by binary search)
        occurrences = conn.execute(f"select termid, docid from {fts}.terms").to_arrow_table()
        o_term = occurrences["termid"].to_numpy().astype(np.int64)
        o_doc = occurrences["docid"].to_numpy().astype(np.int64)
        known = (o_doc < len(by_docid)) & (o_term < size)
        o_term, o_row = o_term[known], by_docid[o_doc[known]]
        kept = o_row >= 0  # a docid docs lacks, or a chunk no longer served: no match
        span = max(vectors.rows, 1)
        keys = o_term[kept] * span + o_row[kept]
        keys.sort(kind="stable")  # (timsort: about half np.unique's time here)
        starts = np.flatnonzero(np.concatenate((np.ones(min(len(keys), 1), dtype=bool),
                                                keys[1:] != keys[:-1])))
        tf = np.diff(np.append(starts, len(keys))).astype(np.int64)
        p_term, rows = np.divmod(keys[starts], span)
        indptr = np.zeros(size + 1, dtype=np.int64)
        np.cumsum(np.bincount(p_term, minlength=size), out=indptr[1:])
        return cls(fts=fts, termids=dict(zip(dictionary["term"].to_pylist(), termid.tolist(),
                                             strict=True)),
                   df=df, indptr=indptr, rows=rows.astype(np.int32), tf=tf.astype(np.int32),
                   row_lengths=row_lengths,
                   length_norms=bm25.length_norms(row_lengths, float(avgdl or 1.0)),
                   num_docs=int(num_docs), chunk_ids=vectors.chunk_ids,
                   exact_terms=bool(avgdl) and math.isfinite(avgdl),
                   stopwords=frozenset(word for (word,) in conn.execute(
                       f"select sw from {fts}.stopwords").fetchall()))

    @classmethod
    def attach(cls, conn: duckdb.DuckDBPyConnection, tables: Tables,
               vectors: ServingVectors | None) -> None:
        """Load the postings of `tables.serving` beside `vectors` (a Retriever's, with their
        rows: `vectors.facts`, shared by the copies of ragmart serve's threads), when they
        can answer (see `load`)."""
        if vectors is not None and vectors.records is not None:
            postings = cls.load(conn, tables.serving, vectors)
            vectors.facts[FACT] = postings
            positions(vectors, [])  # the chunk id -> row dict, before the first search
            # (lexical.has_delta's answer, which the statement path asks otherwise)
            vectors.facts.setdefault(DELTA_FACT, postings is None and has_index(
                conn, tables.serving) and lexical.has_delta(conn, tables))

    def terms(self, conn: duckdb.DuckDBPyConnection, question: str) -> list[str]:
        """lexical.terms_of(conn, self.fts, question), without its statement for an ASCII
        question: the index's ``tokenize`` macro is lower(strip_accents(s)), every run of
        characters outside IGNORE replaced by a space, split on spaces, which Python does the
        same way on ASCII; stopwords dropped, then each token stemmed by DuckDB's ``stem``
        once (kept in `stems`). Any other question asks the index's own macro."""
        ensure_loaded(conn)  # stem()
        if not question.isascii():
            return lexical.terms_of(conn, self.fts, question)
        tokens = [token for token in _SEPARATORS.sub(" ", question.lower()).split(" ")
                  if token and token not in self.stopwords]
        stems = {token: self.stems.get(token) for token in tokens}  # (threads share it)
        missing = [token for token, stem in stems.items() if stem is None]
        if missing:
            found = dict(conn.execute(
                f"select token, stem(token, '{STEMMER}') from (select unnest("
                "cast($tokens as varchar[])) as token)", {"tokens": missing}).fetchall())
            stems.update(found)
            if len(self.stems) > STEMS_MAX:
                self.stems.clear()
            self.stems.update(found)
        return sorted(set(stems.values()))

    def term_ids(self, terms: list[str]) -> list[int]:
        """The termids of the distinct `terms` the index's dictionary holds."""
        return [self.termids[t] for t in dict.fromkeys(terms) if t in self.termids]

    def scores(self, ids: list[int]) -> np.ndarray:
        """fts' BM25 of every row for the terms `ids`, within SLACK (float64, 0: no term)."""
        rows, weights = [np.zeros(0, np.int32)], [np.zeros(0)]
        for termid in ids:
            start, end = self.indptr[termid], self.indptr[termid + 1]
            rows.append(self.rows[start:end])
            weights.append(self.weights[start:end] * bm25.idf(self.num_docs,
                                                              int(self.df[termid])))
        return np.bincount(np.concatenate(rows), weights=np.concatenate(weights),
                           minlength=self.rows_total)

    def exact(self, ids: list[int], positions: np.ndarray, k: int
              ) -> list[tuple[str, float]] | None:
        """The top `k` (chunk_id, score) of the rows at `positions` (each holding a term of
        `ids`) as lexical.scored_sql ranks them: the same BM25 score to the bit
        (ragmart.retrieval.bm25: each term's score in DuckDB's operations, Kahan summed in the
        order of `ids`, rounded as its round(, 9)), ordered by (score desc, chunk_id): row
        order, as ServingVectors' rows are ordered by chunk_id. None when a row's score is not
        determined by its terms (a sum within a few ulps of a rounding boundary, where
        DuckDB's summation order decides) and that could change the answer: the caller asks
        DuckDB."""
        if not self.exact_terms:
            return None
        summed, err = np.zeros(len(positions)), np.zeros(len(positions))
        terms = np.zeros(len(positions), dtype=np.int64)
        norms = self.length_norms[positions]
        for termid in ids:
            start, end = self.indptr[termid], self.indptr[termid + 1]
            rows = self.rows[start:end]  # in row order
            at = np.minimum(np.searchsorted(rows, positions), max(len(rows) - 1, 0))
            held = np.flatnonzero(rows[at] == positions) if len(rows) else at[:0]
            if not len(held):
                continue
            term = bm25.term_scores(bm25.idf(int(self.num_docs), int(self.df[termid])),
                                    self.tf[start:end][at[held]], norms[held])
            s, e = summed[held], err[held]
            bm25.kahan_add(s, e, term)
            summed[held], err[held] = s, e
            terms[held] += 1
        low, high = bm25.rounded(summed, terms)
        best = np.lexsort((positions, -low))[:k]
        if not (np.array_equal(low[best], high[best])
                and np.array_equal(best, np.lexsort((positions, -high))[:k])):
            return None  # an undetermined row in the top k (or one that could enter it)
        return list(zip(self.chunk_ids[positions[best]].tolist(), low[best].tolist(),
                        strict=True))

    def matches(self, ids: list[int], positions: np.ndarray) -> pa.Table:
        """(chunk_id, len, df, tf) of the rows at `positions` for each term of `ids` they hold:
        the integers the ranking statement's `indexed` step reads from the index (docs.len,
        dict.df, the count of the term's rows in ``terms``), for lexical.ranking_sql's
        `matches`."""
        wanted = np.zeros(self.rows_total, dtype=bool)
        wanted[positions] = True
        rows, tfs, dfs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for termid in ids:
            start, end = self.indptr[termid], self.indptr[termid + 1]
            keep = wanted[self.rows[start:end]]
            rows.append(self.rows[start:end][keep])
            tfs.append(self.tf[start:end][keep].astype(np.int64))
            dfs.append(np.full(int(keep.sum()), self.df[termid], dtype=np.int64))
        at = np.concatenate(rows)
        return pa.table({"chunk_id": pa.array(self.chunk_ids[at].tolist(), pa.string()),
                         "len": self.row_lengths[at], "df": np.concatenate(dfs),
                         "tf": np.concatenate(tfs)})


def top(scores: np.ndarray, eligible: np.ndarray, k: int,
        exact: Callable[[np.ndarray], list[tuple[str, float]] | None],
        pool_max: int | None = POOL_MAX) -> list[tuple[str, float]] | None:
    """The ranking statement's top `k` (chunk_id, score) among the `eligible` rows (a superset
    is fine: the statement re-applies every clause), from pools of the rows `scores` ranks
    best, each scored by `exact` (the statement's scores of those rows; None: it cannot give
    them); None when a pool would pass `pool_max` rows or `exact` cannot score it (the caller
    runs the full statement). Of many candidates, the pools are first taken among those at or
    above a floor the k-th best reaches (`floor`), which settles most searches without
    partitioning them all; when that leaves the answer open, among all of them."""
    every = len(eligible) == len(scores)
    admitted = scores if every else scores[eligible]
    least = floor(admitted, k)  # (> 0: rows without a term stay out)
    if least is not None:
        above = np.flatnonzero(admitted >= least)
        ranked = _pools(admitted[above], above if every else eligible[above], k, exact,
                        pool_max, least)
        if ranked is not UNDECIDED:
            return ranked  # type: ignore[return-value]
    held = np.flatnonzero(admitted > 0)
    if not len(held):
        return []
    return _pools(admitted[held], held if every else eligible[held], k, exact, pool_max,
                  None)  # type: ignore[return-value]


def floor(s: np.ndarray, k: int) -> float | None:
    """A score the k-th best of `s` reaches, less 2 slacks: the k-th best of every
    `stride`-th row (a subset's k-th best is never above the whole set's k-th best); None for
    fewer than SAMPLED rows, or a sample with fewer than k rows above 0."""
    stride = len(s) // max(SAMPLED, 64 * k)
    if stride < 2:
        return None
    sample = s[::stride]
    kth = float(np.partition(sample, len(sample) - k)[len(sample) - k])
    least = kth - 2 * slack(kth)
    return least if least > 0 else None


def _pools(s: np.ndarray, candidates: np.ndarray, k: int,
           exact: Callable[[np.ndarray], list[tuple[str, float]] | None],
           pool_max: int | None, outside: float | None) -> object:
    """top's pools over the `candidates` with scores `s`, every other candidate scoring below
    `outside` (None: there is none); UNDECIDED when their scores cannot tell (`outside`)."""
    size = min(len(s), max(k, 1))
    while True:
        # the `size` best, and every row within the slack of the last of them
        if size >= len(s):
            pool, bound = np.arange(len(s)), outside
        else:
            part = np.argpartition(-s, size)[: size + 1]
            part = part[np.argsort(-s[part], kind="stable")]
            edge = float(s[part[size - 1]])
            cut = edge - 2 * slack(edge)
            if s[part[size]] >= cut:  # ties past the partition: count them all
                pool = np.flatnonzero(s >= cut)
                rest = s[s < cut]
                bound = float(rest.max()) if len(rest) else outside
            else:
                pool, bound = part[:size], float(s[part[size]])
        if pool_max is not None and len(pool) > pool_max:
            return None
        ranked = exact(candidates[pool])
        if ranked is None:
            return None
        if bound is None or (len(ranked) >= k and ranked[k - 1][1] > bound + slack(bound)):
            return ranked[:k]
        if len(pool) == len(s):
            return UNDECIDED  # (outside is not None: else bound was None)
        size = min(len(s), max(4 * len(pool), 64))


def rank(conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any], tables: Tables,
         vectors: ServingVectors,
         eligible_rows: Callable[[dict[str, Any], ServingVectors], tuple[np.ndarray, bool]]
         | None = None) -> list[tuple[str, float]] | None:
    """lexical.rank of a live search (params['question'], params['k']) from the postings
    `attach` loaded beside `vectors`; None when they cannot answer it (none loaded, another
    serving table, a pool too large: the caller runs the full statement). `eligible_rows`:
    the search's execution._eligible_rows when the caller has it (the question no part of it)."""
    postings = vectors.facts.get(FACT)
    if not isinstance(postings, LexicalPostings) or vectors.serving_table != tables.serving \
            or vectors.records is None:
        return None
    if eligible_rows is None:
        narrow = {name: value for name, value in params.items() if name != "question"}
        eligible, exact_set = _eligible_rows(conn, p, narrow, tables, vectors)
    else:
        eligible, exact_set = eligible_rows(params, vectors)
    ids = postings.term_ids(postings.terms(conn, params["question"]))
    if not ids:  # no term of the question in any indexed chunk
        return []
    # the eligible set is the statement's own (its SQL, remembered): only the scores are left
    # to compute; else (a clock-bound superset, min_similarity) the statement re-applies every
    # clause to the candidates
    lean = exact_set and not active_clauses(params) & DISTANCE_CLAUSES

    def exact(positions: np.ndarray) -> list[tuple[str, float]] | None:
        if lean:  # the statement's scores without it (bm25), when they are determined
            ranked = postings.exact(ids, positions, int(params["k"]))
            if ranked is not None or len(positions) > POOL_MAX:
                return ranked
        only = None if lean else literal_list(postings.chunk_ids[positions].tolist())
        if only is None and not lean:
            return None
        conn.register(MATCHES_VIEW, postings.matches(ids, positions))
        try:
            if lean:
                return lexical.rank_matches(conn, tables, MATCHES_VIEW, int(params["k"]))
            return lexical.rank(conn, p, "live", params, tables, delta=False, only=only,
                                matches=MATCHES_VIEW)
        finally:
            conn.unregister(MATCHES_VIEW)

    return top(postings.scores(ids), eligible, int(params["k"]), exact,
               None if lean and postings.exact_terms else POOL_MAX)


def positions(vectors: ServingVectors, chunk_ids: list[str]) -> np.ndarray:
    """Sorted row positions of `chunk_ids` in `vectors` (ServingVectors.positions without
    hashing every chunk id per call: a dict kept in `vectors.facts`)."""
    index = vectors.fact(ROWS_FACT, lambda: {chunk_id: i for i, chunk_id
                                             in enumerate(vectors.chunk_ids.tolist())})
    try:
        return np.sort(np.fromiter((index[c] for c in chunk_ids), np.int64, len(chunk_ids)))
    except KeyError as missing:
        raise LookupError(f"chunk {missing} is not among the rows in memory of "
                          f"{vectors.serving_table}") from None
