"""How to search the live serving set: the strategy and its knobs.

The search never filters after an approximate top-k. The plan evaluates the document clauses on
the visible documents (one row per live document, no vectors: ~10x fewer rows than chunks):

1. nothing eligible: 'none' (the search abstains, with the counts of ragmart.retrieval.
   abstention);
2. few eligible chunks: 'ids', an exact scan over exactly those chunks; a small serving set:
   'scan', the exact scan;
3. otherwise 'index': the HNSW index (fct_chunk_vector_index_<v>, plus the exact delta of
   vectors not indexed yet) proposes ``k / selectivity * OVERSAMPLE`` candidates, checked
   against every clause and re-ranked; the pool widens until k eligible rows are found, and the
   search falls back to the exact scan past MAX_CANDIDATES (ragmart.retrieval.execution).

As-of searches scan the history exactly, and a Retriever's live searches use the vectors in
memory instead (ragmart.retrieval.memory). The final query re-applies every clause: the plan
only decides where to look. The knobs were measured with bench/retrieval.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from ragmart.retrieval.clauses import DOCUMENT, DUCKDB, Render, active_clauses, predicates
from ragmart.retrieval.sql import Tables, documents_sql, literal_list, used

EXACT_MAX_DOCUMENTS = 400  # at most this many eligible documents: list their chunks...
EXACT_MAX_ELIGIBLE = 1_500  # ...and at most this many chunks: exact scan over them
EXACT_IDS_ALWAYS = 300  # this few chunks: exact over them whatever the table size
EXACT_SCAN_MAX_ROWS = 25_000  # a serving set this small: scan it exactly (~30 ms at 20k)
OVERSAMPLE = 4.0  # HNSW candidates per expected eligible row needed (recall >= 0.99)
# the HNSW search's ef (vss' default is 64): at 100,000 chunks of 1536 dimensions the default
# missed a query's whole top 10 (recall@10 0.975 over 40 queries at 100% and 50% eligible);
# 128 and 200 gave 1.000 at 384, 1536 and 3072 with p50 within the noise (bench/retrieval.py)
HNSW_EF_SEARCH = 200
MIN_CANDIDATES = 40
MAX_CANDIDATES = 4_096  # a larger pool is slower than the exact scan: fall back


@dataclass(frozen=True)
class Plan:
    """How to search the live set: 'ids' (exact over `ids`), 'scan' (exact over the whole
    eligible set) or 'index' (HNSW at `selectivity`), or 'none' (nothing is eligible)."""

    strategy: str
    ids: list[str] | None = None
    selectivity: float = 1.0


def plan(conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
         tables: Tables) -> Plan:
    """Pick the cheapest search that is exact or, through the index, recalls >= 0.99."""
    predicate = "\n            and ".join(
        predicates(p, DUCKDB, DOCUMENT, active=active_clauses(params)) or ["true"])
    sql = f"""
    with documents as ({documents_sql(p, "live", tables)}
    )
    select documents.document_id, count(*) over () as eligible_documents
    from documents
    where
            {predicate}
    limit {EXACT_MAX_DOCUMENTS + 1}
    """
    rows = conn.execute(sql, used(sql, params)).fetchall()
    if not rows:
        return Plan("none", [])
    n_documents = int(rows[0][1])
    live = conn.execute(f"select count(*) from {tables.serving}").fetchone()[0]
    literal = literal_list([row[0] for row in rows]) \
        if n_documents <= EXACT_MAX_DOCUMENTS else None
    if literal is not None:
        ids = [row[0] for row in conn.execute(
            f"select chunk_id from {tables.serving} where document_id in ({literal})"
        ).fetchall()]
        if not ids:
            return Plan("none", [])
        selectivity = len(ids) / max(1, live)
        # a chunk_id list is a scan filter: cheap for few ids, dearer than a plain scan of a
        # small table for many (measured: 2,000 ids 130 ms, the 20k-row scan 30 ms)
        if len(ids) <= EXACT_IDS_ALWAYS or (
            len(ids) <= EXACT_MAX_ELIGIBLE and live > EXACT_SCAN_MAX_ROWS
        ):
            return Plan("ids", ids, selectivity)
    else:
        total = conn.execute(f"select count(*) from {tables.documents}").fetchone()[0]
        selectivity = n_documents / max(1, total)
    if live <= EXACT_SCAN_MAX_ROWS:
        return Plan("scan", None, selectivity)
    return Plan("index", None, selectivity)
