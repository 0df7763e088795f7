"""The SQL of a search, rendered per dialect from one template.

Every path of a search (ragmart.retrieval.execution) and the DuckDB table macro
``ragmart_retrieve_<v>`` (ragmart.retrieval.macro) run SQL rendered here, with each clause's
predicates taken from its object (ragmart.retrieval.clauses): the Python path and the SQL path
apply the same clauses to the same parameter values. They differ
only in how a parameter is written (`python_param`: $name; `macro_param`: the macro's named
argument).

Access is not a clause: it defines the source (`documents_sql`). A caller sees a document
version only when its groups are admitted both by the version's own allowed_groups and by the
document's latest known ones (dim_documents for a live search; for an as-of search
dim_document_access, which keeps deleted documents too): narrowing access applies at once to
every point in time. A document without allowed_groups follows ``missing_allowed_groups``. No
groups means no group, never every group; the one way to see everything is the operator switch
``all_groups``. Every clause, count and error only ever meets visible versions.

The frame around the clauses (access, the as-of window, the ranking) is written here for
DuckDB; PostgreSQL's (ragmart.retrieval.postgres_sql) shares the access rule, the as-of window
and the document versions (`documents_sql`), and writes its own chunk source and ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragmart.relations import (
    ACCESS_TABLE,
    DOCUMENTS_TABLE,
    InvalidVersionError,
    Relations,
)
from ragmart.retrieval.clauses import (
    CHUNK,
    CLAUSES,
    DIALECTS,
    DISTANCE,
    DOCUMENT,
    DUCKDB,
    POSTGRES,
    Render,
    predicates,
)
from ragmart.retrieval.results import COLUMNS, RetrievalError
from ragmart.retrieval.values import completeness_sql, sql_text


@dataclass(frozen=True)
class Tables(Relations):
    """The relations a search reads: the index version's (ragmart.relations), and the
    documents and their latest known access, which every version shares."""

    @classmethod
    def for_version(cls, version: str) -> Tables:
        try:
            return cls(version)
        except InvalidVersionError as exc:
            raise RetrievalError(str(exc)) from None

    @property
    def documents(self) -> str:
        return DOCUMENTS_TABLE

    @property
    def access(self) -> str:
        return ACCESS_TABLE

    def visible(self, alias: str, p: Render) -> str | None:
        """SQL true for the rows of `alias` the search may read beyond the frame's own rules
        (None: every row; a Postgres table keeps the rows of several publications)."""
        return None


# The request's parameters with their SQL types (the clauses add theirs). The Python path
# binds them as $name, the table macro takes them as named arguments (query_vector and k
# positional) with these defaults.
REQUEST_PARAMETERS = {
    "query_vector": "float[{dims}]",
    "k": "bigint",
    "groups": "varchar[]",
    "all_groups": "boolean",
    "missing_allowed_groups": "varchar",
    "as_of": "timestamp",
    "now": "timestamp",
}
_ACCESS_DEFAULTS = {"groups": "null", "all_groups": "false", "missing_allowed_groups": "'deny'"}
MACRO_DEFAULTS = {
    **_ACCESS_DEFAULTS,
    **{clause.name: clause.macro_default for clause in CLAUSES},
    "as_of": "null",
    "now": "null",
}


def parameter_types(dims: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    types = {**REQUEST_PARAMETERS, **{c.name: c.sql_type for c in CLAUSES}, **(extra or {})}
    return {name: kind.format(dims=dims) for name, kind in types.items()}


def python_param(dims: int, extra: Mapping[str, str] | None = None) -> Render:
    """$name placeholders. Lists and the query vector travel as text (JSON / array literal):
    DuckDB binds one string far faster than a Python list (measured ~1 ms vs ~100 ms for 384
    floats). `extra`: further parameters and their SQL types."""
    types = parameter_types(dims, extra)

    def render(name: str) -> str:
        if types[name] == "varchar[]":
            return f"cast(from_json(${name}, '[\"VARCHAR\"]') as varchar[])"
        return f"cast(${name} as {types[name]})"

    return render


def macro_param(dims: int) -> Render:
    types = parameter_types(dims)
    return lambda name: f"cast({name} as {types[name]})"


def used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters `sql` names (DuckDB rejects unused named parameters)."""
    return {name: value for name, value in params.items()
            if f"${name} " in sql or f"${name}," in sql or f"${name})" in sql}


def _frame(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"no SQL for the {dialect!r} dialect; known: {', '.join(DIALECTS)}")


def _groups_admit(groups_column: str, p: Render, dialect: str) -> str:
    overlap = (f"{groups_column} && coalesce({p('groups')}, '{{}}'::text[])"
               if dialect == POSTGRES else
               f"list_has_any({groups_column}, coalesce({p('groups')}, []::varchar[]))")
    return (
        f"case when {groups_column} is null then coalesce({p('missing_allowed_groups')}, 'deny')"
        f" = 'allow' else {overlap} end"
    )


def access_sql(p: Render, alias: str = "documents", dialect: str = DUCKDB) -> str:
    """The access rule, as boolean SQL over a document version `alias` carrying its own
    allowed_groups and its document's latest known ones (latest_allowed_groups): the caller's
    groups must be admitted by both, unless the operator switch all_groups is on. A NULL groups
    parameter is no group (a document without allowed_groups then follows
    missing_allowed_groups, an empty list admits nobody)."""
    return f"""(
            coalesce({p('all_groups')}, false)
            or (
                coalesce({_groups_admit(f'{alias}.allowed_groups', p, dialect)}, false)
                and coalesce({_groups_admit(f'{alias}.latest_allowed_groups', p, dialect)},
                             false)
            )
        )"""


def as_of_window(p: Render, alias: str) -> str:
    return (
        f"{alias}.document_valid_from <= {p('as_of')} and ({alias}.document_valid_to is null "
        f"or {alias}.document_valid_to > {p('as_of')})"
    )


def documents_sql(p: Render, source: str, tables: Tables, dialect: str = DUCKDB) -> str:
    """One row per document version of the source *that the caller may see*, with the
    attributes document clauses read: the live versions (dim_documents), or the versions live
    at $as_of (history), or either by as_of being NULL ('both'). A live version's latest known
    access is its own; a historical version's is its document's latest known state
    (dim_document_access, deleted documents included), so an as-of search never shows what the
    caller may not see today."""
    _frame(dialect)

    def also(alias: str, keyword: str, *more: str) -> str:
        conditions = [c for c in (tables.visible(alias, p), *more) if c]
        return f"\n        {keyword} " + " and ".join(conditions) if conditions else ""

    live = f"""
        select
            live.document_id,
            live.document_version,
            live.document_type,
            live.title,
            live.allowed_groups,
            live.updated_at as document_updated_at,
            live.valid_from as document_valid_from,
            live.metadata,
            live.allowed_groups as latest_allowed_groups
        from {tables.documents} as live"""
    # inner join: a version whose document has no known access row is shown to nobody
    latest_visible = also("latest", "and")
    as_of = f"""
        select
            versions.document_id,
            versions.document_version,
            any_value(versions.document_type) as document_type,
            any_value(versions.title) as title,
            any_value(versions.allowed_groups) as allowed_groups,
            any_value(versions.document_updated_at) as document_updated_at,
            any_value(versions.document_valid_from) as document_valid_from,
            any_value(versions.metadata) as metadata,
            any_value(latest.allowed_groups) as latest_allowed_groups
        from {tables.history} as versions
        inner join {tables.access} as latest
            on versions.document_id = latest.document_id{latest_visible}
        where {as_of_window(p, 'versions')}{also('versions', 'and')}
        group by versions.document_id, versions.document_version"""
    if source == "live":
        versions = live + also("live", "where")
    elif source == "as_of":
        versions = as_of
    elif source == "both":
        live_now = also("live", "where", f"{p('as_of')} is null")
        versions = f"{live}{live_now}\n        union all{as_of}"
    else:
        raise ValueError(f"unknown source {source!r}")
    return f"""
        select * from ({versions}
        ) as documents
        where {access_sql(p, dialect=dialect)}"""


# the chunk columns the clauses and the ranking read (the narrow first phase of a search)
_NARROW_COLUMNS = ("chunk_id", "document_id", "document_version", "section",
                   "section_chunk_index", "section_chunk_count", "is_split_paragraph")


def chunks_sql(p: Render, source: str, tables: Tables, *, only: str | None = None,
               narrow: bool = False) -> str:
    """The chunk rows of the source with their distance: the serving set ('live'), the history
    rows live at $as_of ('as_of'), or either by as_of being NULL ('both'). `only` restricts the
    rows to a chunk_id list (see literal_list); the clauses still apply. `narrow` keeps only
    the columns the clauses and the ranking read."""
    vector = p("query_vector")
    restrict = f"\n        where chunks.chunk_id in ({only})" if only else ""
    restrict_as_of = f"\n            and chunks.chunk_id in ({only})" if only else ""
    if narrow:
        columns = ", ".join(f"chunks.{c}" for c in _NARROW_COLUMNS)
        live_columns = as_of_columns = columns
    else:
        live_columns = "chunks.*, cast(null as timestamp) as document_valid_to"
        as_of_columns = (
            "chunks.* exclude (document_valid_to, metadata, superseded_by_version),\n"
            "            chunks.document_valid_to"
        )
    live = f"""
        select {live_columns},
            array_cosine_distance(chunks.embedding, {vector}) as distance
        from {tables.serving} as chunks{restrict}"""
    as_of = f"""
        select {as_of_columns},
            array_cosine_distance(chunks.embedding, {vector}) as distance
        from {tables.history} as chunks
        where {as_of_window(p, 'chunks')}{restrict_as_of}"""
    if source == "live":
        return live
    if source == "as_of":
        return as_of
    if source == "both":
        return f"{live}\n        where {p('as_of')} is null\n        union all by name{as_of}"
    raise ValueError(f"unknown source {source!r}")


def literal_list(ids: Sequence[str]) -> str | None:
    """Ids read from the database (chunk_id, document_id) as a SQL literal list, or None when
    one cannot be written safely.

    In a published snapshot DuckDB answers a constant IN list on chunk_id from the unique
    chunk_id (ART) index publish adds (ragmart.serving.snapshots.add_lookup_indexes), so only
    those rows' vectors are read (measured at 100k: ~5 ms for 100 ids, ~35 ms for 1,000,
    against 130-160 ms for the same ids joined from a parameter, and ~250 ms for a Retriever
    search on the build database, which has no such index). The ids never come from the
    caller; quotes are doubled, and an id with a control character (NUL included) makes the
    caller take its slower path."""
    if not ids or any(not isinstance(i, str) or any(ord(ch) < 32 for ch in i) for i in ids):
        return None
    return ", ".join(sql_text(i) for i in ids)


def select_list() -> str:
    """The result columns (COLUMNS) of an `eligible` row `chunks`."""
    names = [c for c in COLUMNS if c != "completeness"]
    return ", ".join(f"chunks.{c}" for c in names) + \
        f",\n        {completeness_sql()} as completeness"


def clause_conditions(p: Render, dialect: str, active: frozenset[str] | None,
                      similarity: bool) -> tuple[str, str]:
    """(the document clauses' conjunction, the chunk clauses' and, with `similarity`, the
    distance clauses'), in `dialect`: what every eligible set filters on."""
    document = predicates(p, dialect, DOCUMENT, active=active)
    chunk = predicates(p, dialect, CHUNK, active=active)
    if similarity:
        chunk += predicates(p, dialect, DISTANCE, active=active)
    return ("\n            and ".join(document or ["true"]),
            "\n            and ".join(chunk or ["true"]))


def eligible_sql(p: Render, source: str, tables: Tables, *, dialect: str = DUCKDB,
                 similarity: bool = True, only: str | None = None, narrow: bool = False,
                 active: frozenset[str] | None = None) -> str:
    """CTEs `source_chunks`, `documents`, `eligible_documents` and `eligible` (the eligible
    chunk rows with their distance). `active`: the clauses to render (None: every clause, as
    the macro does); `similarity`: whether distance clauses apply."""
    document_predicate, chunk_where = clause_conditions(p, dialect, active, similarity)
    # a chunk_id list must stay a scan filter: materialized, the semi join below cannot turn it
    # into a join over the whole table (measured at 100k: 5 ms instead of 160 ms)
    materialized = " materialized" if only else ""
    # with a chunk_id list, the document clauses run on those chunks' documents only
    candidate_documents = (
        "\n        where documents.document_id in "
        "(select source_chunks.document_id from source_chunks)" if only else ""
    )
    return f"""
    source_chunks as{materialized} ({chunks_sql(p, source, tables, only=only, narrow=narrow)}
    ),
    documents as (
        select * from ({documents_sql(p, source, tables, dialect)}
        ) as documents{candidate_documents}
    ),
    eligible_documents as (
        select documents.document_id, documents.document_version
        from documents
        where
            {document_predicate}
    ),
    eligible as (
        select chunks.*
        from source_chunks as chunks
        semi join eligible_documents
            on
                chunks.document_id = eligible_documents.document_id
                and chunks.document_version = eligible_documents.document_version
        where
            {chunk_where}
    )"""


def search_sql(p: Render, source: str, tables: Tables, *, limit: str, dialect: str = DUCKDB,
               only: str | None = None) -> str:
    """The ranked eligible rows of `source`, ordered by (distance, chunk_id)."""
    return f"""
    with {eligible_sql(p, source, tables, dialect=dialect, only=only)}{ranked_sql(limit)}"""


def ranked_sql(limit: str) -> str:
    """What every search ends with (both dialects): the first `limit` rows of CTE `eligible`
    ranked by (distance, chunk_id), with the result columns.

    The rows are cut to `limit` before they are numbered: with the window over every eligible
    row, PostgreSQL sorted them all (a quicksort of 10,000 rows of 3.6 MB for 10 of them at
    10% of 100,000 chunks eligible, 5-6 ms of a 32-37 ms search); under a bare LIMIT it keeps
    the first few in a bounded heap. (distance, chunk_id) is a total order, so the ranks are
    the same."""
    return f"""
    select
        row_number() over (order by chunks.distance asc, chunks.chunk_id asc) as rank,
        chunks.distance,
        {select_list()}
    from (
        select * from eligible
        order by eligible.distance asc, eligible.chunk_id asc
        limit {limit}
    ) as chunks
    order by chunks.distance asc, chunks.chunk_id asc
"""
