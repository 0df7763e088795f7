"""The clauses of a retrieval contract: one object each, the only place a clause is written.

A clause object holds everything ragmart knows about its clause:

- its name: the contract field in retrieval_contracts.yml, the attribute of a Contract, the
  search parameter ($name in the Python path) and the named argument of the SQL table macro
  ``ragmart_retrieve_<v>`` (``name := value``), with its SQL type and the macro's default;
- its parameter: how a YAML value is read and checked (`parse`, `problems`: messages that say
  what to write instead), the default that admits everything, the value bound to the SQL
  (`bind`) and whether a bound value restricts anything at all (`active`);
- its SQL, per dialect (one method per dialect, named after it: `duckdb`, `postgres`; a clause
  whose SQL is standard writes it once for both): boolean predicates over the visible document
  versions (`documents`), over the chunks (`chunks`), or over a chunk's cosine distance; NULL
  counts as false, and no predicate may raise on a row's data (an engine evaluates a
  conjunction in any order, and an error would echo a row the caller may not see);
- how the in-memory path (ragmart.retrieval.memory) treats it: a document or chunk clause is
  applied by the exact eligibility SQL whose answer a Retriever remembers (`clock_bound`: the
  clock moves the answer, so it is remembered for a while only); a distance clause is not part
  of eligibility and bounds how far the candidate pools go (`max_distance`);
- how an abstention counts it: each predicate is one step of the funnel, named `counted_as`.

Contract (ragmart.retrieval.contracts) is generated from CLAUSES, the search parameters, the
macro's signature, the planner, the in-memory path and the abstention counts all iterate over
CLAUSES: adding a clause is one new object here, appended to CLAUSES, plus its tests
(tests/python/test_retrieval_contracts.py checks that every registered clause is validated,
rendered into the Python search and the SQL macro, applied in memory and counted).

Access (allowed_groups) is not a clause: it decides which document versions a search sees at
all (ragmart.retrieval.sql.documents_sql), before any clause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

from ragmart.retrieval.clause_base import (  # noqa: F401 - re-exported: what clauses share
    CHUNK,
    CHUNK_METADATA,
    COMPLETENESS_LEVELS,
    DIALECTS,
    DISTANCE,
    DOCUMENT,
    DUCKDB,
    FIELD,
    LEVELS,
    METADATA_COLUMNS,
    POSTGRES,
    Clause,
    Predicate,
    Render,
)
from ragmart.retrieval.values import (
    as_datetime,
    clip,
    completeness_sql,
    json_list,
    parse_duration,
    sql_quoted,
    sql_text,
)


class DocumentTypes(Clause):
    name = "document_types"
    sql_type = "varchar[]"
    request_option = "doc_types"
    request_counted_as = "doc_type_filter"
    hint_column = "document_type"

    def parse(self, raw: object) -> tuple[str, ...]:
        if isinstance(raw, list) and raw and all(isinstance(t, str) and t for t in raw):
            return tuple(raw)
        raise ValueError("must be a non-empty list of document types")

    def problems(self, value: Any) -> list[str]:
        if value is not None and (isinstance(value, str) or not value
                                  or not all(isinstance(t, str) and t for t in value)):
            return [self.RULE]
        return []

    RULE = ("must be a non-empty list of document types, e.g. [policy, handbook]; leave the "
            "field out to allow every type")

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        if dialect == POSTGRES:
            return (f"{value} is not null and (cardinality({value}) = 0 or "
                    f"array_position({value}, null) is not null or '' = any({value}))",
                    sql_text(self.RULE))
        return (f"{value} is not null and (len({value}) = 0 or len(list_filter({value}, "
                f"t -> coalesce(t, '') = '')) > 0)", sql_text(self.RULE))

    def bind(self, value: Any, requested: Sequence[str] | None = None) -> str | None:
        types = list(value) if value else None
        if requested:
            wanted = [str(t) for t in requested]
            types = [t for t in types if t in wanted] if types is not None else wanted
        return json_list(types)

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        return {DOCUMENT: f"""(
            {value} is null or list_contains({value}, documents.document_type)
        )"""}

    def postgres(self, p: Render, value: str) -> dict[str, str]:
        return {DOCUMENT: f"""(
            {value} is null or documents.document_type = any({value})
        )"""}


class RequiredMetadata(Clause):
    name = "required_metadata"
    sql_type = "varchar[]"
    default = ()
    counted_as: ClassVar[dict[str, str]] = {CHUNK: "required_chunk_metadata"}

    def parse(self, raw: object) -> tuple[str, ...]:
        if isinstance(raw, list) and all(isinstance(f, str) for f in raw):
            return tuple(raw)
        raise ValueError("must be a list of field names")

    RULE = f"is not a field name; use {', '.join(METADATA_COLUMNS)} or a key of the " \
           "producer's metadata"

    def problems(self, value: Any) -> list[str]:
        return [f"{clip(name)!r} {self.RULE}"
                for name in value if not isinstance(name, str) or not FIELD.match(name)]

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        if dialect == POSTGRES:
            wrong = f"f is null or f !~ {sql_text(FIELD.pattern)}"
            first = (f"(select f from unnest({value}) with ordinality as fields(f, i) "
                     f"where {wrong} order by i limit 1)")
            return (f"{value} is not null and exists (select from unnest({value}) as "
                    f"fields(f) where {wrong})",
                    f"{sql_quoted(first)} || ' ' || {sql_text(self.RULE)}")
        bad = (f"list_filter({value}, f -> f is null or not regexp_full_match(f, "
               f"{sql_text(FIELD.pattern.strip('^$'))}))")
        return (f"{value} is not null and len({bad}) > 0",
                f"{sql_quoted(f'{bad}[1]')} || ' ' || {sql_text(self.RULE)}")

    def bind(self, value: Any, requested: Sequence[str] | None = None) -> str | None:
        return json_list(value)

    def active(self, bound: Any) -> bool:
        return bound not in (None, "[]")

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        document_checks = "\n".join(
            f"                when field_name = '{name}' then "
            f"nullif(trim(cast(documents.{name} as varchar)), '') is null"
            for name in METADATA_COLUMNS if name not in CHUNK_METADATA
        )
        chunk_level = ", ".join(f"'{name}'" for name in CHUNK_METADATA)
        chunk_checks = "\n".join(
            f"                when field_name = '{name}' then nullif(trim(chunks.{name}), '') "
            "is null" for name in CHUNK_METADATA
        )
        # a key that is not a field name, or metadata that is not JSON, reads as missing
        return {
            DOCUMENT: f"""(
            len(list_filter(coalesce({value}, []::varchar[]), field_name ->
                case
                when field_name in ({chunk_level}) then false
{document_checks}
                else not regexp_full_match(field_name, '[A-Za-z_][A-Za-z0-9_]*')
                    or nullif(trim(try(json_extract_string(
                        documents.metadata, '$."' || field_name || '"'))), '') is null
                end)) = 0
        )""",
            CHUNK: f"""(
            len(list_filter(coalesce({value}, []::varchar[]), field_name ->
                case
{chunk_checks}
                else false
                end)) = 0
        )""",
        }

    def postgres(self, p: Render, value: str) -> dict[str, str]:
        # as duckdb: a key that is not a field name, or metadata that is not JSON, reads as
        # missing (pg_input_is_valid: no cast that could raise on a row's data)
        document_checks = "\n".join(
            f"                when fields.name = '{name}' then "
            f"nullif(trim(cast(documents.{name} as text)), '') is null"
            for name in METADATA_COLUMNS if name not in CHUNK_METADATA
        )
        chunk_checks = "\n".join(
            f"                when fields.name = '{name}' then nullif(trim(chunks.{name}), '') "
            "is null" for name in CHUNK_METADATA
        )
        chunk_level = ", ".join(f"'{name}'" for name in CHUNK_METADATA)
        metadata = ("case when pg_input_is_valid(documents.metadata, 'jsonb') then "
                    "cast(documents.metadata as jsonb) ->> fields.name end")
        return {
            DOCUMENT: f"""not exists (
            select from unnest(coalesce({value}, '{{}}'::text[])) as fields(name) where
                case
                when fields.name in ({chunk_level}) then false
{document_checks}
                else fields.name !~ '^[A-Za-z_][A-Za-z0-9_]*$'
                    or nullif(trim({metadata}), '') is null
                end
        )""",
            CHUNK: f"""not exists (
            select from unnest(coalesce({value}, '{{}}'::text[])) as fields(name) where
                case
{chunk_checks}
                else false
                end
        )""",
        }


class MaxDocumentAge(Clause):
    """The version's age (valid_from) at the reference time: as_of, else the query's clock."""

    name = "max_document_age"
    sql_type = "interval"
    clock_bound = True

    def parse(self, raw: object) -> dt.timedelta:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise ValueError(f"must be {exc}") from None

    def problems(self, value: Any) -> list[str]:
        if value is not None and (not isinstance(value, dt.timedelta)
                                  or value <= dt.timedelta(0)):
            return ["must be a positive duration"]
        return []

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        return f"{value} <= interval '0 seconds'", sql_text("must be a positive duration")

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        reference_time = f"coalesce({p('as_of')}, {p('now')}, timezone('UTC', current_timestamp))"
        return {DOCUMENT: f"""(
            {value} is null
            or documents.document_valid_from >= {reference_time} - {value}
        )"""}

    postgres = duckdb  # standard SQL (timezone('UTC', current_timestamp) is naive UTC in both)


class MinDocumentVersion(Clause):
    name = "min_document_version"
    sql_type = "bigint"

    def parse(self, raw: object) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        raise ValueError("must be a non-negative integer (a change_seq)")

    def problems(self, value: Any) -> list[str]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            return [self.RULE]
        return []

    RULE = "must be a non-negative integer (a change_seq)"

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        return f"{value} < 0", sql_text(self.RULE)

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        return {DOCUMENT: f"""(
            {value} is null
            or documents.document_version >= {value}
        )"""}

    postgres = duckdb  # standard SQL


class MinEffectiveDate(Clause):
    name = "min_effective_date"
    sql_type = "timestamp"

    def parse(self, raw: object) -> dt.datetime:
        try:
            return as_datetime(raw)
        except ValueError as exc:
            raise ValueError(f"must be {exc}") from None

    def problems(self, value: Any) -> list[str]:
        if value is not None and not isinstance(value, dt.datetime):
            return ["must be a date or timestamp"]
        return []

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        return {DOCUMENT: f"""(
            {value} is null
            or documents.document_valid_from >= {value}
        )"""}

    postgres = duckdb  # standard SQL


class MinChunkCompleteness(Clause):
    name = "min_chunk_completeness"
    sql_type = "varchar"
    default = "fragment"
    macro_default = "'fragment'"

    def parse(self, raw: object) -> str:
        if raw in COMPLETENESS_LEVELS:
            return str(raw)
        raise ValueError(f"must be one of {', '.join(COMPLETENESS_LEVELS)}")

    def problems(self, value: Any) -> list[str]:
        if value not in COMPLETENESS_LEVELS:
            return [f"{self.RULE}, got {clip(value)!r}"]
        return []

    RULE = f"must be one of {', '.join(COMPLETENESS_LEVELS)}"

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        levels = ", ".join(f"'{level}'" for level in COMPLETENESS_LEVELS)
        return (f"{value} is null or {value} not in ({levels})",
                f"{sql_text(self.RULE + ', got ')} || {sql_quoted(value)}")

    def active(self, bound: Any) -> bool:
        return bound not in (None, "fragment")

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        levels = "[" + ", ".join(f"'{level}'" for level in COMPLETENESS_LEVELS) + "]"
        return {CHUNK: f"""(
            list_position({levels}, {completeness_sql()})
            >= list_position({levels}, coalesce({value}, 'fragment'))
        )"""}

    def postgres(self, p: Render, value: str) -> dict[str, str]:
        levels = "array[" + ", ".join(f"'{level}'" for level in COMPLETENESS_LEVELS) + "]"
        return {CHUNK: f"""(
            array_position({levels}, {completeness_sql()})
            >= array_position({levels}, coalesce({value}, 'fragment'))
        )"""}


class MinSimilarity(Clause):
    """1 - cosine distance, at least. Not part of eligibility: the nearest rows come first."""

    name = "min_similarity"
    sql_type = "double"
    on_distance = True

    def parse(self, raw: object) -> float:
        if isinstance(raw, int | float) and not isinstance(raw, bool) and -1 <= raw <= 1:
            return float(raw)
        raise ValueError("must be a number between -1 and 1")

    def problems(self, value: Any) -> list[str]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not -1.0 <= float(value) <= 1.0):
            return [self.RULE]
        return []

    RULE = "must be a number between -1 and 1 (1 - cosine distance)"

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        nan = f"{value} = 'NaN'" if dialect == POSTGRES else f"isnan({value})"
        return f"{nan} or {value} < -1 or {value} > 1", sql_text(self.RULE)

    def max_distance(self, bound: Any) -> float | None:
        return None if bound is None else 1.0 - bound

    def duckdb(self, p: Render, value: str) -> dict[str, str]:
        return {DISTANCE: f"""(
            {value} is null
            or chunks.distance <= 1.0 - {value}
        )"""}

    postgres = duckdb  # standard SQL (the distance is each engine's cosine distance)


# The registry, in the order the SQL applies and the abstention counts the clauses (within a
# level: document predicates first, then chunk predicates, then the distance).
CLAUSES: tuple[Clause, ...] = (
    DocumentTypes(), RequiredMetadata(), MaxDocumentAge(), MinDocumentVersion(),
    MinEffectiveDate(), MinChunkCompleteness(), MinSimilarity(),
)
DISTANCE_CLAUSES = frozenset(clause.name for clause in CLAUSES if clause.on_distance)


def active_clauses(params: dict[str, Any]) -> frozenset[str]:
    """The clauses whose bound parameters restrict anything. The Python path leaves the others
    out of its SQL (they admit every row; compiling them costs ~10 ms a query, measured); the
    table macro keeps them all."""
    return frozenset(c.name for c in CLAUSES if c.active(params.get(c.name)))


def max_distance(params: dict[str, Any]) -> float | None:
    """The farthest distance any row may have under the bound parameters (None: unbounded)."""
    bounds = [b for c in CLAUSES if (b := c.max_distance(params.get(c.name))) is not None]
    return min(bounds) if bounds else None


def predicates(p: Render, dialect: str, level: str, *,
               active: frozenset[str] | None = None) -> list[str]:
    """The SQL of every (active) clause's predicates at `level`, in registry order."""
    return [pred.sql for clause in CLAUSES if active is None or clause.name in active
            for pred in clause.predicates(p, dialect) if pred.level == level]
