"""Top-k retrieval over the serving set under retrieval contracts, exact and deterministic.

Ordering is (distance, chunk_id): the same index and query give the same rows in the same order.

A search has a *source* and *clauses*. The source is what the caller may see of the live
serving set (fct_chunk_embeddings_<v>) or, with ``as_of``, of the chunk versions live at that
time (fct_chunk_history_<v>); see ragmart.retrieval.sql. The clauses (ragmart.retrieval.
clauses) come from a retrieval contract and the caller's document-type filter; a chunk is
*eligible* when it passes them all. `search_contract` runs the strategy the planner picks
(ragmart.retrieval.planner) or, for a long-lived reader, the in-memory candidates
(`_via_memory`); nothing eligible: it abstains, with the counts of ragmart.retrieval.abstention.

A Retriever keeps the serving vectors in memory (ragmart.retrieval.memory) and replaces the
plan for live searches: the eligible rows of a contract come from the exact eligibility SQL
(remembered per parameters, `_eligible_rows`), numpy proposes the nearest of them, and the
exact SQL search over those ids answers; the pool widens until no row left out can be nearer.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ragmart.catalog import table_exists
from ragmart.relations import DEFAULT_VERSION
from ragmart.retrieval import planner
from ragmart.retrieval.abstention import abstention_reason, clause_counts
from ragmart.retrieval.citations import with_sources
from ragmart.retrieval.clauses import (
    CLAUSES,
    DISTANCE_CLAUSES,
    Render,
    active_clauses,
    max_distance,
)
from ragmart.retrieval.contracts import MISSING_GROUPS_POLICIES, Contract
from ragmart.retrieval.memory import ServingVectors
from ragmart.retrieval.request import (
    MISSING_GROUPS_DEFAULT,
    Groups,
    check_inputs,
    floats,
    parameters,
)
from ragmart.retrieval.results import (
    COLUMNS,
    RetrievalError,
    RetrievalResult,
    RetrievedChunk,
    rows_to_chunks,
)
from ragmart.retrieval.sql import (
    Tables,
    eligible_sql,
    literal_list,
    python_param,
    search_sql,
    used,
)
from ragmart.retrieval.values import completeness_sql

# how long an eligible set computed with a clock-bound clause (max_document_age) stays usable
# as a superset of the eligible set (documents only age out): the exact search re-applies the
# clause on the pool
ELIGIBILITY_TTL = dt.timedelta(seconds=60)


def search_contract(
    conn: duckdb.DuckDBPyConnection,
    query_vector: np.ndarray | Sequence[float],
    *,
    k: int = 5,
    contract: Contract | None = None,
    groups: Groups = None,
    doc_types: Sequence[str] | None = None,
    as_of: dt.datetime | None = None,
    now: dt.datetime | None = None,
    exact: bool = False,
    tables: Tables | None = None,
    vectors: ServingVectors | None = None,
    missing_allowed_groups: str = MISSING_GROUPS_DEFAULT,
) -> RetrievalResult:
    """The k nearest eligible chunks to `query_vector` (cosine) that a caller in `groups` may
    see, or an abstention (nothing eligible, with or without a contract).

    `groups`: the caller's groups; None or [] is no group (only documents without
    allowed_groups, under missing_allowed_groups: allow); ALL_GROUPS is the operator switch.
    `missing_allowed_groups` applies without a contract (a contract carries its own).
    `as_of` (naive UTC) searches the versions live at that time, exactly. `exact` forces the
    exact scan. `vectors` (the serving set's vectors in memory, loaded from this read-only
    connection: see Retriever) proposes the candidates of a live search instead of the index;
    the answer is the exact one."""
    check_inputs(k, groups, doc_types, as_of)
    if missing_allowed_groups not in MISSING_GROUPS_POLICIES:
        raise RetrievalError(f"missing_allowed_groups must be deny or allow, got "
                             f"{missing_allowed_groups!r}")
    tables = tables or Tables.for_version(DEFAULT_VERSION)
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    vector = floats(query_vector)
    dims = len(vector)
    p = python_param(dims)
    params = parameters(vector, k=k, contract=contract, groups=groups, doc_types=doc_types,
                        as_of=as_of, now=now, missing_allowed_groups=missing_allowed_groups)
    source = "as_of" if as_of is not None else "live"
    common = {"k": k, "contract": contract.name if contract else None, "as_of": as_of}
    chunks: tuple[RetrievedChunk, ...] = ()
    strategy = "none"
    eligible: int | None
    if vectors is not None and source == "live" and not exact:
        if vectors.serving_table != tables.serving:
            raise RetrievalError(f"the vectors in memory are {vectors.serving_table}'s, not "
                                 f"{tables.serving}'s")
        eligible, chunks = _via_memory(conn, p, params, tables, vectors, k=k,
                                       query=np.asarray(vector, dtype=np.float32))
        strategy = "memory" if eligible or chunks else "none"
    elif source == "as_of" or exact:
        ids = _eligible_chunk_ids(conn, p, source, params, tables).to_pylist()
        eligible = len(ids)
        if ids:
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables, ids=ids)
    else:
        chosen = planner.plan(conn, p, params, tables)
        eligible = len(chosen.ids) if chosen.ids is not None else None
        if chosen.strategy == "ids":
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables, ids=chosen.ids)
        elif chosen.strategy == "scan":
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables)
        elif chosen.strategy == "index":
            strategy, chunks = _via_index(conn, p, params, tables, k=k,
                                          selectivity=chosen.selectivity)
    chunks = tuple(replace(chunk, index_version=tables.version) for chunk in chunks)
    if chunks:
        return RetrievalResult(chunks=chunks, strategy=strategy, eligible_chunks=eligible,
                               **common)
    requested = {"doc_types": list(doc_types) if doc_types else None}
    funnel = clause_counts(conn, params, source=source, contract=contract, requested=requested,
                           dims=dims, tables=tables)
    # the strategy is left out: the plan weighs the whole serving set's size, hidden rows too
    return RetrievalResult(
        chunks=(), strategy="none", eligible_chunks=eligible, abstained=True,
        reason=abstention_reason(contract, funnel, groups=groups, requested=requested),
        clauses=tuple(funnel.counts), **common,
    )


def _exact(conn: duckdb.DuckDBPyConnection, p: Render, source: str, params: dict[str, Any],
           tables: Tables, *, ids: Sequence[str] | None = None) -> tuple[RetrievedChunk, ...]:
    """Exact scan over the eligible rows (over `ids` only, when given: same clauses), in two
    phases: rank on the narrow columns, then read the k winners' rows (materializing the wide
    columns of every candidate cost ~2.5x more at 1,000 candidates, measured)."""
    only = literal_list(ids) if ids else None
    ranked_sql = f"""
    with {eligible_sql(p, source, tables, only=only, narrow=True,
                       active=active_clauses(params))}
    select eligible.chunk_id, eligible.distance
    from eligible
    order by eligible.distance asc, eligible.chunk_id asc
    limit {p('k')}
    """
    ranked = conn.execute(ranked_sql, used(ranked_sql, params)).fetchall()
    winners = literal_list([chunk_id for chunk_id, _ in ranked])
    if not ranked:
        return ()
    if winners is None:  # an id SQL cannot carry as a literal: the single-statement search
        sql = search_sql(p, source, tables, limit=p("k"), only=only)
        chunks = rows_to_chunks(conn.execute(sql, used(sql, params)).fetchall())
        return with_sources(conn, chunks, tables, as_of=source == "as_of")
    table = tables.history if source == "as_of" else tables.serving
    valid_to = "chunks.document_valid_to" if source == "as_of" \
        else "cast(null as timestamp) as document_valid_to"
    names = [c for c in COLUMNS if c not in ("completeness", "document_valid_to")]
    rows = conn.execute(f"""
        select {", ".join(f"chunks.{c}" for c in names)}, {valid_to},
            {completeness_sql()} as completeness
        from {table} as chunks
        where chunks.chunk_id in ({winners})
    """).fetchall()
    by_id = {row[0]: row for row in rows}
    order = [*names, "document_valid_to", "completeness"]
    out = []
    for rank, (chunk_id, distance) in enumerate(ranked, start=1):
        values = dict(zip(order, by_id[chunk_id], strict=True))
        out.append(RetrievedChunk(rank=rank, distance=float(distance), **values))
    # every search reads its winners' rows here, so every mode's results carry their source
    return with_sources(conn, out, tables, as_of=source == "as_of")


def _via_index(
    conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
    tables: Tables, *, k: int, selectivity: float,
) -> tuple[str, tuple[RetrievedChunk, ...]]:
    """HNSW candidates (plus the exact delta) restricted to the eligible live rows and ranked
    by (distance, chunk_id); the pool widens until k eligible rows are found, then falls back
    to the exact scan. Distances are recomputed on the served rows, as the exact path does."""
    indexed: int | None = None
    delta_exists = table_exists(conn, tables.delta)
    n_candidates = max(planner.MIN_CANDIDATES, math.ceil(k / selectivity * planner.OVERSAMPLE))
    farthest_allowed = max_distance(params)
    vector = {"query_vector": params["query_vector"]}
    distance = f"array_cosine_distance(embedding, {p('query_vector')})"
    conn.execute(f"set hnsw_ef_search = {planner.HNSW_EF_SEARCH}")
    while n_candidates <= planner.MAX_CANDIDATES:
        pool = conn.execute(
            f"select chunk_id, {distance} as d from {tables.index} order by d "
            f"limit {int(n_candidates)}", vector,
        ).fetchall()
        farthest = pool[-1][1] if pool else None
        if delta_exists:  # vectors not indexed yet: exact, the delta is small
            pool += conn.execute(
                f"select chunk_id, {distance} as d from {tables.delta} order by d "
                f"limit {int(n_candidates)}", vector,
            ).fetchall()
        if literal_list([chunk_id for chunk_id, _ in pool]) is None:
            break
        chunks = _exact(conn, p, "live", params, tables, ids=[chunk_id for chunk_id, _ in pool])
        if len(chunks) >= k:
            return "hnsw", chunks
        if indexed is None:
            indexed = conn.execute(f"select count(*) from {tables.index}").fetchone()[0]
        if n_candidates >= indexed:
            return "hnsw", chunks
        if farthest_allowed is not None and farthest is not None \
                and farthest > farthest_allowed:
            return "hnsw", chunks  # the pool reaches past min_similarity: nothing nearer left
        n_candidates *= 4
    # The index answered short (a contract the oversampling missed, or the vss defect after
    # deletes + reopen): answer exactly rather than short.
    return "hnsw+exact", _exact(conn, p, "live", params, tables)


def _eligible_chunk_ids(conn: duckdb.DuckDBPyConnection, p: Render, source: str,
                        params: dict[str, Any], tables: Tables) -> pa.ChunkedArray:
    """The chunk_ids eligible before similarity, as an Arrow column (no vector is read)."""
    eligible = eligible_sql(p, source, tables, similarity=False, narrow=True,
                            active=active_clauses(params))
    sql = f"with {eligible}\nselect chunk_id from eligible"
    return conn.execute(sql, used(sql, params)).to_arrow_table()["chunk_id"]


def _eligible_rows(conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
                   tables: Tables, vectors: ServingVectors) -> tuple[np.ndarray, bool]:
    """(row positions in `vectors` of the live chunks every clause but the distance ones
    admits, whether that set is exact). The set is computed by the exact search's eligibility
    SQL and remembered per parameters. It depends on the clock only through the clock-bound
    clauses (max_document_age), whose eligible set only shrinks as time passes: one computed up
    to ELIGIBILITY_TTL earlier is a superset (candidates only; the exact search drops the rows
    that aged out since)."""
    active = active_clauses(params) - DISTANCE_CLAUSES
    timed = any(c.clock_bound for c in CLAUSES if c.name in active)
    key = tuple((name, repr(value)) for name, value in sorted(params.items())
                if name not in ("query_vector", "k", "now", *DISTANCE_CLAUSES))
    now = params["now"]
    hit = vectors.eligibility(key)
    if hit is not None:
        rows, at = hit
        if not timed or at == now:
            return rows, True
        if at is not None and at <= now < at + ELIGIBILITY_TTL:
            return rows, False
    try:
        rows = vectors.positions(_eligible_chunk_ids(conn, p, "live", params, tables))
    except LookupError as error:
        raise RetrievalError(str(error)) from error
    vectors.remember(key, rows, now if timed else None)
    return rows, True


def _via_memory(
    conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any], tables: Tables,
    vectors: ServingVectors, *, k: int, query: np.ndarray,
) -> tuple[int | None, tuple[RetrievedChunk, ...]]:
    """(how many chunks are eligible before similarity, or None when not counted; the exact
    answer), with candidates scored in memory: each pool goes through the exact SQL search
    (every clause, DuckDB's distances); a pool is final once its k-th result is nearer than any
    row left outside it."""
    rows, exact_count = _eligible_rows(conn, p, params, tables, vectors)
    farthest_allowed = max_distance(params)
    if exact_count and vectors.records is not None:  # the same answer without search SQL
        return len(rows), vectors.top(query, rows, k, farthest_allowed)
    chunks: tuple[RetrievedChunk, ...] = ()
    for ids, bound in vectors.candidate_rounds(query, rows, k):
        if literal_list(ids) is None:  # an id SQL cannot carry as a literal
            return len(rows), _exact(conn, p, "live", params, tables)
        chunks = _exact(conn, p, "live", params, tables, ids=ids)
        if bound is None or (len(chunks) >= k and chunks[k - 1].distance < bound):
            break
        if farthest_allowed is not None and bound > farthest_allowed:
            break  # every row outside the pool is past min_similarity
    # a superset (rows that aged out since it was computed were dropped) is not a count
    return (len(rows) if exact_count else None), chunks
