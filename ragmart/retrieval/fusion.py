"""Search modes: vector (ragmart.retrieval.execution), lexical (ragmart.retrieval.lexical) and
hybrid, their reciprocal rank fusion (RRF).

Hybrid ranks the eligible chunks twice, by cosine distance and by BM25, each to a depth of
max(k, RRF_DEPTH), and fuses the two lists: score(chunk) = sum over the lists holding it of
1 / (RRF_K + its rank there); ties (a chunk at rank r in one list and another at rank r in the
other) are broken by chunk_id. RRF_K = 60 is Cormack, Clarke and Buettcher's constant (SIGIR
2009); on ragmart's judged set 10, 30 and 100 move MRR by at most 0.003 (one question), so
there is no evidence for another value (the README has the figures).

Every mode searches the same eligible set (access, as-of, every contract clause, similarity
included: the question is embedded in every mode so that min_similarity applies to lexical
results too) and returns the rows of the exact search, with their cosine distance. Every mode
abstains when nothing is eligible, with the clause counts; lexical also abstains, with its own
reason (lexical.LEXICAL_NO_MATCH), when no eligible chunk contains a term of the question.
Hybrid never does for that reason: its vector list answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Protocol

import duckdb
import numpy as np

from ragmart.retrieval import lexical, memory_lexical
from ragmart.retrieval.clauses import max_distance
from ragmart.retrieval.contracts import MISSING_GROUPS_POLICIES
from ragmart.retrieval.execution import _eligible_rows, _exact, search_contract
from ragmart.retrieval.memory import ServingVectors
from ragmart.retrieval.request import (
    MISSING_GROUPS_DEFAULT,
    check_inputs,
    check_question,
    floats,
    parameters,
)
from ragmart.retrieval.results import (
    RetrievalError,
    RetrievalResult,
    RetrievedChunk,
)
from ragmart.retrieval.sql import Tables, python_param
from ragmart.serving.lexical_index import has_index

MODES = ("vector", "lexical", "hybrid")
# the mode when none is asked: the one that wins on the judged set with the default (local
# MiniLM) model, see the README's "Hybrid retrieval"
DEFAULT_MODE = "hybrid"
RRF_K = 60
RRF_DEPTH = 50
INDEXED = "lexical_index"  # ServingVectors.facts: the snapshot has a full-text index


def check_mode(mode: str | None) -> str | None:
    """`mode` when it is one of MODES or None (the default); RetrievalError otherwise."""
    if mode is not None and mode not in MODES:
        raise RetrievalError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def resolve_mode(conn: duckdb.DuckDBPyConnection, tables: Tables, mode: str | None,
                 question: str | None) -> str:
    """The mode a search runs: the one asked; without one, DEFAULT_MODE when there is a
    question and the serving set has a full-text index (every dbt build and publish makes
    one), else vector (a database built before lexical search, a search by vector alone)."""
    return default_mode(mode, question, lambda: has_index(conn, tables.serving))


def default_mode(mode: str | None, question: str | None, indexed: Callable[[], bool]) -> str:
    """resolve_mode on any engine: `indexed()` says whether the serving set can be searched by
    terms (DuckDB: a full-text index; PostgreSQL: published BM25 statistics)."""
    if check_mode(mode) is not None:
        return mode
    if question is None or not indexed():
        return "vector"
    return DEFAULT_MODE


def reciprocal_rank_fusion(*rankings: Sequence[str], k: int = RRF_K) -> list[tuple[str, float]]:
    """(chunk_id, fused score) best first, ties by chunk_id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class ModeEngine(Protocol):
    """What `run_mode` needs of an engine (DuckDB here, PostgreSQL in ragmart.retrieval.
    postgres_lexical), all on one serving set read by one search."""

    def vector(self, k: int) -> RetrievalResult:
        """The engine's vector search (search_contract) of the query vector, to depth k."""

    def vector_ranking(self, params: dict[str, Any], depth: int
                       ) -> tuple[RetrievalResult, list[str]] | None:
        """What a fusion takes of `vector(depth)` (the result without its rows, the chunk ids
        best first) when the engine has it without building the rows; None: `vector` answers."""

    def check_index(self) -> None:
        """RetrievalError when the serving set cannot be searched by terms."""

    def rank(self, source: str, params: dict[str, Any]) -> list[tuple[str, float]]:
        """The top params['k'] (chunk_id, BM25 score) of the eligible chunks for
        params['question'], best first, ties by chunk_id; [] when none matches."""

    def rows(self, source: str, params: dict[str, Any], ids: list[str]
             ) -> tuple[RetrievedChunk, ...]:
        """The eligible rows of `ids` (the exact search's, with their distance), any order."""

    def question_terms(self, question: str) -> list[str]:
        """The terms lexical search looks for in `question` (the abstention reason)."""


class _DuckDBModes:
    """ModeEngine on a DuckDB serving set (ragmart.retrieval.lexical, execution)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, tables: Tables,
                 query_vector: np.ndarray | Sequence[float], options: dict[str, Any]) -> None:
        self.conn, self.tables, self.query_vector, self.options = \
            conn, tables, query_vector, options
        self.p = python_param(np.asarray(query_vector).size, lexical.QUESTION_PARAMETER)
        self._eligible_of: tuple[dict[str, Any], tuple[np.ndarray, bool]] | None = None

    def vector(self, k: int) -> RetrievalResult:
        return search_contract(self.conn, self.query_vector, k=k, tables=self.tables,
                               **self.options)

    def vector_ranking(self, params: dict[str, Any], depth: int
                       ) -> tuple[RetrievalResult, list[str]] | None:
        """What run_mode takes of `vector(depth)` for a fusion (the result without its rows,
        the chunk ids best first), from a Retriever's vectors in memory: the same ranking
        (memory.ServingVectors.top) without building the depth rows fusion drops; None when
        search_contract must answer (no rows in memory, an abstention, an inexact set)."""
        vectors, options = self.options.get("vectors"), self.options
        if (vectors is None or vectors.records is None or options.get("exact")
                or vectors.serving_table != self.tables.serving
                or options.get("as_of") is not None
                or options.get("missing_allowed_groups", MISSING_GROUPS_DEFAULT)
                not in MISSING_GROUPS_POLICIES):
            return None
        eligible, exact = self._eligible(params, vectors)
        if not exact:
            return None
        query = np.asarray(self.query_vector, dtype=np.float32).reshape(-1)
        kept = vectors.top_positions(query, eligible, depth, max_distance(params))
        if not kept:
            return None
        contract = options.get("contract")
        result = RetrievalResult(chunks=(), k=depth, strategy="memory",
                                 eligible_chunks=len(eligible), as_of=None,
                                 contract=contract.name if contract else None)
        return result, [vectors.chunk_ids[i] for _, i in kept]

    def _eligible(self, params: dict[str, Any], vectors: ServingVectors
                  ) -> tuple[np.ndarray, bool]:
        """execution._eligible_rows of the search (the question is no part of the set), found
        once for the vector ranking, the terms' and the rows of one search (`params`)."""
        if self._eligible_of is None or self._eligible_of[0] is not params:
            narrow = {name: value for name, value in params.items() if name != "question"}
            self._eligible_of = params, _eligible_rows(self.conn, self.p, narrow, self.tables,
                                                       vectors)
        return self._eligible_of[1]

    def indexed(self) -> bool:
        """has_index of the serving set; of a Retriever's read-only snapshot, asked once."""
        vectors = self.options.get("vectors")
        if vectors is None or vectors.serving_table != self.tables.serving:
            return has_index(self.conn, self.tables.serving)
        return bool(vectors.fact(INDEXED, lambda: has_index(self.conn, self.tables.serving)))

    def check_index(self) -> None:
        if not self.indexed():
            lexical.check_index(self.conn, self.tables)  # its error

    def rank(self, source: str, params: dict[str, Any]) -> list[tuple[str, float]]:
        vectors = self.options.get("vectors")
        if source == "live" and vectors is not None:  # a Retriever's postings in memory
            ranked = memory_lexical.rank(self.conn, self.p, params, self.tables, vectors,
                                         self._eligible)
            if ranked is not None:
                return ranked
        delta = True
        if source == "live" and vectors is not None:  # a read-only snapshot: asked once
            delta = bool(vectors.fact(memory_lexical.DELTA_FACT,
                                      lambda: lexical.has_delta(self.conn, self.tables)))
        return lexical.rank(self.conn, self.p, source, params, self.tables, delta=delta)

    def rows(self, source: str, params: dict[str, Any], ids: list[str]
             ) -> tuple[RetrievedChunk, ...]:
        vectors = self.options.get("vectors")
        if (source == "live" and vectors is not None and vectors.records is not None
                and vectors.serving_table == self.tables.serving):
            # a Retriever's rows in memory (memory.ServingVectors.rows_at), the eligible set
            # its vector search remembers (the question is no part of it): no SQL
            eligible, exact = self._eligible(params, vectors)
            if exact:
                try:
                    positions = memory_lexical.positions(vectors, ids)
                except LookupError as error:
                    raise RetrievalError(str(error)) from error
                positions = positions[_among(positions, eligible)]
                query = np.asarray(self.query_vector, dtype=np.float32).reshape(-1)
                return vectors.rows_at(query, positions, max_distance(params))
        return _exact(self.conn, self.p, source, {**params, "k": len(ids)},
                      self.tables, ids=ids)

    def question_terms(self, question: str) -> list[str]:
        return lexical.question_terms(self.conn, self.tables, question)


def _among(positions: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Which `positions` are in `eligible` (sorted, distinct: _eligible_rows' rows), by binary
    search (np.isin sorts both arrays: ~0.3 ms a search over 100k eligible rows)."""
    at = np.searchsorted(eligible, positions)
    inside = at < len(eligible)
    inside[inside] = eligible[at[inside]] == positions[inside]
    return inside


def search_mode(
    conn: duckdb.DuckDBPyConnection,
    question: str | None,
    query_vector: np.ndarray | Sequence[float],
    *,
    mode: str | None = None,
    k: int = 5,
    tables: Tables,
    **options: Any,
) -> RetrievalResult:
    """`search_contract` (vector), BM25 (lexical) or their fusion (hybrid) for `question`
    embedded as `query_vector`, under the same options (contract, groups, doc_types, as_of,
    now, vectors, missing_allowed_groups); `mode` None: see resolve_mode."""
    engine = _DuckDBModes(conn, tables, query_vector, options)
    mode = default_mode(mode, question, engine.indexed)
    vectors = options.get("vectors")
    with (vectors.products.gathering.expecting()  # a product of the vectors in memory is next
          if mode != "lexical" and vectors is not None and vectors.products is not None
          and options.get("as_of") is None and not options.get("exact") else nullcontext()):
        return run_mode(engine, question, query_vector, mode=mode, k=k,
                        index_version=tables.version, **options)


def run_mode(engine: ModeEngine, question: str | None,
             query_vector: np.ndarray | Sequence[float], *, mode: str, k: int,
             index_version: str, **options: Any) -> RetrievalResult:
    """The search of `mode` (resolved) on `engine`: the vector search itself, or the BM25
    ranking of the eligible chunks (lexical), or its fusion with the vector ranking (hybrid),
    answered with the exact search's rows in that order. The one place both engines rank by
    mode."""
    if mode == "vector":
        return engine.vector(k)
    if not isinstance(question, str) or not question.strip():
        raise RetrievalError(f"--mode {mode} needs the question's text; pass question=")
    check_question(question)
    engine.check_index()
    check_inputs(k, options.get("groups"), options.get("doc_types"), options.get("as_of"))
    depth = max(k, RRF_DEPTH) if mode == "hybrid" else k
    as_of = options.get("as_of")
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    vector = floats(query_vector)
    contract = options.get("contract")
    params = parameters(vector, k=depth, contract=contract, groups=options.get("groups"),
                        doc_types=options.get("doc_types"), as_of=as_of, now=options.get("now"),
                        **({"missing_allowed_groups": options["missing_allowed_groups"]}
                           if "missing_allowed_groups" in options else {}))
    params["question"] = question
    source = "as_of" if as_of is not None else "live"
    # hybrid: the vector ranking first, its product shared with the searches asking now
    ranked = engine.vector_ranking(params, depth) if mode == "hybrid" else None
    by_terms = engine.rank(source, params)
    result = RetrievalResult(chunks=(), k=k, strategy="bm25", as_of=as_of,
                             contract=contract.name if contract else None)
    if mode == "hybrid" or not by_terms:
        # nothing eligible: the same abstention and clause counts in every mode
        result, vector_ids = ranked or (engine.vector(depth), None)
        if result.abstained:
            return replace(result, k=k)
    if mode == "lexical":
        if not by_terms:
            terms = ", ".join(engine.question_terms(question)) or "none"
            return replace(result, chunks=(), k=k, strategy="none", abstained=True,
                           reason=lexical.LEXICAL_NO_MATCH.format(terms=terms), clauses=())
        ids = [chunk_id for chunk_id, _ in by_terms]
        strategy, fused = "bm25", None
    else:
        if vector_ids is None:
            vector_ids = [c.chunk_id for c in result]
        fused = reciprocal_rank_fusion(vector_ids,
                                       [chunk_id for chunk_id, _ in by_terms], k=RRF_K)
        ids = [chunk_id for chunk_id, _ in fused[:k]]
        strategy = f"rrf({result.strategy}+bm25)"
    rows = {c.chunk_id: c for c in engine.rows(source, params, ids)}
    # each row copied once: its rank, index version and scores
    by_score, by_fusion = dict(by_terms), dict(fused or ())
    chunks = tuple(rows[chunk_id].replaced(rank=rank, index_version=index_version,
                                           lexical_score=by_score.get(chunk_id),
                                           fused_score=by_fusion.get(chunk_id))
                   for rank, chunk_id in enumerate((i for i in ids if i in rows), start=1))
    return replace(result, chunks=chunks, k=k, strategy=strategy)
