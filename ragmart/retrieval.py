"""Top-k retrieval over the serving set, deterministic and exact where filters apply.

Ordering is (distance, chunk_id): the same index and query give the same rows in the same order.
Without filters the HNSW index (fct_chunk_vector_index_v1, append-only) proposes candidates,
which are joined back to the live rows (fct_chunk_embeddings_v1) and re-ranked exactly; the
candidate pool widens until k live rows are found, so rows the index still holds for chunks no
longer served never shorten an answer. With filters the search runs over the eligible rows only
(a WHERE after an HNSW top-k could return fewer than k rows).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np

from ragmart.config import Settings
from ragmart.duck import connect
from ragmart.providers import EmbeddingProvider, get_provider

SERVING_TABLE = "fct_chunk_embeddings_v1"
INDEX_TABLE = "fct_chunk_vector_index_v1"
# HNSW candidates fetched per requested row before the exact re-rank.
CANDIDATE_FACTOR = 4
MIN_CANDIDATES = 40


class RetrievalError(RuntimeError):
    pass


@dataclass(frozen=True)
class RetrievedChunk:
    rank: int
    distance: float
    chunk_id: str
    document_id: str
    document_version: int
    document_checksum: str
    document_type: str | None
    title: str | None
    section: str
    section_type: str
    chunk_index: int
    chunk_text: str
    chunker_version: str
    embedding_model: str
    created_at: dt.datetime
    dbt_invocation_id: str
    embedding_invocation_id: str

    def to_dict(self) -> dict:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


_COLUMNS = [
    name for name in RetrievedChunk.__dataclass_fields__ if name not in ("rank", "distance")
]


def _serving_models(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_name = $name",
        {"name": table},
    ).fetchone()[0]
    if not exists:
        raise RetrievalError(
            f"the serving table {table} does not exist in this database; run `dbt build` "
            "(or `make run`) first"
        )
    rows = conn.execute(f"select distinct embedding_model from {table}").fetchall()
    return [row[0] for row in rows]


def _search_index(
    conn: duckdb.DuckDBPyConnection,
    params: dict,
    *,
    k: int,
    dims: int,
    table: str,
    index_table: str,
) -> list[tuple]:
    """HNSW candidates joined to the live rows; the pool grows until k live rows are found."""
    select_list = ", ".join(f"served.{c}" for c in _COLUMNS)
    distance = f"array_cosine_distance(embedding, $q::float[{dims}])"
    indexed = conn.execute(f"select count(*) from {index_table}").fetchone()[0]
    live = conn.execute(f"select count(*) from {table}").fetchone()[0]
    wanted = min(k, live)
    n_candidates = max(k * CANDIDATE_FACTOR, MIN_CANDIDATES)
    while True:
        sql = f"""
            with candidates as (
                select chunk_id, {distance} as distance
                from {index_table}
                order by {distance}
                limit {int(n_candidates)}
            )
            select {select_list}, candidates.distance
            from candidates
            inner join {table} as served on served.chunk_id = candidates.chunk_id
            order by candidates.distance asc, served.chunk_id asc
            limit {int(k)}
        """
        rows = conn.execute(sql, params).fetchall()
        if len(rows) >= wanted or n_candidates >= indexed:
            break
        n_candidates *= 4
    if len(rows) < wanted:
        # The index answered short (vss defect after deletes + reopen, or an index behind the
        # serving set): answer exactly rather than short.
        rows = conn.execute(
            f"select {', '.join(_COLUMNS)}, {distance} as distance from {table} "
            f"order by distance asc, chunk_id asc limit {int(k)}",
            params,
        ).fetchall()
    return rows


def search(
    conn: duckdb.DuckDBPyConnection,
    query_vector: np.ndarray,
    *,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
    table: str = SERVING_TABLE,
    index_table: str = INDEX_TABLE,
) -> list[RetrievedChunk]:
    """The k nearest chunks to `query_vector` (cosine), eligible under the filters."""
    if k < 1:
        raise RetrievalError(f"k must be at least 1, got {k}")
    vector = [float(x) for x in np.asarray(query_vector, dtype=np.float32).reshape(-1)]
    dims = len(vector)
    params: dict = {"q": vector}
    where = ""
    if doc_types:
        where = "where document_type in (select unnest($doc_types::varchar[]))"
        params["doc_types"] = list(doc_types)
    select_list = ", ".join(_COLUMNS)
    distance = f"array_cosine_distance(embedding, $q::float[{dims}])"
    if where:
        # Exact search over the eligible rows: never filter after an approximate top-k.
        sql = f"""
            select {select_list}, {distance} as distance
            from {table} {where}
            order by distance asc, chunk_id asc
            limit {int(k)}
        """
        rows = conn.execute(sql, params).fetchall()
    else:
        rows = _search_index(conn, params, k=k, dims=dims, table=table, index_table=index_table)
    names = [*_COLUMNS, "distance"]
    results = []
    for rank, row in enumerate(rows, start=1):
        values = dict(zip(names, row, strict=True))
        values["distance"] = float(values["distance"])
        results.append(RetrievedChunk(rank=rank, **values))
    return results


def retrieve(
    question: str,
    *,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
    db_path: str | Path | None = None,
    provider: EmbeddingProvider | None = None,
) -> list[RetrievedChunk]:
    """Embed `question` with the provider the index was built with and return the top k chunks."""
    if not question or not question.strip():
        raise RetrievalError("the question is empty; pass the text to search for")
    settings = Settings.from_env()
    path = Path(db_path) if db_path is not None else settings.db_path
    if not path.exists():
        raise RetrievalError(f"database {path} does not exist; run `make run` or `dbt build`")
    provider = provider or get_provider(settings.embedding_provider)
    conn = connect(path, read_only=True)
    try:
        models = _serving_models(conn, SERVING_TABLE)
        if models and provider.model not in models:
            raise RetrievalError(
                f"the index holds vectors of {models} but the provider {provider.name!r} embeds "
                f"with {provider.model!r}; set RAGMART_EMBEDDING_PROVIDER to the provider the "
                "index was built with"
            )
        query_vector = provider.embed([question])[0]
        return search(conn, query_vector, k=k, doc_types=doc_types)
    finally:
        conn.close()
