"""Top-k retrieval over the serving set under retrieval contracts, deterministic.

Ordering is (distance, chunk_id): the same index and query give the same rows in the same order.

A search has a *source* and *clauses*. The source is what the caller may see of the live
serving set (fct_chunk_embeddings_<v>) or, with ``as_of``, of the chunk versions live at that
time (fct_chunk_history_<v>). The clauses come from a retrieval contract
(ragmart.retrieval.contracts)
and the caller's document-type filter; a chunk is *eligible* when it passes them all.

Access is not a clause among others: it defines the source (`documents_sql`). A caller sees a
document version only when its groups are admitted both by the version's own allowed_groups
and by the document's latest known ones (dim_documents for a live search; for an as-of search
dim_document_access, which keeps deleted documents too): narrowing access applies at once to
every point in time. A document without
allowed_groups follows ``missing_allowed_groups``. No groups means no group, never every group;
the one way to see everything is the explicit operator switch ``groups=ALL_GROUPS`` (CLI
``--all-groups``, SQL ``all_groups := true``). Every other clause, every count, every reason and
the valid values an abstention names are computed over that visible source only, so an answer
is the same whatever the documents the caller may not see contain.

The search never filters after an approximate top-k (`_plan`):

1. evaluate the document clauses on the visible documents (one row per live document, no
   vectors); nothing eligible: abstain, with the number of visible chunks each clause excluded;
2. few eligible chunks: exact scan over exactly those chunks; a small serving set: exact scan;
3. otherwise the HNSW index (fct_chunk_vector_index_<v>, plus the exact delta of vectors not
   indexed yet) proposes ``k / selectivity * OVERSAMPLE`` candidates, checked against every
   clause and re-ranked; the pool widens until k eligible rows are found, and the search falls
   back to the exact scan past MAX_CANDIDATES;
4. as-of searches scan the history exactly.

A long-lived reader (`Retriever`) keeps the serving vectors in memory (ragmart.retrieval.memory)
and replaces 1-3 for live searches: the eligible rows of a contract come from the exact
eligibility SQL (remembered per parameters, `_eligible_rows`), numpy proposes the nearest of
them, and the exact SQL search over those ids answers; the pool widens until no row left out
can be nearer (`_via_memory`).

The SQL of every path is rendered from one template (`eligible_sql`), which also defines the
DuckDB table macro ``ragmart_retrieve_<v>`` installed in the database (`install_sql_macros`):
the Python path and the SQL path apply the same clauses to the same parameter values.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, overload

import duckdb
import numpy as np
import pyarrow as pa

from ragmart.config import Settings
from ragmart.duck import connect
from ragmart.embedding.providers import EmbeddingProvider, get_provider, provider_for_model
from ragmart.lineage import utc_now
from ragmart.retrieval.contracts import (
    COMPLETENESS_LEVELS,
    METADATA_COLUMNS,
    MISSING_GROUPS_POLICIES,
    Contract,
    _clip,
    contracts_path,
    load_contracts,
)
from ragmart.retrieval.memory import ServingVectors

# Relations of one index version <v> (see ragmart.serving.publish): the serving set, its HNSW
# index, the
# vectors not indexed yet (searched exactly beside the index) and the history for as-of search.
SERVING_PREFIX = "fct_chunk_embeddings_"
INDEX_PREFIX = "fct_chunk_vector_index_"
DELTA_PREFIX = "fct_chunk_vector_delta_"
HISTORY_PREFIX = "fct_chunk_history_"
DOCUMENTS_TABLE = "dim_documents"
ACCESS_TABLE = "dim_document_access"  # the latest known allowed_groups, deleted documents too
SQL_MACRO_PREFIX = "ragmart_retrieve_"
DEFAULT_VERSION = "v1"
# An index version names relations (fct_chunk_embeddings_<v>): the one rule, also applied to
# the dbt var index_version by macros/validate_settings.sql (a test compares the two patterns).
INDEX_VERSION = re.compile(r"v[0-9]+", re.ASCII)
SERVING_TABLE = SERVING_PREFIX + DEFAULT_VERSION
INDEX_TABLE = INDEX_PREFIX + DEFAULT_VERSION
HISTORY_TABLE = HISTORY_PREFIX + DEFAULT_VERSION

# Strategy knobs (measured with bench/retrieval.py, see the README).
EXACT_MAX_DOCUMENTS = 400  # at most this many eligible documents: list their chunks...
EXACT_MAX_ELIGIBLE = 1_500  # ...and at most this many chunks: exact scan over them
EXACT_IDS_ALWAYS = 300  # this few chunks: exact over them whatever the table size
EXACT_SCAN_MAX_ROWS = 25_000  # a serving set this small: scan it exactly (~30 ms at 20k)
OVERSAMPLE = 4.0  # HNSW candidates per expected eligible row needed (recall >= 0.99)
MIN_CANDIDATES = 40
MAX_CANDIDATES = 4_096  # a larger pool is slower than the exact scan: fall back
MAX_K = 2**63 - 1  # k is a bigint in the search SQL (limit $k)


class RetrievalError(RuntimeError):
    pass


class AllGroups:
    """The type of ``ALL_GROUPS``: the operator switch that admits every document whatever its
    allowed_groups (evaluation, debugging). Never a default: a caller that passes no groups is
    in no group."""

    _instance: AllGroups | None = None

    def __new__(cls) -> AllGroups:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_GROUPS"


ALL_GROUPS = AllGroups()
# the caller's groups: a list (possibly empty), None (no group) or ALL_GROUPS (operator)
Groups = Sequence[str] | AllGroups | None
MISSING_GROUPS_DEFAULT = "deny"


@dataclass(frozen=True)
class Tables:
    """The relations a search reads (trusted identifiers, never caller input)."""

    serving: str
    index: str
    delta: str
    history: str
    documents: str = DOCUMENTS_TABLE
    access: str = ACCESS_TABLE

    @classmethod
    def for_version(cls, version: str = DEFAULT_VERSION) -> Tables:
        if not isinstance(version, str) or not INDEX_VERSION.fullmatch(version):
            raise RetrievalError(f"invalid index version {version!r}: write it as v1, v2, ...")
        return cls(SERVING_PREFIX + version, INDEX_PREFIX + version, DELTA_PREFIX + version,
                   HISTORY_PREFIX + version)

    @classmethod
    def from_serving(cls, table: str, index_table: str | None = None) -> Tables:
        """The relations of the version `table` serves (fct_chunk_embeddings_<v>)."""
        version = table.removeprefix(SERVING_PREFIX) if table.startswith(SERVING_PREFIX) \
            else DEFAULT_VERSION
        base = cls.for_version(version) if version[1:].isdigit() else cls.for_version()
        return cls(table, index_table or base.index, base.delta, base.history)

    @property
    def version(self) -> str:
        return self.serving.removeprefix(SERVING_PREFIX)

    @property
    def macro(self) -> str:
        return SQL_MACRO_PREFIX + self.version


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
    allowed_groups: list[str] | None = None
    document_valid_from: dt.datetime | None = None
    document_valid_to: dt.datetime | None = None
    completeness: str | None = None
    # the index version the chunk was served from: a chunk_id names a document version and a
    # position, so (index_version, chunk_id) is the citation (each version has one chunker)
    index_version: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("created_at", "document_valid_from", "document_valid_to"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data


_COLUMNS = [
    name for name in RetrievedChunk.__dataclass_fields__
    if name not in ("rank", "distance", "index_version")
]


@dataclass(frozen=True)
class ClauseCount:
    """How a clause narrowed the source: chunks it excludes on its own, and the chunks left
    after it and every clause listed before it."""

    clause: str
    excluded: int
    remaining: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RetrievalResult(Sequence[RetrievedChunk]):
    """The ranked chunks (a sequence), or an abstention with the reason and clause counts."""

    chunks: tuple[RetrievedChunk, ...]
    k: int
    strategy: str
    contract: str | None = None
    as_of: dt.datetime | None = None
    eligible_chunks: int | None = None
    abstained: bool = False
    reason: str | None = None
    clauses: tuple[ClauseCount, ...] = field(default=())

    @overload
    def __getitem__(self, index: int) -> RetrievedChunk: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RetrievedChunk]: ...
    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self.chunks[index]

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[RetrievedChunk]:
        return iter(self.chunks)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {
            "k": self.k,
            "contract": self.contract,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "abstained": self.abstained,
            "strategy": self.strategy,
            "eligible_chunks": self.eligible_chunks,
            "results": [c.to_dict() for c in self.chunks],
        }
        if self.abstained:
            data["reason"] = self.reason
            data["clauses"] = [c.to_dict() for c in self.clauses]
        return data


# =========================================================================== SQL template

# Every parameter of a search, with its SQL type. The Python path binds them as $name, the
# table macro takes them as named arguments (query_vector and k positional).
PARAMETERS: dict[str, str] = {
    "query_vector": "float[{dims}]",
    "k": "bigint",
    "groups": "varchar[]",
    "all_groups": "boolean",
    "missing_allowed_groups": "varchar",
    "document_types": "varchar[]",
    "required_metadata": "varchar[]",
    "max_document_age": "interval",
    "min_document_version": "bigint",
    "min_effective_date": "timestamp",
    "min_chunk_completeness": "varchar",
    "min_similarity": "double",
    "as_of": "timestamp",
    "now": "timestamp",
    # Python only: the two type filters counted apart when explaining an abstention
    "contract_document_types": "varchar[]",
    "requested_document_types": "varchar[]",
}
MACRO_DEFAULTS = {
    "groups": "null",
    "all_groups": "false",
    "missing_allowed_groups": "'deny'",
    "document_types": "null",
    "required_metadata": "null",
    "max_document_age": "null",
    "min_document_version": "null",
    "min_effective_date": "null",
    "min_chunk_completeness": "'fragment'",
    "min_similarity": "null",
    "as_of": "null",
    "now": "null",
}

Render = Callable[[str], str]


def _python_param(dims: int) -> Render:
    """$name placeholders. Lists and the query vector travel as text (JSON / array literal):
    DuckDB binds one string far faster than a Python list (measured ~1 ms vs ~100 ms for 384
    floats)."""

    def render(name: str) -> str:
        kind = PARAMETERS[name].format(dims=dims)
        if kind == "varchar[]":
            return f"cast(from_json(${name}, '[\"VARCHAR\"]') as varchar[])"
        return f"cast(${name} as {kind})"

    return render


def _macro_param(dims: int) -> Render:
    return lambda name: f"cast({name} as {PARAMETERS[name].format(dims=dims)})"


def _completeness_sql(alias: str = "chunks") -> str:
    return f"""case
            when {alias}.is_split_paragraph is null
                or {alias}.section_chunk_count is null
                or {alias}.section_chunk_index is null
                or {alias}.section_chunk_index < 0
                or {alias}.section_chunk_index >= {alias}.section_chunk_count
                or {alias}.is_split_paragraph then 'fragment'
            when {alias}.section_chunk_count = 1 then 'section'
            else 'paragraph'
        end"""


def _groups_admit(groups_column: str, p: Render) -> str:
    return (
        f"case when {groups_column} is null then coalesce({p('missing_allowed_groups')}, 'deny')"
        f" = 'allow' else list_has_any({groups_column}, "
        f"coalesce({p('groups')}, []::varchar[])) end"
    )


def access_sql(p: Render, alias: str = "documents") -> str:
    """The access rule, as boolean SQL over a document version `alias` carrying its own
    allowed_groups and its document's latest known ones (latest_allowed_groups): the caller's
    groups must be admitted by both, unless the operator switch all_groups is on. A NULL groups
    parameter is no group (a document without allowed_groups then follows
    missing_allowed_groups, an empty list admits nobody)."""
    return f"""(
            coalesce({p('all_groups')}, false)
            or (
                coalesce({_groups_admit(f'{alias}.allowed_groups', p)}, false)
                and coalesce({_groups_admit(f'{alias}.latest_allowed_groups', p)}, false)
            )
        )"""


# required_metadata names checked per chunk; the others per document version
_CHUNK_METADATA = ("section",)


def document_clauses(p: Render, *, document_types_param: str = "document_types") -> dict[str, str]:
    """Clauses on a visible document version, as boolean SQL over `documents` (NULL counts as
    false). A clause whose parameter is NULL admits everything. Access is not among them: it
    defines which versions `documents_sql` returns at all. No clause can raise on a row's data
    (metadata that is not JSON reads as missing): DuckDB may evaluate a conjunction in any
    order, and an error would echo a row the caller may not see."""
    metadata_checks = "\n".join(
        f"                when field_name = '{name}' then "
        f"nullif(trim(cast(documents.{name} as varchar)), '') is null"
        for name in METADATA_COLUMNS if name not in _CHUNK_METADATA
    )
    chunk_level = ", ".join(f"'{name}'" for name in _CHUNK_METADATA)
    reference_time = f"coalesce({p('as_of')}, {p('now')}, timezone('UTC', current_timestamp))"
    types = p(document_types_param)
    return {
        "document_types": f"""(
            {types} is null or list_contains({types}, documents.document_type)
        )""",
        "required_metadata": f"""(
            len(list_filter(coalesce({p('required_metadata')}, []::varchar[]), field_name ->
                case
                when field_name in ({chunk_level}) then false
{metadata_checks}
                else not regexp_full_match(field_name, '[A-Za-z_][A-Za-z0-9_]*')
                    or nullif(trim(try(json_extract_string(
                        documents.metadata, '$."' || field_name || '"'))), '') is null
                end)) = 0
        )""",
        "max_document_age": f"""(
            {p('max_document_age')} is null
            or documents.document_valid_from >= {reference_time} - {p('max_document_age')}
        )""",
        "min_document_version": f"""(
            {p('min_document_version')} is null
            or documents.document_version >= {p('min_document_version')}
        )""",
        "min_effective_date": f"""(
            {p('min_effective_date')} is null
            or documents.document_valid_from >= {p('min_effective_date')}
        )""",
    }


def chunk_clauses(p: Render) -> dict[str, str]:
    """Clauses on a chunk, as boolean SQL over `chunks` (NULL counts as false)."""
    levels = "[" + ", ".join(f"'{level}'" for level in COMPLETENESS_LEVELS) + "]"
    chunk_fields = "\n".join(
        f"                when field_name = '{name}' then nullif(trim(chunks.{name}), '') is null"
        for name in _CHUNK_METADATA
    )
    return {
        "required_metadata": f"""(
            len(list_filter(coalesce({p('required_metadata')}, []::varchar[]), field_name ->
                case
{chunk_fields}
                else false
                end)) = 0
        )""",
        "min_chunk_completeness": f"""(
            list_position({levels}, {_completeness_sql()})
            >= list_position({levels}, coalesce({p('min_chunk_completeness')}, 'fragment'))
        )""",
    }


def _similarity_sql(p: Render, distance: str) -> str:
    return f"""(
            {p('min_similarity')} is null
            or {distance} <= 1.0 - {p('min_similarity')}
        )"""


def _as_of_window(p: Render, alias: str) -> str:
    return (
        f"{alias}.document_valid_from <= {p('as_of')} and ({alias}.document_valid_to is null "
        f"or {alias}.document_valid_to > {p('as_of')})"
    )


def documents_sql(p: Render, source: str, tables: Tables) -> str:
    """One row per document version of the source *that the caller may see*, with the
    attributes document clauses read: the live versions (dim_documents), or the versions live
    at $as_of (history). Access is applied here, first: every other clause, count and error
    only ever meets visible versions. A live version's latest known access is its own; a
    historical version's is its document's latest known state (dim_document_access, deleted
    documents included), so an as-of search never shows what the caller may not see today."""
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
        inner join {tables.access} as latest on versions.document_id = latest.document_id
        where {_as_of_window(p, 'versions')}
        group by versions.document_id, versions.document_version"""
    if source in ("live", "candidates"):
        versions = live
    elif source == "as_of":
        versions = as_of
    elif source == "both":
        versions = f"{live}\n        where {p('as_of')} is null\n        union all{as_of}"
    else:
        raise ValueError(f"unknown source {source!r}")
    return f"""
        select * from ({versions}
        ) as documents
        where {access_sql(p)}"""


# the chunk columns the clauses and the ranking read (the narrow first phase of a search)
_NARROW_COLUMNS = ("chunk_id", "document_id", "document_version", "section",
                   "section_chunk_index", "section_chunk_count", "is_split_paragraph")


def chunks_sql(p: Render, source: str, tables: Tables, *, only: str | None = None,
               narrow: bool = False) -> str:
    """The chunk rows of the source with their distance: the serving set ('live'), the history
    rows live at $as_of ('as_of'), or either by as_of being NULL ('both'). `only` restricts the
    rows to a chunk_id list (see _literal_list); the clauses still apply. `narrow` keeps only
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
        where {_as_of_window(p, 'chunks')}{restrict_as_of}"""
    if source == "live":
        return live
    if source == "as_of":
        return as_of
    if source == "both":
        return f"{live}\n        where {p('as_of')} is null\n        union all by name{as_of}"
    raise ValueError(f"unknown source {source!r}")


def _literal_list(ids: Sequence[str]) -> str | None:
    """Ids read from the database (chunk_id, document_id) as a SQL literal list, or None when
    one cannot be written safely.

    In a published snapshot DuckDB answers a constant IN list on chunk_id from the unique
    chunk_id (ART) index publish adds (ragmart.serving.publish.add_lookup_indexes), so only those
    rows'
    vectors are read (measured at 100k: ~5 ms for 100 ids, ~35 ms for 1,000, against 130-160 ms
    for the same ids joined from a parameter, and ~250 ms for a Retriever search on the build
    database, which has no such index). The ids never come from the caller; quotes are doubled, and
    an id with a control character (NUL included) makes the caller take its slower path."""
    if not ids or any(not isinstance(i, str) or any(ord(ch) < 32 for ch in i) for i in ids):
        return None
    return ", ".join("'" + i.replace("'", "''") + "'" for i in ids)


def _select_list() -> str:
    names = [c for c in _COLUMNS if c != "completeness"]
    return ", ".join(f"chunks.{c}" for c in names) + \
        f",\n        {_completeness_sql()} as completeness"


def active_clauses(params: dict[str, Any]) -> frozenset[str]:
    """The clauses whose parameters restrict anything. The Python path leaves the others out
    of its SQL (they admit every row; compiling them costs ~10 ms a query, measured); the
    table macro keeps them all."""
    active = set()
    for name in ("document_types", "max_document_age", "min_document_version",
                 "min_effective_date", "min_similarity"):
        if params.get(name) is not None:
            active.add(name)
    if params.get("required_metadata") not in (None, "[]"):
        active.add("required_metadata")
    if params.get("min_chunk_completeness") not in (None, "fragment"):
        active.add("min_chunk_completeness")
    return frozenset(active)


def _predicate(clauses: dict[str, str], active: frozenset[str] | None) -> list[str]:
    return [sql for name, sql in clauses.items() if active is None or name in active]


def eligible_sql(p: Render, source: str, tables: Tables, *, similarity: bool = True,
                 only: str | None = None, narrow: bool = False,
                 active: frozenset[str] | None = None) -> str:
    """CTEs `source_chunks`, `documents`, `eligible_documents` and `eligible` (the eligible
    chunk rows with their distance)."""
    document_predicate = "\n            and ".join(
        _predicate(document_clauses(p), active) or ["true"])
    chunk_predicate = _predicate(chunk_clauses(p), active)
    if similarity and (active is None or "min_similarity" in active):
        chunk_predicate.append(_similarity_sql(p, "chunks.distance"))
    chunk_predicate = chunk_predicate or ["true"]
    chunk_where = "\n            and ".join(chunk_predicate)
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
        select * from ({documents_sql(p, source, tables)}
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


def search_sql(p: Render, source: str, tables: Tables, *, limit: str,
               only: str | None = None) -> str:
    """The ranked eligible rows of `source`, ordered by (distance, chunk_id)."""
    return f"""
    with {eligible_sql(p, source, tables, only=only)}
    select
        row_number() over (order by chunks.distance asc, chunks.chunk_id asc) as rank,
        chunks.distance,
        {_select_list()}
    from eligible as chunks
    order by chunks.distance asc, chunks.chunk_id asc
    limit {limit}
"""


def macro_sql(dims: int, tables: Tables) -> str:
    """`create or replace macro ragmart_retrieve_<v>` for the SQL path (see the README)."""
    p = _macro_param(dims)
    arguments = ", ".join(
        ["query_vector", "k"] + [f"{n} := {MACRO_DEFAULTS[n]}" for n in MACRO_DEFAULTS]
    )
    body = search_sql(p, "both", tables, limit=p("k"))
    return f"create or replace macro {tables.macro}({arguments}) as table\n{body}"


def install_sql_macros(conn: duckdb.DuckDBPyConnection, dims: int, tables: Tables) -> list[str]:
    """Create the version's table macro in the connection's current database; returns its name.

    The macro body names its tables unqualified: call it with the ragmart database as the
    current one (opening the file with `duckdb ragmart.duckdb`, or `use <alias>`)."""
    conn.execute(macro_sql(dims, tables))
    return [tables.macro]


def json_list(values: Sequence[str] | None) -> str | None:
    """A list parameter as JSON text (see _python_param)."""
    return None if values is None else json.dumps([str(v) for v in values])


def _parameters(
    vector: list[float],
    *,
    k: int,
    contract: Contract | None,
    groups: Groups,
    doc_types: Sequence[str] | None,
    as_of: dt.datetime | None,
    now: dt.datetime | None,
    missing_allowed_groups: str = MISSING_GROUPS_DEFAULT,
) -> dict[str, Any]:
    """The search's parameter values; None leaves a clause out (it admits everything), except
    groups: None is no group."""
    types = list(contract.document_types) if contract and contract.document_types else None
    if doc_types:
        requested = [str(t) for t in doc_types]
        types = [t for t in types if t in requested] if types is not None else requested
    return {
        # repr() round-trips each float32 exactly
        "query_vector": "[" + ",".join(repr(x) for x in vector) + "]",
        "k": int(k),
        "groups": json_list([] if groups is None or groups is ALL_GROUPS else groups),
        "all_groups": groups is ALL_GROUPS,
        "missing_allowed_groups": (contract.missing_allowed_groups if contract
                                   else missing_allowed_groups),
        "document_types": json_list(types),
        "required_metadata": json_list(contract.required_metadata) if contract else None,
        "max_document_age": contract.max_document_age if contract else None,
        "min_document_version": contract.min_document_version if contract else None,
        "min_effective_date": contract.min_effective_date if contract else None,
        "min_chunk_completeness": contract.min_chunk_completeness if contract else "fragment",
        "min_similarity": contract.min_similarity if contract else None,
        "as_of": as_of,
        "now": now or utc_now(),
    }


def _used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters `sql` names (DuckDB rejects unused named parameters)."""
    return {name: value for name, value in params.items()
            if f"${name} " in sql or f"${name}," in sql or f"${name})" in sql}


def _rows_to_chunks(rows: list[tuple]) -> tuple[RetrievedChunk, ...]:
    names = ["rank", "distance", *_COLUMNS]
    out = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        values["distance"] = float(values["distance"])
        values["rank"] = int(values["rank"])
        out.append(RetrievedChunk(**values))
    return tuple(out)


def _eligible_chunk_ids(conn: duckdb.DuckDBPyConnection, p: Render, source: str,
                        params: dict[str, Any], tables: Tables) -> pa.ChunkedArray:
    """The chunk_ids eligible before similarity, as an Arrow column (no vector is read)."""
    eligible = eligible_sql(p, source, tables, similarity=False, narrow=True,
                            active=active_clauses(params))
    sql = f"with {eligible}\nselect chunk_id from eligible"
    return conn.execute(sql, _used(sql, params)).to_arrow_table()["chunk_id"]


def _eligible_ids(conn: duckdb.DuckDBPyConnection, p: Render, source: str,
                  params: dict[str, Any], tables: Tables) -> list[str]:
    """The chunk_ids eligible before similarity (no vector is read)."""
    return _eligible_chunk_ids(conn, p, source, params, tables).to_pylist()


@dataclass(frozen=True)
class _Plan:
    """How to search the live set: 'ids' (exact over `ids`), 'scan' (exact over the whole
    eligible set) or 'index' (HNSW at `selectivity`), or 'none' (nothing is eligible)."""

    strategy: str
    ids: list[str] | None = None
    selectivity: float = 1.0


def _plan(conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
          tables: Tables) -> _Plan:
    """Evaluate the document clauses on the live documents (one row each, no join: ~10x fewer
    rows than chunks), then pick the cheapest search that is exact or, through the index,
    recalls >= 0.99 (bench/retrieval.py). The final query re-applies every clause: the plan
    only decides where to look."""
    predicate = "\n            and ".join(
        _predicate(document_clauses(p), active_clauses(params)) or ["true"])
    sql = f"""
    with documents as ({documents_sql(p, "live", tables)}
    )
    select documents.document_id, count(*) over () as eligible_documents
    from documents
    where
            {predicate}
    limit {EXACT_MAX_DOCUMENTS + 1}
    """
    rows = conn.execute(sql, _used(sql, params)).fetchall()
    if not rows:
        return _Plan("none", [])
    n_documents = int(rows[0][1])
    live = conn.execute(f"select count(*) from {tables.serving}").fetchone()[0]
    literal = _literal_list([row[0] for row in rows]) \
        if n_documents <= EXACT_MAX_DOCUMENTS else None
    if literal is not None:
        ids = [row[0] for row in conn.execute(
            f"select chunk_id from {tables.serving} where document_id in ({literal})"
        ).fetchall()]
        if not ids:
            return _Plan("none", [])
        selectivity = len(ids) / max(1, live)
        # a chunk_id list is a scan filter: cheap for few ids, dearer than a plain scan of a
        # small table for many (measured: 2,000 ids 130 ms, the 20k-row scan 30 ms)
        if len(ids) <= EXACT_IDS_ALWAYS or (
            len(ids) <= EXACT_MAX_ELIGIBLE and live > EXACT_SCAN_MAX_ROWS
        ):
            return _Plan("ids", ids, selectivity)
    else:
        total = conn.execute(f"select count(*) from {tables.documents}").fetchone()[0]
        selectivity = n_documents / max(1, total)
    if live <= EXACT_SCAN_MAX_ROWS:
        return _Plan("scan", None, selectivity)
    return _Plan("index", None, selectivity)


@dataclass(frozen=True)
class ClauseFunnel:
    """`clause_counts`' answer: the counts, and the document types of the visible chunks of
    the source (what a document-type filter could have named)."""

    counts: list[ClauseCount]
    visible_types: list[str]


def clause_counts(
    conn: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    *,
    source: str,
    requested_types: Sequence[str] | None,
    contract_types: Sequence[str] | None,
    dims: int,
    tables: Tables,
) -> ClauseFunnel:
    """Per clause: the visible chunks of the source it excludes on its own, and the funnel
    through all clauses in order (similarity last). Only chunks the caller may see are counted
    (`documents_sql` applies access first): the figures are the same whatever the hidden
    documents contain."""
    p = _python_param(dims)
    params = dict(params)
    document = document_clauses(p)
    chunk = chunk_clauses(p)
    ordered: list[tuple[str, str]] = []
    if contract_types is not None:
        params["contract_document_types"] = json_list(contract_types)
        ordered.append(("document_types", document_clauses(
            p, document_types_param="contract_document_types")["document_types"]))
    if requested_types is not None:
        params["requested_document_types"] = json_list(requested_types)
        ordered.append(("doc_type_filter", document_clauses(
            p, document_types_param="requested_document_types")["document_types"]))
    for name in ("required_metadata", "max_document_age", "min_document_version",
                 "min_effective_date"):
        ordered.append((name, document[name]))
    flags = ",\n            ".join(
        f"coalesce({sql}, false) as ok_{i}" for i, (_, sql) in enumerate(ordered)
    )
    n_document = len(ordered)
    ordered.append(("required_chunk_metadata", chunk["required_metadata"]))
    ordered.append(("min_chunk_completeness", chunk["min_chunk_completeness"]))
    ordered.append(("min_similarity", _similarity_sql(p, "chunks.distance")))
    tests = [f"documents.ok_{i}" for i in range(n_document)] + [
        f"coalesce({sql}, false)" for _, sql in ordered[n_document:]
    ]
    parts = ["count(*)"]
    for i, test in enumerate(tests):
        parts.append(f"count(*) filter (where not {test})")
        parts.append(f"count(*) filter (where {' and '.join(tests[: i + 1])})")
    parts.append("list_sort(list(distinct documents.document_type) "
                 "filter (where documents.document_type is not null))")
    sql = f"""
    with documents as (
        select
            documents.document_id,
            documents.document_version,
            documents.document_type,
            {flags}
        from ({documents_sql(p, source, tables)}
        ) as documents
    )
    select {', '.join(parts)}
    from ({chunks_sql(p, source, tables)}
    ) as chunks
    inner join documents
        on
            chunks.document_id = documents.document_id
            and chunks.document_version = documents.document_version
    """
    values = conn.execute(sql, _used(sql, params)).fetchone()
    out = [ClauseCount("as_of" if source == "as_of" else "serving_set", 0, int(values[0]))]
    for i, (name, _) in enumerate(ordered):
        out.append(ClauseCount(name, int(values[1 + 2 * i]), int(values[2 + 2 * i])))
    return ClauseFunnel(out, list(values[-1] or []))


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(repr(_clip(v)) for v in values) or "(none)"


def _caller(groups: Groups) -> str:
    if not groups:
        return ("a caller without groups (name the caller's groups: --groups / groups=[...]; "
                "an operator may pass --all-groups / groups=ALL_GROUPS)")
    return f"the groups {_quoted(list(groups))}"


def _abstention_reason(contract: Contract | None, funnel: ClauseFunnel, *, groups: Groups,
                       requested_types: Sequence[str] | None,
                       contract_types: Sequence[str] | None) -> str:
    """Why nothing is eligible, from the visible counts only: the same text whatever the
    documents the caller may not see contain (or whether there are any)."""
    counts = funnel.counts
    total = counts[0].remaining
    what = f"contract {contract.name!r}" if contract else "the request"
    if total == 0:
        scope = "at that time" if counts[0].clause == "as_of" else "in the serving set"
        if groups is ALL_GROUPS:
            return f"no chunk satisfies {what}: there are no chunks {scope}"
        return f"no chunk satisfies {what}: no chunk {scope} is visible to {_caller(groups)}"
    emptied = next((c for c in counts[1:] if c.remaining == 0), None)
    excluding = [f"{c.clause} excludes {c.excluded} of {total}" for c in counts[1:] if c.excluded]
    first = f"; {emptied.clause} leaves none" if emptied else ""
    hints = []
    for clause, types in (("doc_type_filter", requested_types),
                          ("document_types", contract_types)):
        unknown = [t for t in types or () if t not in funnel.visible_types]
        if unknown and any(c.clause == clause and c.excluded for c in counts):
            hints.append(f"{clause}: no visible chunk has document type {_quoted(unknown)} "
                         f"(visible types: {_quoted(funnel.visible_types)})")
    hint = "; " + "; ".join(hints) if hints else ""
    return f"no chunk satisfies {what}: {', '.join(excluding)}{first}{hint}"


def _check_inputs(
    k: int, groups: Groups, doc_types: Sequence[str] | None,
    as_of: dt.datetime | None,
) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise RetrievalError(f"k must be at most {MAX_K} (a bigint in SQL), got {k}; ask for "
                             "fewer chunks")
    checked = (("groups", None if groups is ALL_GROUPS else groups,
                " (or ALL_GROUPS, the operator switch)"), ("doc_types", doc_types, ""))
    for name, values, hint in checked:
        if values is not None and (isinstance(values, str | AllGroups) or not all(
            isinstance(v, str) for v in values
        )):
            raise RetrievalError(
                f"{name} must be a list of strings, e.g. ['hr', 'managers']{hint}")
    if as_of is not None and not isinstance(as_of, dt.datetime):
        raise RetrievalError("as_of must be a datetime (naive UTC), e.g. datetime(2026, 11, 2)")


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
    _check_inputs(k, groups, doc_types, as_of)
    if missing_allowed_groups not in MISSING_GROUPS_POLICIES:
        raise RetrievalError(f"missing_allowed_groups must be deny or allow, got "
                             f"{missing_allowed_groups!r}")
    tables = tables or Tables.for_version()
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    vector = [float(x) for x in np.asarray(query_vector, dtype=np.float32).reshape(-1)]
    dims = len(vector)
    p = _python_param(dims)
    params = _parameters(vector, k=k, contract=contract, groups=groups, doc_types=doc_types,
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
        ids = _eligible_ids(conn, p, source, params, tables)
        eligible = len(ids)
        if ids:
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables, ids=ids)
    else:
        plan = _plan(conn, p, params, tables)
        eligible = len(plan.ids) if plan.ids is not None else None
        if plan.strategy == "ids":
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables, ids=plan.ids)
        elif plan.strategy == "scan":
            strategy = "exact"
            chunks = _exact(conn, p, source, params, tables)
        elif plan.strategy == "index":
            strategy, chunks = _via_index(conn, p, params, tables, k=k,
                                          selectivity=plan.selectivity)
    chunks = tuple(replace(chunk, index_version=tables.version) for chunk in chunks)
    if chunks:
        return RetrievalResult(chunks=chunks, strategy=strategy, eligible_chunks=eligible,
                               **common)
    requested = list(doc_types) if doc_types else None
    contract_types = list(contract.document_types) if contract and contract.document_types \
        else None
    funnel = clause_counts(conn, params, source=source, dims=dims, tables=tables,
                           requested_types=requested, contract_types=contract_types)
    # the strategy is left out: the plan weighs the whole serving set's size, hidden rows too
    return RetrievalResult(
        chunks=(), strategy="none", eligible_chunks=eligible, abstained=True,
        reason=_abstention_reason(contract, funnel, groups=groups, requested_types=requested,
                                  contract_types=contract_types),
        clauses=tuple(funnel.counts), **common,
    )


def _exact(conn: duckdb.DuckDBPyConnection, p: Render, source: str, params: dict[str, Any],
           tables: Tables, *, ids: Sequence[str] | None = None) -> tuple[RetrievedChunk, ...]:
    """Exact scan over the eligible rows (over `ids` only, when given: same clauses), in two
    phases: rank on the narrow columns, then read the k winners' rows (materializing the wide
    columns of every candidate cost ~2.5x more at 1,000 candidates, measured)."""
    only = _literal_list(ids) if ids else None
    ranked_sql = f"""
    with {eligible_sql(p, source, tables, only=only, narrow=True,
                       active=active_clauses(params))}
    select eligible.chunk_id, eligible.distance
    from eligible
    order by eligible.distance asc, eligible.chunk_id asc
    limit {p('k')}
    """
    ranked = conn.execute(ranked_sql, _used(ranked_sql, params)).fetchall()
    winners = _literal_list([chunk_id for chunk_id, _ in ranked])
    if not ranked:
        return ()
    if winners is None:  # an id SQL cannot carry as a literal: the single-statement search
        sql = search_sql(p, source, tables, limit=p("k"), only=only)
        return _rows_to_chunks(conn.execute(sql, _used(sql, params)).fetchall())
    table = tables.history if source == "as_of" else tables.serving
    valid_to = "chunks.document_valid_to" if source == "as_of" \
        else "cast(null as timestamp) as document_valid_to"
    names = [c for c in _COLUMNS if c not in ("completeness", "document_valid_to")]
    rows = conn.execute(f"""
        select {", ".join(f"chunks.{c}" for c in names)}, {valid_to},
            {_completeness_sql()} as completeness
        from {table} as chunks
        where chunks.chunk_id in ({winners})
    """).fetchall()
    by_id = {row[0]: row for row in rows}
    order = [*names, "document_valid_to", "completeness"]
    out = []
    for rank, (chunk_id, distance) in enumerate(ranked, start=1):
        values = dict(zip(order, by_id[chunk_id], strict=True))
        out.append(RetrievedChunk(rank=rank, distance=float(distance), **values))
    return tuple(out)


def embedding_dimensions(relation: duckdb.DuckDBPyRelation) -> int:
    """The vector size of a serving relation's `embedding` column (FLOAT[n]): an index
    version's size, which its model declared when the version was built."""
    kind = str(relation.project("embedding").types[0])
    size = kind.rpartition("[")[2].rstrip("]")
    if not kind.upper().startswith("FLOAT[") or not size.isdigit():
        raise RetrievalError(f"the embedding column is {kind}, not FLOAT[n]; rebuild with dbt")
    return int(size)


def _table_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute(
        "select count(*) from duckdb_tables() "
        "where table_name = $name and database_name = current_database()",
        {"name": name},
    ).fetchone()[0])


def _via_index(
    conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
    tables: Tables, *, k: int, selectivity: float,
) -> tuple[str, tuple[RetrievedChunk, ...]]:
    """HNSW candidates (plus the exact delta) restricted to the eligible live rows and ranked
    by (distance, chunk_id); the pool widens until k eligible rows are found, then falls back
    to the exact scan. Distances are recomputed on the served rows, as the exact path does."""
    indexed: int | None = None
    delta_exists = _table_exists(conn, tables.delta)
    n_candidates = max(MIN_CANDIDATES, math.ceil(k / selectivity * OVERSAMPLE))
    max_distance = (
        1.0 - params["min_similarity"] if params["min_similarity"] is not None else None
    )
    vector = {"query_vector": params["query_vector"]}
    distance = f"array_cosine_distance(embedding, {p('query_vector')})"
    while n_candidates <= MAX_CANDIDATES:
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
        if _literal_list([chunk_id for chunk_id, _ in pool]) is None:
            break
        chunks = _exact(conn, p, "live", params, tables, ids=[chunk_id for chunk_id, _ in pool])
        if len(chunks) >= k:
            return "hnsw", chunks
        if indexed is None:
            indexed = conn.execute(f"select count(*) from {tables.index}").fetchone()[0]
        if n_candidates >= indexed:
            return "hnsw", chunks
        if max_distance is not None and farthest is not None and farthest > max_distance:
            return "hnsw", chunks  # the pool reaches past min_similarity: nothing nearer left
        n_candidates *= 4
    # The index answered short (a contract the oversampling missed, or the vss defect after
    # deletes + reopen): answer exactly rather than short.
    return "hnsw+exact", _exact(conn, p, "live", params, tables)


# how long an eligible set computed with max_document_age stays usable as a superset of the
# eligible set (documents only age out): the exact search re-applies the clause on the pool
ELIGIBILITY_TTL = dt.timedelta(seconds=60)


def _eligible_rows(conn: duckdb.DuckDBPyConnection, p: Render, params: dict[str, Any],
                   tables: Tables, vectors: ServingVectors) -> tuple[np.ndarray, bool]:
    """(row positions in `vectors` of the live chunks every clause but similarity admits,
    whether that set is exact). The set is computed by the exact search's eligibility SQL and
    remembered per parameters. It depends on the clock only through max_document_age, whose
    eligible set only shrinks as time passes: one computed up to ELIGIBILITY_TTL earlier is a
    superset (candidates only; the exact search drops the rows that aged out since)."""
    active = active_clauses(params) - {"min_similarity"}
    if not active:
        return np.arange(vectors.rows), True
    timed = "max_document_age" in active
    key = tuple((name, repr(value)) for name, value in sorted(params.items())
                if name not in ("query_vector", "k", "now", "min_similarity"))
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
    answer), with candidates scored in memory:
    each pool goes through the exact SQL search (every clause, DuckDB's distances); a pool is
    final once its k-th result is nearer than any row left outside it."""
    rows, exact_count = _eligible_rows(conn, p, params, tables, vectors)
    max_distance = (
        1.0 - params["min_similarity"] if params["min_similarity"] is not None else None
    )
    chunks: tuple[RetrievedChunk, ...] = ()
    for ids, bound in vectors.candidate_rounds(query, rows, k):
        if _literal_list(ids) is None:  # an id SQL cannot carry as a literal
            return len(rows), _exact(conn, p, "live", params, tables)
        chunks = _exact(conn, p, "live", params, tables, ids=ids)
        if bound is None or (len(chunks) >= k and chunks[k - 1].distance < bound):
            break
        if max_distance is not None and bound > max_distance:
            break  # every row outside the pool is past min_similarity
    # a superset (rows that aged out since it was computed were dropped) is not a count
    return (len(rows) if exact_count else None), chunks


def search(
    conn: duckdb.DuckDBPyConnection,
    query_vector: np.ndarray,
    *,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
    groups: Groups = None,
    table: str = SERVING_TABLE,
    index_table: str | None = None,
) -> list[RetrievedChunk]:
    """The k nearest chunks to `query_vector` (cosine) of the given types that a caller in
    `groups` may see (ALL_GROUPS: every chunk), no contract; [] when none."""
    if isinstance(k, int) and not isinstance(k, bool) and k < 1:
        raise RetrievalError(f"k must be at least 1, got {k}")
    result = search_contract(conn, query_vector, k=k, doc_types=doc_types, groups=groups,
                             tables=Tables.from_serving(table, index_table))
    return list(result.chunks)


def _serving_models(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    if not _table_exists(conn, table):
        raise RetrievalError(
            f"the serving table {table} does not exist in this database; run `dbt build` "
            "(or `make run`) first"
        )
    rows = conn.execute(f"select distinct embedding_model from {table}").fetchall()
    return [row[0] for row in rows]


def _question_provider(version: str, models: list[str], settings: Settings
                       ) -> EmbeddingProvider:
    """The provider that embeds questions for `version`: the one of the model its vectors were
    made with (the version's size is that model's), whatever provider the environment selects
    for builds, with its settings present (else EmbeddingError naming the missing one); the
    environment's for a version without rows."""
    if len(models) == 1:
        return provider_for_model(models[0], version=version)
    return get_provider(settings.embedding_provider)


def default_missing_allowed_groups(path: str | Path | None = None) -> str:
    """The configured rule for documents without allowed_groups when no contract is named: the
    contract file's `defaults: missing_allowed_groups` when the file exists, else deny."""
    if not contracts_path(path).is_file():
        return MISSING_GROUPS_DEFAULT
    return load_contracts(path).missing_allowed_groups


RECHECK_ENV = "RAGMART_SERVING_RECHECK_SECONDS"
DEFAULT_RECHECK_SECONDS = 2.0


def _recheck_seconds(value: float | None) -> float:
    if value is None:
        from ragmart.config import seconds_from_env

        try:
            value = seconds_from_env(RECHECK_ENV)
        except ValueError as exc:
            raise RetrievalError(f"{exc}; unset it (default {DEFAULT_RECHECK_SECONDS:g}) or "
                                 "write e.g. 5") from None
        if value is None:
            return DEFAULT_RECHECK_SECONDS
    if not value >= 0:
        raise RetrievalError(f"recheck_seconds must be >= 0, got {value!r}")
    return float(value)


class Retriever:
    """A reader for many queries: one read-only connection to the database, held open.

    The database is resolved as `retrieve` does: the published snapshot (ragmart publish) when
    one serves, else $RAGMART_DB and `index_version`, or `db_path`. Without `db_path` it
    follows publishes: before a query, at most every `recheck_seconds` (default
    $RAGMART_SERVING_RECHECK_SECONDS or 2), it stats the serving pointer (serving.json) and,
    when it changed, opens the snapshot it names, loads its vectors (and the provider of that
    version's model) and only then swaps it in and closes the old connection (no query runs
    on it: a Retriever serves one thread), so a publish never fails a query; a new snapshot
    that cannot be opened is tried again at the next check while the old one keeps answering.
    With `db_path` it pins that file. With `vectors_in_memory` (the default) it copies the
    serving set's vectors into memory (ragmart.retrieval.memory: float32, 4 bytes per dimension:
    ~1.5 KB per chunk at 384 dimensions, 6 KB at 1536, 12 KB at 3072) and live searches score
    candidates there; the answers are those of the exact search. Close it (or use `with`):
    while it is open, DuckDB's shared lock keeps writers (a `dbt build` on that file) out,
    which is why it should read a published snapshot rather than the build database. Like a
    DuckDB connection, a Retriever serves one thread at a time: give each worker thread its
    own."""

    def __init__(
        self,
        *,
        db_path: str | Path | None = None,
        index_version: str | None = None,
        contracts_path: str | Path | None = None,
        provider: EmbeddingProvider | None = None,
        vectors_in_memory: bool = True,
        recheck_seconds: float | None = None,
    ) -> None:
        settings = Settings.from_env()
        self._follow_db: Path | None = None
        self._index_version = index_version
        self._vectors_in_memory = vectors_in_memory
        if db_path is None:
            from ragmart.serving.pointer import resolve_target

            self._follow_db = settings.db_path
            self._recheck = _recheck_seconds(recheck_seconds)
            self._pointer_seen = self._pointer_stat()
            self._checked_at = time.monotonic()
            target = resolve_target(settings.db_path, index_version)
            path, version = target.database, target.version
        else:
            path, version = Path(db_path), index_version or DEFAULT_VERSION
        self.contracts_path = contracts_path
        self._default_missing: str | None = None
        self._given_provider = provider
        self.path, self.tables, self.conn, self.vectors, self.provider = self._open(path, version)

    def _open(self, path: Path, version: str) -> tuple[
            Path, Tables, duckdb.DuckDBPyConnection, ServingVectors | None, EmbeddingProvider]:
        tables = Tables.for_version(version)
        if not path.exists():
            raise RetrievalError(
                f"database {path} does not exist; run `make run` or `dbt build`")
        conn = connect(path, read_only=True)
        try:
            models = _serving_models(conn, tables.serving)
            # the question is embedded by the model of the version searched (a v2 at another
            # size has another model), unless the caller gave a provider
            provider = self._given_provider or _question_provider(version, models,
                                                                  Settings.from_env())
            if models and provider.model not in models:
                raise RetrievalError(
                    f"the index holds vectors of {models} but the provider "
                    f"{provider.name!r} embeds with {provider.model!r}; set "
                    "RAGMART_EMBEDDING_PROVIDER to the provider the index was built with"
                )
            vectors = (ServingVectors.load(conn, tables.serving)
                       if self._vectors_in_memory else None)
        except BaseException:
            conn.close()
            raise
        return path, tables, conn, vectors, provider

    def _pointer_stat(self) -> tuple[int, int, int] | None:
        from ragmart.serving.pointer import publish_dir

        try:
            st = (publish_dir(self._follow_db) / "serving.json").stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _follow_publishes(self) -> None:
        """Swap in the snapshot serving.json names now, if it changed (see the class doc)."""
        if self._follow_db is None or time.monotonic() - self._checked_at < self._recheck:
            return
        self._checked_at = time.monotonic()
        seen = self._pointer_stat()
        if seen == self._pointer_seen:
            return
        from ragmart.serving.pointer import resolve_target

        try:
            target = resolve_target(self._follow_db, self._index_version)
            if target.database == self.path and target.version == self.tables.version:
                self._pointer_seen = seen
                return
            opened = self._open(target.database, target.version)
        except Exception:  # keep answering from what is open; try again at the next check
            return
        old = self.conn
        self.path, self.tables, self.conn, self.vectors, self.provider = opened
        self._pointer_seen = seen
        old.close()

    def search(
        self,
        query_vector: np.ndarray | Sequence[float],
        *,
        k: int = 5,
        doc_types: Sequence[str] | None = None,
        contract: str | Contract | None = None,
        groups: Groups = None,
        as_of: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> RetrievalResult:
        """`search_contract` on this reader's connection, tables and in-memory vectors, for a
        caller in `groups` (None: no group; ALL_GROUPS: the operator switch)."""
        _check_inputs(k, groups, doc_types, as_of)
        self._follow_publishes()
        resolved = (load_contracts(self.contracts_path).get(contract)
                    if isinstance(contract, str) else contract)
        if resolved is not None:
            missing = resolved.missing_allowed_groups
        else:  # read once per reader, like the snapshot it pins
            if self._default_missing is None:
                self._default_missing = default_missing_allowed_groups(self.contracts_path)
            missing = self._default_missing
        if as_of is not None:
            for table in (self.tables.history, self.tables.access):
                if not _table_exists(self.conn, table):
                    raise RetrievalError(
                        f"--as-of needs {table}, which this database lacks; run `dbt build`")
        return search_contract(self.conn, query_vector, k=k, contract=resolved, groups=groups,
                               doc_types=doc_types, as_of=as_of, now=now, tables=self.tables,
                               vectors=self.vectors, missing_allowed_groups=missing)

    def retrieve(self, question: str, **options: Any) -> RetrievalResult:
        """Embed `question` with the provider the index was built with, then `search`."""
        if not isinstance(question, str) or not question.strip():
            raise RetrievalError("the question is empty; pass the text to search for")
        _check_inputs(options.get("k", 5), options.get("groups"), options.get("doc_types"),
                      options.get("as_of"))
        return self.search(self.provider.embed([question])[0], **options)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retrieve(
    question: str,
    *,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
    contract: str | Contract | None = None,
    groups: Groups = None,
    as_of: dt.datetime | None = None,
    db_path: str | Path | None = None,
    index_version: str | None = None,
    contracts_path: str | Path | None = None,
    provider: EmbeddingProvider | None = None,
    now: dt.datetime | None = None,
) -> RetrievalResult:
    """Embed `question` with the provider the index was built with and return the top k
    chunks eligible under `contract` (a name in the contract file, or a Contract) for a
    caller in `groups` (None or []: no group, never every group; ALL_GROUPS: the operator
    switch that admits every document), from the versions live now or at `as_of` (naive UTC),
    or an abstention (`.abstained`, `.reason`) when nothing is eligible, in the database
    `db_path` and index version `index_version`. Without `db_path`, the published snapshot
    serves when one is published (ragmart publish), else $RAGMART_DB with `index_version`
    (default v1): readers never open the database a build is writing. One query: the index
    proposes candidates (a process answering many queries should hold a Retriever)."""
    if not isinstance(question, str) or not question.strip():
        raise RetrievalError("the question is empty; pass the text to search for")
    _check_inputs(k, groups, doc_types, as_of)
    if isinstance(contract, str):
        contract = load_contracts(contracts_path).get(contract)
    with Retriever(db_path=db_path, index_version=index_version, contracts_path=contracts_path,
                   provider=provider, vectors_in_memory=False) as reader:
        return reader.retrieve(question, k=k, doc_types=doc_types, contract=contract,
                               groups=groups, as_of=as_of, now=now)


def sql_macro_catalog(conn: duckdb.DuckDBPyConnection) -> Any:
    """One row per ragmart_retrieve_<v> macro in the current database (name, signature,
    description) as a pyarrow table; each query vector has its version's size."""

    arguments = ", ".join(
        ["query_vector", "k"] + [f"{n} := {MACRO_DEFAULTS[n]}" for n in MACRO_DEFAULTS]
    )
    names = sorted({r[0] for r in conn.execute(
        "select function_name from duckdb_functions() where function_type = 'table_macro' "
        "and function_name like $prefix and database_name = current_database()",
        {"prefix": SQL_MACRO_PREFIX + "%"},
    ).fetchall()})
    sizes = {name: embedding_dimensions(conn.table(
        Tables.for_version(name.removeprefix(SQL_MACRO_PREFIX)).serving)) for name in names}
    return pa.table({
        "macro_name": names,
        "signature": [f"{name}({arguments})" for name in names],
        "description": [
            f"The k nearest chunks of index version {name.removeprefix(SQL_MACRO_PREFIX)} to "
            f"query_vector (float[{sizes[name]}]) that the caller's groups may see (no groups: no "
            "group; all_groups := true: the operator's view of everything), eligible under the "
            "contract clauses given as named arguments, exact, ordered by (distance, "
            "chunk_id); as_of searches the versions live at that time. Open the database (or "
            "`use` it) first."
            for name in names
        ],
    }, schema=pa.schema([("macro_name", pa.string()), ("signature", pa.string()),
                         ("description", pa.string())]))
