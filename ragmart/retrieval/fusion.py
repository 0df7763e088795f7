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
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import duckdb
import numpy as np

from ragmart.retrieval import lexical
from ragmart.retrieval.execution import _exact, search_contract
from ragmart.retrieval.request import check_inputs, parameters
from ragmart.retrieval.results import RetrievalError, RetrievalResult, RetrievedChunk
from ragmart.retrieval.sql import Tables, python_param
from ragmart.serving.lexical_index import has_index

MODES = ("vector", "lexical", "hybrid")
# the mode when none is asked: the one that wins on the judged set with the default (local
# MiniLM) model, see the README's "Hybrid retrieval"
DEFAULT_MODE = "hybrid"
RRF_K = 60
RRF_DEPTH = 50


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
    if check_mode(mode) is not None:
        return mode
    if question is None or not has_index(conn, tables.serving):
        return "vector"
    return DEFAULT_MODE


def reciprocal_rank_fusion(*rankings: Sequence[str], k: int = RRF_K) -> list[tuple[str, float]]:
    """(chunk_id, fused score) best first, ties by chunk_id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _in_order(conn: duckdb.DuckDBPyConnection, tables: Tables, source: str,
              params: dict[str, Any], ids: list[str], dims: int) -> tuple[RetrievedChunk, ...]:
    """The rows of the eligible chunks `ids` (the exact search's, with their distance), in the
    order of `ids`, ranked from 1."""
    p = python_param(dims, lexical.QUESTION_PARAMETER)
    rows = {c.chunk_id: c for c in _exact(conn, p, source, {**params, "k": len(ids)}, tables,
                                          ids=ids)}
    return tuple(replace(rows[chunk_id], rank=rank, index_version=tables.version)
                 for rank, chunk_id in enumerate((i for i in ids if i in rows), start=1))


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
    mode = resolve_mode(conn, tables, mode, question)
    if mode == "vector":
        return search_contract(conn, query_vector, k=k, tables=tables, **options)
    if not isinstance(question, str) or not question.strip():
        raise RetrievalError(f"--mode {mode} needs the question's text; pass question=")
    lexical.check_index(conn, tables)
    check_inputs(k, options.get("groups"), options.get("doc_types"), options.get("as_of"))
    depth = max(k, RRF_DEPTH) if mode == "hybrid" else k
    as_of = options.get("as_of")
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    vector = [float(x) for x in np.asarray(query_vector, dtype=np.float32).reshape(-1)]
    contract = options.get("contract")
    params = parameters(vector, k=depth, contract=contract, groups=options.get("groups"),
                        doc_types=options.get("doc_types"), as_of=as_of, now=options.get("now"),
                        **({"missing_allowed_groups": options["missing_allowed_groups"]}
                           if "missing_allowed_groups" in options else {}))
    params["question"] = question
    p = python_param(len(vector), lexical.QUESTION_PARAMETER)
    source = "as_of" if as_of is not None else "live"
    by_terms = lexical.rank(conn, p, source, params, tables)
    result = RetrievalResult(chunks=(), k=k, strategy="bm25", as_of=as_of,
                             contract=contract.name if contract else None)
    if mode == "hybrid" or not by_terms:
        # nothing eligible: the same abstention and clause counts in every mode
        result = search_contract(conn, query_vector, k=depth, tables=tables, **options)
        if result.abstained:
            return replace(result, k=k)
    if mode == "lexical":
        if not by_terms:
            terms = ", ".join(lexical.question_terms(conn, tables, question)) or "none"
            return replace(result, chunks=(), k=k, strategy="none", abstained=True,
                           reason=lexical.LEXICAL_NO_MATCH.format(terms=terms), clauses=())
        ids = [chunk_id for chunk_id, _ in by_terms]
        strategy = "bm25"
    else:
        fused = reciprocal_rank_fusion([c.chunk_id for c in result],
                                       [chunk_id for chunk_id, _ in by_terms], k=RRF_K)
        ids = [chunk_id for chunk_id, _ in fused[:k]]
        strategy = f"rrf({result.strategy}+bm25)"
    chunks = _in_order(conn, tables, source, params, ids, len(vector))
    return replace(result, chunks=chunks, k=k, strategy=strategy)
