"""The SQL table macro ``ragmart_retrieve_<v>``: the search of ragmart.retrieval.sql for SQL
users, every clause a named argument, every argument checked before a row is read.

Its caller passes every value itself (no contract file, no CLI in between), so the macro
refuses what the Python path would refuse, in the same words (each clause's `macro_check`),
and never answers a wrong argument with silently fewer rows. Access is never a default: without
``groups`` (or the operator switch ``all_groups := true``) it refuses to run.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from ragmart.relations import SQL_MACRO_PREFIX
from ragmart.retrieval.clauses import CLAUSES, DUCKDB, POSTGRES, Render
from ragmart.retrieval.contracts import MISSING_GROUPS_POLICIES
from ragmart.retrieval.results import RetrievalError
from ragmart.retrieval.sql import MACRO_DEFAULTS, Tables, macro_param, search_sql
from ragmart.retrieval.values import sql_quoted, sql_text

MACRO_ARGUMENTS = ", ".join(
    ["query_vector", "k"] + [f"{name} := {default}" for name, default in MACRO_DEFAULTS.items()]
)


def macro_checks(p: Render, macro: str, dialect: str = DUCKDB) -> list[tuple[str, str]]:
    """The table macro's argument checks: (SQL true when an argument is wrong, SQL text of the
    error). Its caller passes every value itself, so a value the Python path would refuse
    (a contract field, a CLI option) is refused here too, in the same words, never answered
    with silently fewer rows; and access is never left to a default: without groups (or the
    operator switch all_groups) the macro refuses to run, as no caller means no group. The
    same checks, in the `postgres` dialect, open the SQL function ragmart.retrieve
    (ragmart.serving.postgres.access)."""
    named, array = (" =>", "array") if dialect == POSTGRES else (" :=", "")
    checks = [
        (f"{p('query_vector')} is null", sql_text("query_vector is missing: pass the "
                                                  "question's vector, e.g. ragmart_embed('...')")),
        (f"{p('k')} is null or {p('k')} < 1",
         sql_text("k must be an integer from 1 (the number of chunks)")),
        (f"{p('groups')} is null and not coalesce({p('all_groups')}, false)",
         sql_text(f"groups is missing: pass the caller's groups, groups{named} "
                  f"{array}['hr', ...] (checked against each document's allowed_groups; "
                  f"{array}[] is no group), or all_groups{named} true (the operator switch: "
                  "every document)")),
        (f"{p('missing_allowed_groups')} is null or {p('missing_allowed_groups')} not in "
         f"({', '.join(sql_text(v) for v in MISSING_GROUPS_POLICIES)})",
         f"{sql_text('missing_allowed_groups must be deny or allow, got ')} || "
         f"{sql_quoted(p('missing_allowed_groups'))}"),
    ]
    for clause in CLAUSES:
        check = clause.macro_check(p(clause.name), dialect)
        if check is not None:
            condition, message = check
            checks.append((condition, f"{sql_text(clause.name + ' ')} || {message}"))
    return [(condition, f"{sql_text(macro + ': ')} || {message}")
            for condition, message in checks]


def macro_sql(dims: int, tables: Tables, dialect: str = DUCKDB) -> str:
    """`create or replace macro ragmart_retrieve_<v>` for the SQL path (see the README): every
    clause, active or not, as a named argument; every argument checked before any row is read
    (`macro_checks`: error() raises when the macro is planned, so an empty table too)."""
    p = macro_param(dims)
    body = search_sql(p, "both", tables, limit=p("k"), dialect=dialect)
    cases = "\n".join(f"            when {condition} then error({message})"
                      for condition, message in macro_checks(p, tables.macro))
    return f"""create or replace macro {tables.macro}({MACRO_ARGUMENTS}) as table
with arguments_checked as (
    select case
{cases}
            else true
        end as ok
)
select results.* from ({body}) as results, arguments_checked
where arguments_checked.ok
order by results.rank"""


def install_sql_macros(conn: duckdb.DuckDBPyConnection, dims: int, tables: Tables) -> list[str]:
    """Create the version's table macro in the connection's current database; returns its name.

    The macro body names its tables unqualified: call it with the ragmart database as the
    current one (opening the file with `duckdb ragmart.duckdb`, or `use <alias>`)."""
    conn.execute(macro_sql(dims, tables, DUCKDB))
    return [tables.macro]


def embedding_dimensions(relation: duckdb.DuckDBPyRelation) -> int:
    """The vector size of a serving relation's `embedding` column (FLOAT[n]): an index
    version's size, which its model declared when the version was built."""
    kind = str(relation.project("embedding").types[0])
    size = kind.rpartition("[")[2].rstrip("]")
    if not kind.upper().startswith("FLOAT[") or not size.isdigit():
        raise RetrievalError(f"the embedding column is {kind}, not FLOAT[n]; rebuild with dbt")
    return int(size)


def sql_macro_catalog(conn: duckdb.DuckDBPyConnection) -> pa.Table:
    """One row per ragmart_retrieve_<v> macro in the current database (name, signature,
    description); each query vector has its version's size."""
    names = sorted({r[0] for r in conn.execute(
        "select function_name from duckdb_functions() where function_type = 'table_macro' "
        "and function_name like $prefix and database_name = current_database()",
        {"prefix": SQL_MACRO_PREFIX + "%"},
    ).fetchall()})
    versions = {name: name.removeprefix(SQL_MACRO_PREFIX) for name in names}
    sizes = {name: embedding_dimensions(conn.table(Tables.for_version(versions[name]).serving))
             for name in names}
    return pa.table({
        "macro_name": names,
        "signature": [f"{name}({MACRO_ARGUMENTS})" for name in names],
        "description": [
            f"The k nearest chunks of index version {versions[name]} to "
            f"query_vector (float[{sizes[name]}]) that the caller's groups may see (no groups: no "
            "group; all_groups := true: the operator's view of everything), eligible under the "
            "contract clauses given as named arguments, exact, ordered by (distance, "
            "chunk_id); as_of searches the versions live at that time. Open the database (or "
            "`use` it) first."
            for name in names
        ],
    }, schema=pa.schema([("macro_name", pa.string()), ("signature", pa.string()),
                         ("description", pa.string())]))
