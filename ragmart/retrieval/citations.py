"""What a citation needs beyond the chunk's own columns: where the document came from.

A result already names the document (document_id, document_version, title), the place in it
(section, chunk_id) and the index version it was served from. The one thing the chunk does not
carry is the document's *source location* (a file path, a URL): the producer sends it as a
further column of its source table, which ingest keeps in the document version's ``metadata``
JSON (see the README's producer contract). ``source`` is the first of SOURCE_KEYS that the
version's metadata holds as non-blank text, else None.

It is read after the search, for the k winners' document versions only, from the relation
that holds the version searched: dim_documents for a live search (which holds every live
version, so every live winner), the history table for an as-of search. The search itself
never reads metadata, so the ranking, the plan and the clauses are untouched, and every path
of a search (index, memory, exact) gets the same field from this one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import duckdb

from ragmart.retrieval.clauses import DUCKDB, Render
from ragmart.retrieval.results import RetrievedChunk
from ragmart.retrieval.sql import Tables, python_param
from ragmart.retrieval.values import sql_text

# the metadata keys that name a document's source location, in order of preference
SOURCE_KEYS = ("source_path", "source_url", "url")


def source_sql(metadata: str, dialect: str = DUCKDB) -> str:
    """SQL for the source location in the metadata JSON `metadata` (an SQL expression): the
    first SOURCE_KEYS value that is non-blank text; metadata that is not JSON has none."""
    if dialect != DUCKDB:
        raise ValueError(f"no source SQL for the {dialect!r} dialect")
    keys = ", ".join(
        f"nullif(trim(try(json_extract_string({metadata}, {sql_text('$.' + key)}))), '')"
        for key in SOURCE_KEYS
    )
    return f"coalesce({keys})"


def sources_sql(p: Render, tables: Tables, source: str = "both") -> str:
    """The CTE `sources` (document_id, document_version, source) of the document versions of
    a CTE `results` (document_id, document_version): from dim_documents for a live search,
    from the history for an as-of one; `source` as in ragmart.retrieval.sql ('both': by the
    as_of parameter being NULL, as the table macro searches)."""
    if source not in ("live", "as_of", "both"):
        raise ValueError(f"unknown source {source!r}")
    live_only = f"\n            and {p('as_of')} is null" if source == "both" else ""
    as_of_only = f"\n                and {p('as_of')} is not null" if source == "both" else ""
    live = f"""
        select
            documents.document_id,
            documents.document_version,
            {source_sql('documents.metadata')} as source
        from {tables.documents} as documents
        where documents.document_id in (select results.document_id from results){live_only}"""
    as_of = f"""
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
            where history.document_id in (select results.document_id from results){as_of_only}
            group by history.document_id, history.document_version
        ) as versions"""
    parts = [live] * (source != "as_of") + [as_of] * (source != "live")
    return "\nsources as (" + "\n        union all".join(parts) + "\n)"


def with_sources(conn: duckdb.DuckDBPyConnection, chunks: Sequence[RetrievedChunk],
                 tables: Tables, *, as_of: bool) -> tuple[RetrievedChunk, ...]:
    """`chunks` with `source` filled from their document versions' metadata (one query over
    the winners' documents)."""
    if not chunks:
        return tuple(chunks)
    ids = json.dumps(sorted({chunk.document_id for chunk in chunks}))
    rows = conn.execute(f"""
        with results as (
            select unnest(cast(from_json($ids, '["VARCHAR"]') as varchar[])) as document_id
        ),{sources_sql(python_param(0), tables, "as_of" if as_of else "live")}
        select document_id, document_version, source from sources
    """, {"ids": ids}).fetchall()
    sources = {(document_id, version): source for document_id, version, source in rows}
    return tuple(
        replace(chunk, source=sources.get((chunk.document_id, chunk.document_version)))
        for chunk in chunks
    )
