"""What a citation needs beyond the chunk's own columns: where the document came from.

A result already names the document (document_id, document_version, title), the place in it
(section, chunk_id) and the index version it was served from. The one thing the chunk does not
carry is the document's *source location* (a file path, a URL): the producer sends it as a
further column of its source table, which ingest keeps in the document version's ``metadata``
JSON (see the README's producer contract). ``source`` is the first of SOURCE_KEYS whose value
in the version's metadata is a string that is not blank (spaces trimmed), else None.

A search reads it for its winners only, after ranking them (``with_sources``, called where
every path of a search, index, memory, exact, lexical and hybrid, reads its winners' rows:
execution._exact), from the relation that holds the version searched: dim_documents for a live
search (it holds every live version), the history rows for an as-of one. The ranking, the plan
and the clauses never read metadata. The rule is applied in Python (``source_of``) on the raw
metadata: DuckDB's JSON functions cost 1.5-2.5 ms a query here against 0.6 ms for the raw read
(measured on the sample, k=5), too much for every search. The table macro, which has no Python
step, renders the same rule from the same SOURCE_KEYS in SQL (``source_sql``);
tests/python/test_retrieval_contracts.py compares the macro's rows with the Python path's,
field by field, source included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import duckdb

from ragmart.retrieval.clauses import DUCKDB, Render
from ragmart.retrieval.results import RetrievedChunk
from ragmart.retrieval.sql import Tables, literal_list
from ragmart.retrieval.values import sql_text

# the metadata keys that name a document's source location, in order of preference
SOURCE_KEYS = ("source_path", "source_url", "url")


def source_sql(metadata: str, dialect: str = DUCKDB) -> str:
    """`source_of` in SQL, for the table macro, over the metadata JSON `metadata` (an SQL
    expression): the first SOURCE_KEYS value that is a non-blank string."""
    if dialect != DUCKDB:
        raise ValueError(f"no source SQL for the {dialect!r} dialect")
    keys = ", ".join(
        f"nullif(trim(case when try(json_type({metadata}, {sql_text('$.' + key)})) = 'VARCHAR'"
        f" then json_extract_string({metadata}, {sql_text('$.' + key)}) end), '')"
        for key in SOURCE_KEYS
    )
    return f"coalesce({keys})"


def sources_sql(p: Render, tables: Tables) -> str:
    """For the table macro: the CTE `sources` (document_id, document_version, source) of the
    document versions of a CTE `results` (document_id, document_version), from dim_documents
    when the as_of argument is NULL, else from the history."""
    return f"""
sources as (
        select
            documents.document_id,
            documents.document_version,
            {source_sql('documents.metadata')} as source
        from {tables.documents} as documents
        where documents.document_id in (select results.document_id from results)
            and {p('as_of')} is null
        union all
        select
            versions.document_id,
            versions.document_version,
            {source_sql('versions.metadata')} as source
        from (
            select
                history.document_id,
                history.document_version,
                any_value(history.metadata) as metadata
            from {tables.history} as history
            where history.document_id in (select results.document_id from results)
                and {p('as_of')} is not null
            group by history.document_id, history.document_version
        ) as versions
)"""


def source_of(metadata: str | None) -> str | None:
    """The source location in a version's metadata JSON (see the module doc)."""
    try:
        data = json.loads(metadata) if metadata else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key in SOURCE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip(" "):
            return value.strip(" ")
    return None


def with_sources(conn: duckdb.DuckDBPyConnection, chunks: Sequence[RetrievedChunk],
                 tables: Tables, *, as_of: bool) -> tuple[RetrievedChunk, ...]:
    """`chunks` with `source` filled from their document versions' metadata (one query: the
    live documents by document_id, or the history rows by chunk_id, which snapshots index)."""
    if not chunks:
        return tuple(chunks)
    if as_of:
        relation, key = tables.history, sorted({chunk.chunk_id for chunk in chunks})
        column = "chunk_id"
    else:
        relation, key = tables.documents, sorted({chunk.document_id for chunk in chunks})
        column = "document_id"
    listed = literal_list(key)
    where = f"versions.{column} in ({listed})" if listed is not None else \
        f"list_contains(cast(from_json($ids, '[\"VARCHAR\"]') as varchar[]), versions.{column})"
    rows = conn.execute(
        f"select distinct versions.document_id, versions.document_version, versions.metadata "
        f"from {relation} as versions where {where}",
        None if listed is not None else {"ids": json.dumps(key)},
    ).fetchall()
    sources = {(document_id, version): source_of(metadata)
               for document_id, version, metadata in rows}
    return tuple(
        replace(chunk, source=sources.get((chunk.document_id, chunk.document_version)))
        for chunk in chunks
    )
