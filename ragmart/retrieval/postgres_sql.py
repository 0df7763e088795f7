"""The SQL of a search on PostgreSQL + pgvector: the frame of ragmart.retrieval.sql in the
`postgres` dialect, around the same clause objects (each clause's `postgres` method).

Shared with DuckDB (ragmart.retrieval.sql): the parameters and their types, the access rule
(`access_sql`: ``&&`` where DuckDB writes list_has_any), the as-of window, the visible document
versions (`documents_sql`) and the result columns. Written here: the schema-qualified tables,
the rows of the serving publication (every data table keeps the rows of several publications:
a row belongs to publication P when ``published_in <= P and (removed_in is null or
removed_in > P)``), the chunk source with pgvector's cosine distance ``<=>``, and the two
rankings: `search_sql` (exact, ordered by (distance, chunk_id)) and `candidates_sql` (ordered
by distance alone, the one order pgvector's HNSW index answers; ragmart.retrieval.postgres
re-ranks the candidates exactly).

Two renderings of a parameter: `python_param` (``%(name)s``, psycopg binds it; lists travel as
JSON text, as on DuckDB) and `function_param` (an argument of the SQL function
``ragmart.retrieve``, ragmart.serving.postgres.access).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ragmart.retrieval.clauses import POSTGRES, Render
from ragmart.retrieval.results import COLUMNS
from ragmart.retrieval.sql import (
    Tables,
    as_of_window,
    clause_conditions,
    documents_sql,
    parameter_types,
    ranked_sql,
)
from ragmart.serving.postgres.schema import SCHEMA

# the serving publication's id: a parameter of the Python path, a variable of the function
PUBLICATION = "publication"
# The plan of both searches (ragmart.retrieval.postgres and the SQL function ragmart.retrieve):
# at most this many rows eligible before similarity, the exact scan over them; more, pgvector's
# HNSW index (iterative scan) proposes candidates. Eligible, not stored, as DuckDB's planner
# weighs it: a selective filter through the index loses recall (bench/serving.py at 100k
# chunks: 0.66 at 1% eligible), the exact scan of few rows does not, and is as fast.
EXACT_MAX_ELIGIBLE = 25_000
# pgvector's settings for the index path (both searches). ef_search 400 (pgvector's default is
# 40): at 100k chunks recall@10 0.978 -> 1.000 at 100% eligible and 0.973 -> 0.998 at 10%,
# p50 27 -> 32 ms (bench/serving.py's data); past 400 it gained 0.002 at most, the index's
# build parameters more (ragmart.serving.postgres.schema.HNSW_EF_CONSTRUCTION). strict_order:
# relaxed_order measured the same recall and no faster (the candidates are re-ranked exactly
# either way). max_scan_tuples: past it, the exact scan answers.
EF_SEARCH = 400
# ... and more for a large publication: one per CHUNKS_PER_EF_SEARCH of its chunks, up to
# pgvector's maximum. At 1M chunks (bench/serving_recall.py, m 16, ef_construction 128, 100
# queries, load 4-6) recall@10 was 0.929 at 100% eligible and 0.913 at 10% with 400, 0.979
# and 0.973 with 1000 (p50 171 and 113 ms, measured after 400's 231 and 202: no dearer); at
# 100k, 1000 gained nothing (1.000 either way) and cost p95 21.6 -> 30-36 ms. So 400 up to
# 400,000 chunks, 1000 from 1,000,000. No ef_search reached 0.99 at 1M on that graph; the
# graph a large table now gets does (ragmart.serving.postgres.schema.LARGE_GRAPH_ROWS).
EF_SEARCH_MAX = 1000
CHUNKS_PER_EF_SEARCH = 1000
TIE_MARGIN = 8  # candidates beyond k, so that a tie at the k-th distance is seen whole
ITERATIVE_SCAN = "strict_order"
MAX_SCAN_TUPLES = 50_000
# The plan's first look (both searches): the eligible rows among a page sample of about
# SAMPLE_ROWS chunks (TABLESAMPLE SYSTEM, repeatable: the same pages for the same publication),
# scaled to the publication's chunks. An estimate PLAN_MARGIN times EXACT_MAX_ELIGIBLE or more
# goes through the index, one at most EXACT_MAX_ELIGIBLE / PLAN_MARGIN is scored exactly, and
# only in between are the eligible rows counted (with the cap). Counting up to 25,001 eligible
# rows cost 32-50 ms of a 100% eligible search at 100,000 chunks (p95 224 ms under load).
SAMPLE_ROWS = 2_000
PLAN_MARGIN = 2

_TYPES = {"varchar": "text", "varchar[]": "text[]", "double": "double precision"}


def postgres_type(duckdb_type: str) -> str:
    """A search parameter's PostgreSQL type from its DuckDB one (float[d] -> vector(d))."""
    vector = re.fullmatch(r"float\[(\d+)\]", duckdb_type)
    return f"vector({vector[1]})" if vector else _TYPES.get(duckdb_type, duckdb_type)


@dataclass(frozen=True)
class PostgresTables(Tables):
    """The relations of one index version in the `ragmart` schema, and the rows of the
    publication a search reads (`visible`)."""

    @property
    def serving(self) -> str:
        return f"{SCHEMA}.{super().serving}"

    @property
    def history(self) -> str:
        return f"{SCHEMA}.{super().history}"

    @property
    def documents(self) -> str:
        return f"{SCHEMA}.{super().documents}"

    @property
    def access(self) -> str:
        return f"{SCHEMA}.{super().access}"

    def visible(self, alias: str, p: Render) -> str | None:
        return visible_sql(alias, p(PUBLICATION))


def visible_sql(alias: str, publication: str) -> str:
    """SQL true for the rows of `alias` that belong to `publication` (an SQL expression)."""
    return (f"{alias}.published_in <= {publication} and ({alias}.removed_in is null "
            f"or {alias}.removed_in > {publication})")


def python_param(dims: int, extra: Mapping[str, str] | None = None) -> Render:
    """%(name)s placeholders (psycopg), typed. Lists travel as JSON text as on DuckDB (the same
    parameter values serve both engines), the query vector as pgvector's text form."""
    types = {**parameter_types(dims, extra), PUBLICATION: "bigint"}

    def render(name: str) -> str:
        if types[name] == "varchar[]":
            return (f"(case when cast(%({name})s as jsonb) is null then null else array("
                    f"select jsonb_array_elements_text(cast(%({name})s as jsonb))) end)")
        return f"cast(%({name})s as {postgres_type(types[name])})"

    return render


def function_param(name: str) -> str:
    """An argument of the SQL function ragmart.retrieve (qualified: never a column), or its
    variable holding the serving publication."""
    return "serving_publication" if name == PUBLICATION else f"retrieve.{name}"


# the chunk columns the clauses and the ranking read (the narrow first phase of a search)
_NARROW_COLUMNS = ("chunk_id", "document_id", "document_version", "section",
                   "section_chunk_index", "section_chunk_count", "is_split_paragraph")
# every column a result or a clause reads
_COLUMNS = tuple(dict.fromkeys(
    [c for c in COLUMNS if c not in ("completeness", "document_valid_to")]
    + list(_NARROW_COLUMNS)))


def chunks_sql(p: Render, source: str, tables: Tables, *, only: str | None = None,
               narrow: bool = False, sample: str | None = None) -> str:
    """The chunk rows of the publication with their cosine distance: the serving set ('live')
    or the history rows live at as_of ('as_of'). `only`: SQL of a text[] of chunk_ids to
    restrict to (the clauses still apply); `sample`: SQL of the percentage of the table's
    pages to read (TABLESAMPLE SYSTEM, repeatable)."""
    columns = _NARROW_COLUMNS if narrow else _COLUMNS
    select = ", ".join(f"chunks.{c}" for c in columns)
    conditions = [tables.visible("chunks", p)]
    if source == "live":
        table = tables.serving
        valid_to = "" if narrow else ", cast(null as timestamp) as document_valid_to"
    elif source == "as_of":
        table = tables.history
        valid_to = "" if narrow else ", chunks.document_valid_to"
        conditions.append(as_of_window(p, "chunks"))
    else:
        raise ValueError(f"unknown source {source!r}")
    if only:
        conditions.append(f"chunks.chunk_id = any({only})")
    where = "\n            and ".join(c for c in conditions if c)
    sampled = f" tablesample system ({sample}) repeatable (0)" if sample else ""
    return f"""
        select {select}{valid_to},
            chunks.embedding <=> {p('query_vector')} as distance
        from {table} as chunks{sampled}
        where {where}"""


def eligible_sql(p: Render, source: str, tables: Tables, *, similarity: bool = True,
                 only: str | None = None, narrow: bool = False,
                 active: frozenset[str] | None = None, materialized: bool = False,
                 index_order: bool = False, sample: str | None = None) -> str:
    """CTEs `documents`, `eligible_documents` and `eligible` (the eligible chunk rows with
    their distance), as ragmart.retrieval.sql.eligible_sql. Not materialized, PostgreSQL
    inlines them: with `index_order`, an ORDER BY distance over `eligible` is pgvector's index
    order; without, the eligible documents' chunks may be read through the document key's
    btree (a semi join: few eligible documents, few rows read)."""
    document_predicate, chunk_where = clause_conditions(p, POSTGRES, active, similarity)
    chunks = chunks_sql(p, source, tables, only=only, narrow=narrow, sample=sample)
    admitted = "(chunks.document_id, chunks.document_version) in (" \
        "select eligible_documents.document_id, eligible_documents.document_version " \
        "from eligible_documents)"
    if index_order:
        # in coalesce(): a hashed subplan filtering the index scan in its order (a top-level
        # IN becomes a hash join, whose output PostgreSQL re-sorts after a full scan)
        admitted = f"coalesce({admitted}, false)"
    return f"""
    documents as ({documents_sql(p, source, tables, POSTGRES)}
    ),
    eligible_documents as (
        select documents.document_id, documents.document_version
        from documents
        where
            {document_predicate}
    ),
    eligible as{" materialized" if materialized else ""} (
        select chunks.*
        from ({chunks}
        ) as chunks
        where
            {admitted}
            and {chunk_where}
    )"""


def search_sql(p: Render, source: str, tables: Tables, *, limit: str,
               only: str | None = None, active: frozenset[str] | None = None) -> str:
    """The ranked eligible rows, exact, ordered by (distance, chunk_id): the eligible set is
    materialized, so no index order stands in for the exact one."""
    eligible = eligible_sql(p, source, tables, only=only, active=active, materialized=True)
    return f"""
    with {eligible}{ranked_sql(limit)}"""


def exact_ids_sql(p: Render, source: str, tables: Tables, *, limit: str,
                  active: frozenset[str] | None = None) -> str:
    """chunk_id of the first `limit` eligible rows ranked by (distance, chunk_id), exact, from
    the narrow columns: the exact scan's first step, whose ids `search_sql(only=...)` then
    ranks with the result columns. Materialized as `search_sql` is (no index order stands in
    for the exact one); the rows it keeps are a few hundred bytes narrower than the result
    columns' (chunk text, titles, lineage), which PostgreSQL otherwise copies for every
    eligible row (10,000 at 10% of 100,000 chunks) to return ten."""
    eligible = eligible_sql(p, source, tables, narrow=True, active=active, materialized=True)
    return f"""
    with {eligible}
    select eligible.chunk_id
    from eligible
    order by eligible.distance asc, eligible.chunk_id asc
    limit {limit}"""


def candidates_sql(p: Render, tables: Tables, *, limit: str,
                   active: frozenset[str] | None = None) -> str:
    """(chunk_id, distance) of the nearest eligible live rows in pgvector's index order
    (distance alone), every clause applied as the index scan goes."""
    return f"""
    with {eligible_sql(p, "live", tables, narrow=True, active=active, index_order=True)}
    select eligible.chunk_id, eligible.distance
    from eligible
    order by eligible.distance
    limit {limit}
"""


def eligible_count_sql(p: Render, tables: Tables, *, active: frozenset[str] | None = None
                       ) -> str:
    """How many live rows of the publication every clause but the distance ones admits,
    counted up to EXACT_MAX_ELIGIBLE + 1 (all the plan needs to know; no vector is read)."""
    return f"""
    with {eligible_sql(p, "live", tables, similarity=False, narrow=True, active=active)}
    select count(*) from (select from eligible limit {EXACT_MAX_ELIGIBLE + 1}) as counted"""


def ef_search_sql(p: Render) -> str:
    """SQL: the index path's hnsw.ef_search, as text for set_config: EF_SEARCH, or one per
    CHUNKS_PER_EF_SEARCH of the publication's chunks, or k + TIE_MARGIN, whichever is most,
    at most EF_SEARCH_MAX."""
    chunks = (f"(select published.chunks from {SCHEMA}.publications as published "
              f"where published.publication_id = {p(PUBLICATION)})")
    return (f"cast(least({EF_SEARCH_MAX}, greatest({EF_SEARCH}, {p('k')} + {TIE_MARGIN}, "
            f"{chunks} / {CHUNKS_PER_EF_SEARCH})) as text)")


def _sample_percent(p: Render) -> str:
    """SQL: the percentage of pages holding about SAMPLE_ROWS of the publication's chunks."""
    return (f"(select coalesce(least(100, 100.0 * {SAMPLE_ROWS} / greatest(published.chunks, 1)),"
            f" 100) from {SCHEMA}.publications as published "
            f"where published.publication_id = {p(PUBLICATION)})")


def eligible_estimate_sql(p: Render, tables: Tables, *,
                          active: frozenset[str] | None = None) -> str:
    """An estimate of the live rows every clause but the distance ones admits: those of a page
    sample (about SAMPLE_ROWS chunks), scaled to the publication's chunks (no vector read)."""
    percent = _sample_percent(p)
    # index_order's form of the admission (a hashed subplan filtering the sample scan): without
    # statistics (a table not yet analyzed) the planner chose a nested loop over the sample and
    # the eligible documents, 40 ms instead of 3 at 20,000 chunks
    eligible = eligible_sql(p, "live", tables, similarity=False, narrow=True, active=active,
                            sample=percent, index_order=True)
    return f"""
    with {eligible}
    select count(*) * 100.0 / {percent} from eligible"""


def plan_by_estimate(estimate: float) -> str | None:
    """The plan an estimate of the eligible rows decides: 'index', 'exact', or None (count
    them, up to EXACT_MAX_ELIGIBLE + 1). The SQL function renders the same thresholds."""
    if estimate >= EXACT_MAX_ELIGIBLE * PLAN_MARGIN:
        return "index"
    if estimate <= EXACT_MAX_ELIGIBLE / PLAN_MARGIN:
        return "exact"
    return None


def count_sql(tables: Tables, p: Render) -> str:
    """The number of live rows of the publication (what the plan weighs)."""
    return (f"select count(*) from {tables.serving} as chunks "
            f"where {tables.visible('chunks', p)}")



def source_of_sql(tables: Tables, p: Render, alias: str, *, as_of: bool) -> str:
    """The source location of the result row `alias` (document_id, document_version, chunk_id):
    the `source` column the publish wrote (ragmart.serving.postgres.transfer, by the rule of
    ragmart.retrieval.citations) on the publication's row of its document version, from the
    live documents, or for an as-of search from its history row."""
    relation, key = (tables.history, "chunk_id") if as_of else (tables.documents, "document_id")
    return f"""(
            select versions.source from {relation} as versions
            where versions.{key} = {alias}.{key}
                and versions.document_version = {alias}.document_version
                and {tables.visible('versions', p)}
            limit 1)"""


def with_source_sql(query: str, tables: Tables, p: Render, *, as_of: bool) -> str:
    """The ranked rows of `query` (rank, distance, the result columns) and their `source`."""
    return f"""
    select ranked.*, {source_of_sql(tables, p, "ranked", as_of=as_of)} as source
    from ({query}
    ) as ranked
    order by ranked.rank"""


def sources_sql(tables: Tables, p: Render, *, as_of: bool) -> str:
    """(document_id, document_version, source) of the rows given as the parallel arrays
    %(document_ids)s, %(document_versions)s and %(chunk_ids)s."""
    return f"""
    select keyed.document_id, keyed.document_version,
        {source_of_sql(tables, p, "keyed", as_of=as_of)}
    from unnest(cast(%(document_ids)s as text[]), cast(%(document_versions)s as bigint[]),
        cast(%(chunk_ids)s as text[])) as keyed (document_id, document_version, chunk_id)"""
