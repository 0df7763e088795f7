"""Top-k retrieval served from PostgreSQL + pgvector, with the answers of DuckDB serving.

What serves is the row of ``ragmart.serving`` (the content publication and its index version,
written by ragmart.serving.postgres); a search reads it once and then only that publication's
rows (ragmart.retrieval.postgres_sql), so a publish or rollback switching it meanwhile never
mixes two publications in one answer. The clauses, access rule, as-of window, order (distance,
then chunk_id) and abstention (reason and clause counts, ragmart.retrieval.abstention) are
those of DuckDB serving, rendered in the `postgres` dialect.

The plan (`search_contract`):

- as-of searches and few eligible rows (at most postgres_sql.EXACT_MAX_ELIGIBLE admitted by
  every clause but the distance ones, counted with a LIMIT): the exact scan over them, as
  DuckDB's planner plans by what is eligible, not by the table's size;
- otherwise pgvector's HNSW index with ``hnsw.iterative_scan = strict_order``: the index scan
  goes on past filtered-out rows until the limit is met, so a filter never leaves fewer than k
  candidates while k rows are eligible; the candidates are re-ranked exactly (distance, then
  chunk_id; the pool widens while a tie crosses its edge), and when the index stops short
  (``hnsw.max_scan_tuples``) the search answers from the exact scan rather than short.

`search_contract(conn, query_vector, ...)` runs one search on a psycopg connection (what
bench/serving.py times); `PostgresRetriever` is what ragmart.Retriever and ragmart.retrieve
become when RAGMART_SERVING_URL is set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ragmart.retrieval import postgres_lexical, postgres_sql
from ragmart.retrieval.abstention import abstention_reason, clause_counts
from ragmart.retrieval.clauses import DISTANCE, POSTGRES, active_clauses
from ragmart.retrieval.contracts import MISSING_GROUPS_POLICIES, Contract
from ragmart.retrieval.fusion import default_mode, run_mode
from ragmart.retrieval.postgres_sql import (
    PostgresTables,
    candidates_sql,
    eligible_count_sql,
    eligible_estimate_sql,
    exact_ids_sql,
    python_param,
    search_sql,
    sources_sql,
    visible_sql,
)
from ragmart.retrieval.request import MISSING_GROUPS_DEFAULT, Groups, check_inputs, parameters
from ragmart.retrieval.results import (
    RetrievalError,
    RetrievalResult,
    RetrievedChunk,
    rows_to_chunks,
)
from ragmart.serving.postgres.schema import PUBLICATIONS, SERVING


@dataclass(frozen=True)
class Serving:
    """The publication a search reads: its id (the content its rows carry) and version."""

    publication: int
    version: str


def serving(conn: Any, version: str | None = None) -> Serving:
    """What serves (ragmart.serving), or for another `version` its latest published content.
    RetrievalError when nothing is published there."""
    row = conn.execute(f"select publication_id, version from {SERVING}").fetchone() \
        if _exists(conn, SERVING) else None
    if row is None:
        raise RetrievalError("nothing is published on the serving database "
                             "(RAGMART_SERVING_URL); run `ragmart publish v1` first")
    if version is None or version == row[1]:
        return Serving(int(row[0]), row[1])
    PostgresTables.for_version(version)  # a valid version name, or RetrievalError
    latest = conn.execute(
        f"select max(publication_id) from {PUBLICATIONS} where version = %s "
        "and action = 'publish' and pruned_at is null", (version,)).fetchone()[0]
    if latest is None:
        raise RetrievalError(f"index version {version} was never published to the serving "
                             f"database (or pruned since); {row[1]} serves (ragmart publish "
                             f"{version})")
    return Serving(int(latest), version)


def embedding_models(conn: Any, at: Serving) -> list[str]:
    """The embedding model(s) of the publication's vectors (what embeds its questions)."""
    row = conn.execute(f"select embedding_model from {PUBLICATIONS} where publication_id = %s",
                       (at.publication,)).fetchone()
    if row is not None and row[0]:
        return [row[0]]
    tables = PostgresTables.for_version(at.version)
    return [model for (model,) in conn.execute(
        f"select distinct chunks.embedding_model from {tables.serving} as chunks "
        f"where {visible_sql('chunks', '%(publication)s')}",
        {"publication": at.publication}).fetchall()]


def _exists(conn: Any, relation: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


def search_contract(
    conn: Any,
    query_vector: np.ndarray | Sequence[float],
    *,
    k: int = 5,
    contract: Contract | None = None,
    groups: Groups = None,
    doc_types: Sequence[str] | None = None,
    as_of: dt.datetime | None = None,
    now: dt.datetime | None = None,
    exact: bool = False,
    version: str | None = None,
    at: Serving | None = None,
    missing_allowed_groups: str = MISSING_GROUPS_DEFAULT,
) -> RetrievalResult:
    """ragmart.retrieval.execution.search_contract on a psycopg connection to the serving
    database: the same arguments and answers. `version`: an index version other than the one
    serving (its latest publication); `at`: the publication to read (default: what serves
    now). `exact` forces the exact scan. Runs in one transaction of its own."""
    check_inputs(k, groups, doc_types, as_of)
    if missing_allowed_groups not in MISSING_GROUPS_POLICIES:
        raise RetrievalError(f"missing_allowed_groups must be deny or allow, got "
                             f"{missing_allowed_groups!r}")
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    vector = [float(x) for x in np.asarray(query_vector, dtype=np.float32).reshape(-1)]
    dims = len(vector)
    with conn.transaction():
        at = at or serving(conn, version)
        tables = PostgresTables.for_version(at.version)
        p = python_param(dims)
        params = parameters(vector, k=k, contract=contract, groups=groups,
                            doc_types=doc_types, as_of=as_of, now=now,
                            missing_allowed_groups=missing_allowed_groups)
        params["publication"] = at.publication
        _check_dimensions(conn, tables, dims)
        source = "as_of" if as_of is not None else "live"
        active = active_clauses(params)
        if source == "as_of" or exact or _few_eligible(conn, p, params, tables, active):
            strategy, rows = "exact", _exact(conn, p, source, params, tables, active)
        else:
            strategy, rows = _via_index(conn, p, params, tables, active, k=k)
        common = {"k": k, "contract": contract.name if contract else None, "as_of": as_of}
        chunks = tuple(replace(chunk, index_version=at.version)
                       for chunk in rows_to_chunks(rows))
        chunks = _with_sources(conn, p, chunks, tables, params, as_of=source == "as_of")
        if chunks:
            return RetrievalResult(chunks=chunks, strategy=strategy, **common)
        requested = {"doc_types": list(doc_types) if doc_types else None}
        funnel = clause_counts(conn, params, source=source, contract=contract,
                               requested=requested, dims=dims, tables=tables,
                               dialect=POSTGRES)
    before_similarity = [c for c, level in zip(funnel.counts[1:], funnel.levels, strict=True)
                         if level != DISTANCE]
    eligible = (before_similarity[-1] if before_similarity else funnel.counts[0]).remaining
    return RetrievalResult(
        chunks=(), strategy="none", eligible_chunks=eligible, abstained=True,
        reason=abstention_reason(contract, funnel, groups=groups, requested=requested),
        clauses=tuple(funnel.counts), **common,
    )


def _with_sources(conn: Any, p: Any, chunks: tuple[RetrievedChunk, ...], tables: PostgresTables,
                  params: dict[str, Any], *, as_of: bool) -> tuple[RetrievedChunk, ...]:
    """`chunks` with `source` read from their document versions' published source column."""
    if not chunks:
        return chunks
    keys = {"document_ids": [c.document_id for c in chunks],
            "document_versions": [c.document_version for c in chunks],
            "chunk_ids": [c.chunk_id for c in chunks]}
    rows = conn.execute(sources_sql(tables, p, as_of=as_of), {**params, **keys}).fetchall()
    sources = {(document_id, version): source for document_id, version, source in rows}
    return tuple(replace(c, source=sources.get((c.document_id, c.document_version)))
                 for c in chunks)


def _check_dimensions(conn: Any, tables: PostgresTables, dims: int) -> None:
    """RetrievalError when the query vector's size is not the version's (pgvector would raise
    on the first row compared, after reading it)."""
    row = conn.execute(
        "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = "
        "to_regclass(%s) and attname = 'embedding'", (tables.serving,)).fetchone()
    if row is None:
        raise RetrievalError(f"the serving database has no {tables.serving}; publish "
                             f"{tables.version} (ragmart publish {tables.version})")
    if row[0] != f"vector({dims})":
        raise RetrievalError(f"the query vector has {dims} dimensions but "
                             f"{tables.version} holds {row[0]}; embed the question with the "
                             "model the version was built with")


def _few_eligible(conn: Any, p: Any, params: dict[str, Any], tables: PostgresTables,
                  active: frozenset[str]) -> bool:
    """Whether at most EXACT_MAX_ELIGIBLE live rows pass every clause but the distance ones
    (the exact scan's domain): decided by a page sample's estimate when it is clear
    (postgres_sql.plan_by_estimate), else counted (the count stops one row past it)."""
    estimate = conn.execute(eligible_estimate_sql(p, tables, active=active), params
                            ).fetchone()[0]
    plan = postgres_sql.plan_by_estimate(float(estimate))
    if plan is not None:
        return plan == "exact"
    sql = eligible_count_sql(p, tables, active=active)
    return conn.execute(sql, params).fetchone()[0] <= postgres_sql.EXACT_MAX_ELIGIBLE


def _exact(conn: Any, p: Any, source: str, params: dict[str, Any], tables: PostgresTables,
           active: frozenset[str], ids: list[str] | None = None) -> list[tuple]:
    """The ranked result rows, exact: over the chunks `ids` (the index path's candidates), or
    over every eligible row in two steps of one statement: the first k ids from the narrow
    columns (exact_ids_sql, an InitPlan), then those ranked with the result columns.
    (distance, chunk_id) is a total order, so the k rows and their ranks are the one-step
    scan's."""
    if ids is None:
        only = f"array({exact_ids_sql(p, source, tables, limit=p('k'), active=active)})"
    else:
        only, params = "cast(%(chunk_ids)s as text[])", {**params, "chunk_ids": ids}
    sql = search_sql(p, source, tables, limit=p("k"), only=only, active=active)
    return conn.execute(sql, params).fetchall()


def _via_index(conn: Any, p: Any, params: dict[str, Any], tables: PostgresTables,
               active: frozenset[str], *, k: int) -> tuple[str, list[tuple]]:
    """HNSW candidates in index order (iterative scan: filtered rows do not count against the
    limit), re-ranked exactly over those ids; the exact scan when the index stops short."""
    # the three settings for this transaction (set_config's true: SET LOCAL) in one round trip
    conn.execute(
        f"select set_config('hnsw.iterative_scan', '{postgres_sql.ITERATIVE_SCAN}', true), "
        f"set_config('hnsw.ef_search', {postgres_sql.ef_search_sql(p)}, true), "
        f"set_config('hnsw.max_scan_tuples', '{postgres_sql.MAX_SCAN_TUPLES}', true)", params)
    limit = k + postgres_sql.TIE_MARGIN
    while True:
        sql = candidates_sql(p, tables, limit=str(limit), active=active)
        pool = conn.execute(sql, params).fetchall()
        if len(pool) < k:  # fewer than k eligible rows, or the scan stopped: answer exactly
            return "hnsw+exact", _exact(conn, p, "live", params, tables, active)
        if len(pool) < limit or pool[-1][1] > pool[k - 1][1]:
            break
        limit *= 4  # the k-th distance ties past the pool's edge: widen
    ids = [chunk_id for chunk_id, _ in pool]
    return "hnsw", _exact(conn, p, "live", params, tables, active, ids)


class _PostgresModes:
    """ragmart.retrieval.fusion.ModeEngine on publication `at` of the serving database."""

    def __init__(self, conn: Any, at: Serving, query_vector: np.ndarray | Sequence[float],
                 options: dict[str, Any]) -> None:
        self.conn, self.at, self.query_vector, self.options = conn, at, query_vector, options
        self.tables = PostgresTables.for_version(at.version)
        self.p = python_param(np.asarray(query_vector).size)

    def vector(self, k: int) -> RetrievalResult:
        return search_contract(self.conn, self.query_vector, k=k, at=self.at, **self.options)

    def vector_ranking(self, params: dict[str, Any], depth: int) -> None:
        return None  # no vectors in memory: `vector` answers

    def check_index(self) -> None:
        postgres_lexical.check_terms(self.conn, self.at.version, self.at.publication)

    def rank(self, source: str, params: dict[str, Any]) -> list[tuple[str, float]]:
        params = {**params, "publication": self.at.publication}
        return postgres_lexical.rank(self.conn, self.p, source, params, self.tables)

    def rows(self, source: str, params: dict[str, Any], ids: list[str]
             ) -> tuple[RetrievedChunk, ...]:
        params = {**params, "publication": self.at.publication, "k": len(ids)}
        rows = _exact(self.conn, self.p, source, params, self.tables, active_clauses(params),
                      ids)
        return _with_sources(self.conn, self.p, rows_to_chunks(rows), self.tables, params,
                             as_of=source == "as_of")

    def question_terms(self, question: str) -> list[str]:
        return postgres_lexical.question_terms(question)


def search_mode(conn: Any, question: str | None, query_vector: np.ndarray | Sequence[float],
                *, mode: str | None = None, k: int = 5, version: str | None = None,
                at: Serving | None = None, **options: Any) -> RetrievalResult:
    """ragmart.retrieval.fusion.search_mode on the serving database: vector search
    (`search_contract`), BM25 over the publication's statistics (lexical) or their fusion
    (hybrid), under the same options; all of it reads one publication (`at`, default: what
    serves when it starts) in one transaction. `mode` None: hybrid when there is a question and
    the publication carries BM25 statistics, else vector (fusion.default_mode)."""
    with conn.transaction():
        at = at or serving(conn, version)
        mode = default_mode(mode, question, lambda: postgres_lexical.has_terms(
            conn, at.version, at.publication))
        engine = _PostgresModes(conn, at, query_vector, options)
        return run_mode(engine, question, query_vector, mode=mode, k=k,
                        index_version=at.version, **options)


class PostgresReader:
    """A reader of the serving database for many queries: one connection (autocommit: each
    search is a transaction of its own, on the publication serving when it starts). What
    ragmart.Retriever holds when RAGMART_SERVING_URL is set; it follows publishes and
    rollbacks by reading ragmart.serving at every search."""

    def __init__(self, url: str, *, index_version: str | None = None) -> None:
        from ragmart.serving.postgres.settings import connect

        self.version = index_version
        self.conn = connect(url, autocommit=True)
        try:
            self.serving()  # something is published, or RetrievalError now
        except BaseException:
            self.conn.close()
            raise

    def serving(self) -> Serving:
        return serving(self.conn, self.version)

    def search(self, query_vector: np.ndarray | Sequence[float], *, mode: str | None = None,
               question: str | None = None, **options: Any) -> RetrievalResult:
        """A search in `mode` (vector, lexical or hybrid; None: see `search_mode`)."""
        return search_mode(self.conn, question, query_vector, mode=mode, version=self.version,
                           **options)

    def close(self) -> None:
        self.conn.close()
