"""Why a search abstains: how each clause narrowed what the caller may see, and the reason.

Every clause predicate (ragmart.retrieval.clauses) is one step of a funnel over the visible
chunks of the source: the chunks it excludes on its own, and those left after it and every step
before it (document steps first, then chunk steps, similarity last). A clause the caller can
also set (the document-type filter) is counted twice, the contract's value and the caller's
apart. Only chunks the caller may see are counted (`documents_sql` applies access first): the
figures and the reason are the same whatever the hidden documents contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragmart.retrieval import postgres_sql
from ragmart.retrieval import sql as duckdb_sql
from ragmart.retrieval.clauses import CLAUSES, DOCUMENT, DUCKDB, LEVELS, POSTGRES, Predicate
from ragmart.retrieval.contracts import Contract
from ragmart.retrieval.request import ALL_GROUPS, Groups
from ragmart.retrieval.results import ClauseCount
from ragmart.retrieval.sql import Tables, documents_sql, used
from ragmart.retrieval.values import clip


@dataclass(frozen=True)
class ClauseFunnel:
    """`clause_counts`' answer: the counts, and per clause with a `hint_column` the values of
    that column among the visible chunks of the source (what its filter could have named)."""

    counts: list[ClauseCount]
    visible: dict[str, list[str]]
    levels: tuple[str, ...] = ()  # the level of each step (counts[1:])


def _steps(p_types: dict[str, str], params: dict[str, Any], contract: Contract | None,
           requested: dict[str, Sequence[str] | None], dims: int,
           dialect: str) -> list[Predicate]:
    """Every clause's predicates as funnel steps, ordered by level (stable: registry order).
    Adds to `params` and `p_types` the values of the clauses counted apart."""
    steps: list[Predicate] = []
    for clause in CLAUSES:
        if clause.request_option is None:
            steps += clause.predicates(_frame(dialect).python_param(dims), dialect)
            continue
        contract_value = getattr(contract, clause.name) if contract else clause.default
        asked = requested.get(clause.request_option)
        for counted_as, bound, wanted in (
            (clause.name, clause.bind(contract_value), contract_value),
            (clause.request_counted_as, clause.bind(None, asked), asked),
        ):
            if not wanted:
                continue
            name = f"{counted_as}__counted"
            params[name] = bound
            p_types[name] = clause.sql_type
            p = _frame(dialect).python_param(dims, p_types)
            steps += clause.predicates(p, dialect, value=p(name), counted_as=counted_as)
    return sorted(steps, key=lambda step: LEVELS.index(step.level))


def _frame(dialect: str) -> Any:
    """The module rendering a search's frame in `dialect` (its parameters, its sources)."""
    return postgres_sql if dialect == POSTGRES else duckdb_sql


def clause_counts(conn: Any, params: dict[str, Any], *, source: str,
                  contract: Contract | None, requested: dict[str, Sequence[str] | None],
                  dims: int, tables: Tables, dialect: str = DUCKDB) -> ClauseFunnel:
    """The funnel of the visible chunks of the source (see the module docstring), on a DuckDB
    connection or (dialect postgres) a psycopg one."""
    params = dict(params)
    extra: dict[str, str] = {}
    steps = _steps(extra, params, contract, requested, dims, dialect)
    frame = _frame(dialect)
    p = frame.python_param(dims, extra)
    document_steps = [s for s in steps if s.level == DOCUMENT]
    flags = ",\n            ".join(
        f"coalesce({s.sql}, false) as ok_{i}" for i, s in enumerate(document_steps)
    ) or "true as ok"
    tests = [f"documents.ok_{i}" for i in range(len(document_steps))] + [
        f"coalesce({s.sql}, false)" for s in steps[len(document_steps):]
    ]
    parts = ["count(*)"]
    for i, test in enumerate(tests):
        parts.append(f"count(*) filter (where not {test})")
        parts.append(f"count(*) filter (where {' and '.join(tests[: i + 1])})")
    hinted = [c.hint_column for c in CLAUSES if c.hint_column]
    distinct = "array_agg(distinct {})" if dialect == POSTGRES else "list(distinct {})"
    parts += [f"{distinct.format(f'documents.{column}')} "
              f"filter (where documents.{column} is not null)" for column in hinted]
    columns = "".join(f"\n            documents.{column}," for column in hinted)
    sql = f"""
    with documents as (
        select
            documents.document_id,
            documents.document_version,{columns}
            {flags}
        from ({documents_sql(p, source, tables, dialect)}
        ) as documents
    )
    select {', '.join(parts)}
    from ({frame.chunks_sql(p, source, tables)}
    ) as chunks
    inner join documents
        on
            chunks.document_id = documents.document_id
            and chunks.document_version = documents.document_version
    """
    values = conn.execute(sql, used(sql, params) if dialect == DUCKDB else params).fetchone()
    out = [ClauseCount("as_of" if source == "as_of" else "serving_set", 0, int(values[0]))]
    for i, step in enumerate(steps):
        out.append(ClauseCount(step.counted_as, int(values[1 + 2 * i]), int(values[2 + 2 * i])))
    # sorted by code point, as both engines' binary order of text
    visible = {column: sorted(values[1 + 2 * len(steps) + j] or [])
               for j, column in enumerate(hinted)}
    return ClauseFunnel(out, visible, tuple(step.level for step in steps))


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(repr(clip(v)) for v in values) or "(none)"


def _caller(groups: Groups) -> str:
    if not groups:
        return ("a caller without groups (name the caller's groups: --groups / groups=[...]; "
                "an operator may pass --all-groups / groups=ALL_GROUPS)")
    return f"the groups {_quoted(list(groups))}"


def abstention_reason(contract: Contract | None, funnel: ClauseFunnel, *, groups: Groups,
                      requested: dict[str, Sequence[str] | None]) -> str:
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
    for clause in CLAUSES:
        if not clause.hint_column:
            continue
        visible = funnel.visible[clause.hint_column]
        contract_value = getattr(contract, clause.name) if contract else None
        for counted_as, values in ((clause.request_counted_as,
                                    requested.get(clause.request_option or "")),
                                   (clause.name, contract_value)):
            unknown = [v for v in values or () if v not in visible]
            if unknown and any(c.clause == counted_as and c.excluded for c in counts):
                hints.append(f"{counted_as}: no visible chunk has "
                             f"{clause.hint_column.replace('_', ' ')} {_quoted(unknown)} "
                             f"(visible types: {_quoted(visible)})")
    hint = "; " + "; ".join(hints) if hints else ""
    return f"no chunk satisfies {what}: {', '.join(excluding)}{first}{hint}"
