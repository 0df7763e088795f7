"""Access on the PostgreSQL serving database: the SQL function ``ragmart.retrieve``, the roles'
access groups (``ragmart.role_groups``) and row-level security on every data table.

- ``ragmart.retrieve(query_vector, k, groups => ..., <clause> => ..., as_of => ...)`` is the
  counterpart of DuckDB's table macro ``ragmart_retrieve_<v>``: the same argument names and
  defaults, the same checks in the same words (ragmart.retrieval.macro.macro_checks, in the
  `postgres` dialect: it refuses to run without ``groups`` or ``all_groups => true``), the same
  search (ragmart.retrieval.postgres_sql, every clause) and the same answers, ordered by
  (distance, chunk_id). It reads the serving pointer itself and searches the publication that
  serves, of whichever version serves: one branch per published version.
- ``ragmart.role_groups(role_name, groups, all_groups)`` maps a database role to access groups
  (`grant_groups`, ``ragmart postgres grant``). Row-level security on every data table lets a
  role listed there read only the rows of the serving publication that its groups admit, by the
  access rule of every search (ragmart.retrieval.sql.access_sql: the version's own
  allowed_groups and its document's latest known ones; a document without allowed_groups is
  denied), whatever SQL it writes; a role not listed reads nothing. A role reads its own row of
  role_groups only, and may not change it. The publishing role owns the tables and is not
  subject to the policies (nor is a superuser).

`install_access(conn, version)` creates what is missing or changed of it in the publishing
transaction (ragmart.serving.postgres.publish), so a reader sees a new function or policy with
the new publication, and grants the tables of a new version to the roles already mapped; what
is already in place it leaves alone (no lock on a reader's table).
"""

from __future__ import annotations

from ragmart.relations import ACCESS_TABLE, DOCUMENTS_TABLE, Relations, check_version
from ragmart.retrieval import postgres_sql
from ragmart.retrieval.clauses import POSTGRES
from ragmart.retrieval.macro import macro_checks
from ragmart.retrieval.postgres_sql import (
    PUBLICATION,
    PostgresTables,
    candidates_sql,
    eligible_count_sql,
    eligible_estimate_sql,
    exact_ids_sql,
    function_param,
    postgres_type,
    search_sql,
    visible_sql,
    with_source_sql,
)
from ragmart.retrieval.results import COLUMNS
from ragmart.retrieval.sql import MACRO_DEFAULTS, access_sql, parameter_types
from ragmart.serving.postgres.schema import (
    SCHEMA,
    SERVING,
    is_serving_table,
    table_version,
)
from ragmart.serving.postgres.settings import PostgresServingError

FUNCTION = f"{SCHEMA}.retrieve"
ROLE_GROUPS = f"{SCHEMA}.role_groups"
POLICY = "ragmart_readers"
SEARCH_SETTINGS = {"hnsw.iterative_scan": postgres_sql.ITERATIVE_SCAN,
                   "hnsw.ef_search": str(postgres_sql.EF_SEARCH),
                   "hnsw.max_scan_tuples": str(postgres_sql.MAX_SCAN_TUPLES)}


def function_arguments() -> str:
    """The function's arguments: query_vector and k, then the macro's named arguments with
    the macro's defaults, typed for PostgreSQL."""
    types = {name: postgres_type(kind) for name, kind in parameter_types(0).items()}
    types["query_vector"] = "vector"  # its size is the serving version's, checked inside
    return ", ".join(["query_vector vector", f"k {types['k']}"] + [
        f"{name} {types[name]} default {default}" for name, default in MACRO_DEFAULTS.items()])


def _result_columns(types: dict[str, str]) -> str | None:
    """RETURNS TABLE (...): rank, distance and the result columns, typed as the serving
    table's columns `types` (name -> PostgreSQL type; None: the table lacks one, no search
    can serve it)."""
    types = {**types, "document_valid_to": "timestamp without time zone",
             "completeness": "text"}
    if any(name not in types for name in COLUMNS):
        return None
    return ", ".join(["rank bigint", "distance double precision"]
                     + [f"{name} {types[name]}" for name in COLUMNS] + ["source text"])


def _dimensions(types: dict[str, str]) -> int | None:
    size = types.get("embedding", "").removeprefix("vector(").rstrip(")")
    return int(size) if size.isdigit() else None


def _version_branch(tables: PostgresTables, dims: int) -> str:
    """The search of one version: its size checked, then HNSW candidates re-ranked exactly when
    more than EXACT_MAX_ELIGIBLE rows are eligible, else the exact scan: the Python path's plan
    (a page sample's estimate, the capped count only when the estimate is unclear)."""
    p = function_param
    # the exact scan in the Python path's two steps (ragmart.retrieval.postgres._exact): the
    # first k ids from the narrow columns, then those ranked with the result columns
    exact_live, exact_as_of = (with_source_sql(search_sql(
        p, source, tables, limit=p("k"),
        only=f"array({exact_ids_sql(p, source, tables, limit=p('k'))})"),
        tables, p, as_of=source == "as_of") for source in ("live", "as_of"))
    pooled = with_source_sql(search_sql(p, "live", tables, limit=p("k"), only="pool_ids"),
                             tables, p, as_of=False)
    candidates = candidates_sql(p, tables, limit="pool_size")
    count = eligible_count_sql(p, tables)
    estimate = eligible_estimate_sql(p, tables)
    many, few = (postgres_sql.EXACT_MAX_ELIGIBLE * postgres_sql.PLAN_MARGIN,
                 postgres_sql.EXACT_MAX_ELIGIBLE / postgres_sql.PLAN_MARGIN)
    return f"""
        if vector_dims(retrieve.query_vector) <> {dims} then
            raise exception '{FUNCTION}: query_vector has % dimensions, {tables.version} (which '
                'serves) has {dims}: embed the question with its model',
                vector_dims(retrieve.query_vector);
        end if;
        if retrieve.as_of is not null then
            return query {exact_as_of};
            return;
        end if;
        -- the plan of postgres_sql.plan_by_estimate, then the count when it is unclear
        estimated := ({estimate});
        if estimated >= {many} or (estimated > {few}
                and ({count}) > {postgres_sql.EXACT_MAX_ELIGIBLE}) then
            perform set_config('hnsw.ef_search', {postgres_sql.ef_search_sql(p)}, true);
            pool_size := retrieve.k + {postgres_sql.TIE_MARGIN};
            loop
                select coalesce(array_agg(pool.chunk_id order by pool.distance), '{{}}'),
                    coalesce(array_agg(pool.distance order by pool.distance), '{{}}')
                into pool_ids, pool_distances
                from ({candidates}) as pool;
                exit when cardinality(pool_ids) < pool_size
                    or pool_distances[pool_size] > pool_distances[retrieve.k];
                pool_size := pool_size * 4;
            end loop;
            if cardinality(pool_ids) >= retrieve.k then
                return query {pooled};
                return;
            end if;
        end if;
        return query {exact_live};
        return;"""


def function_sql(columns: dict[str, dict[str, str]], version: str) -> str | None:
    """`create or replace function ragmart.retrieve(...)`, with a branch per version whose
    serving table the schema holds with every result column (`version`'s included; None when
    `version`'s lacks one: it is not a retrieval set, the function stays as it was).
    `columns`: table name -> its columns (name -> PostgreSQL type), every data table of the
    schema (`_catalog`)."""
    returns = _result_columns(columns.get(Relations(version).serving, {}))
    if returns is None:
        return None
    versions = sorted({v for t in columns if is_serving_table(t)
                       for v in [table_version(t)] if v} | {check_version(version)},
                      key=lambda v: int(v[1:]))
    branches = []
    for v in versions:
        tables = PostgresTables.for_version(v)
        types = columns.get(Relations(v).serving, {})
        dims = _dimensions(types)
        if dims is not None and _result_columns(types) is not None:
            branches.append(f"if serving_version = '{v}' then{_version_branch(tables, dims)}")
    if not branches:
        raise PostgresServingError(f"the serving database has no {version} vectors to search")
    checks = "\n".join(
        f"    if {condition} then\n        raise exception '%', {message};\n    end if;"
        for condition, message in macro_checks(function_param, FUNCTION, POSTGRES))
    settings = "\n".join(f"set {name} = '{value}'" for name, value in SEARCH_SETTINGS.items())
    dispatch = "\n    els".join(branches)
    return f"""create or replace function {FUNCTION}({function_arguments()})
returns table ({returns})
language plpgsql stable
{settings}
as $function$
#variable_conflict use_column
declare
    {function_param(PUBLICATION)} bigint;
    serving_version text;
    pool_size bigint;
    estimated double precision;
    pool_ids text[];
    pool_distances double precision[];
begin
{checks}
    select s.publication_id, s.version into {function_param(PUBLICATION)}, serving_version
    from {SERVING} as s;
    if serving_version is null then
        raise exception '{FUNCTION}: nothing is published on this database';
    end if;
    {dispatch}
    end if;
    raise exception '{FUNCTION}: version % serves but this function predates it; publish '
        'again to reinstall it', serving_version;
end;
$function$"""


def _role_setting(column: str) -> str:
    return f"(select g.{column} from {ROLE_GROUPS} as g where g.role_name = current_user)"


def _caller(name: str) -> str:
    """The access rule's parameters for a database role: its groups from role_groups; a
    document without allowed_groups is denied."""
    return {"groups": _role_setting("groups"), "all_groups": _role_setting("all_groups"),
            "missing_allowed_groups": "'deny'"}[name]


def policy_sql(table: str, latest_known: bool = True) -> str:
    """The USING expression of the readers' policy on `ragmart.<table>`: the serving
    publication's rows whose groups (and their document's latest known ones, from
    dim_document_access: `latest_known`; a publication without that table has only the
    rows' own) admit the role."""
    publication = f"(select s.publication_id from {SERVING} as s)"
    own = visible_sql(table, publication)
    rule = access_sql(_caller, "documents", POSTGRES)
    if table == ACCESS_TABLE or not latest_known:  # its own groups are the latest known
        return f"""{own} and exists (
    select from (
        select {table}.allowed_groups, {table}.allowed_groups as latest_allowed_groups
    ) as documents
    where {rule}
)"""
    latest = f"""exists (
    select from (
        select {table}.allowed_groups, latest.allowed_groups as latest_allowed_groups
        from {SCHEMA}.{ACCESS_TABLE} as latest
        where latest.document_id = {table}.document_id
            and {visible_sql('latest', publication)}
    ) as documents
    where {rule}
)"""
    return f"{own}\n    and {latest}"


_ROLE_GROUPS_DDL = f"""create table if not exists {ROLE_GROUPS} (
    role_name text primary key,
    groups text[] not null,
    all_groups boolean not null default false
)"""
# every table of the schema: row-level security on?, the readers' policy's comment, columns
_TABLES_SQL = """
    select c.relname, c.relrowsecurity,
        (select obj_description(p.oid, 'pg_policy') from pg_policy as p
         where p.polrelid = c.oid and p.polname = %(policy)s),
        (select json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
         from pg_attribute as a where a.attrelid = c.oid and a.attnum > 0
         and not a.attisdropped)
    from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
    where n.nspname = %(schema)s and c.relkind in ('r', 'p')"""
_FUNCTION_SQL = ("select p.prosrc from pg_proc as p join pg_namespace as n on n.oid = "
                 "p.pronamespace where n.nspname = %s and p.proname = %s")
# each mapped role: whether it lacks USAGE on the schema, SELECT on a table, EXECUTE
_ROLES_SQL = f"""
    select g.role_name, not has_schema_privilege(g.role_name, %(schema)s, 'usage'),
        exists (select from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
                where n.nspname = %(schema)s and c.relkind in ('r', 'p', 'v')
                and not has_table_privilege(g.role_name, c.oid, 'select')),
        exists (select from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
                where n.nspname = %(schema)s and p.proname = %(function)s
                and not has_function_privilege(g.role_name, p.oid, 'execute'))
    from {ROLE_GROUPS} as g"""


def _catalog(conn) -> tuple[dict, list[str], list[tuple]]:
    """role_groups created when missing, then what install_access compares, in ONE round
    trip: table -> (row-level security on, policy comment, columns) of every table of the
    schema, the function's sources, and the mapped roles' missing privileges."""
    name = FUNCTION.split(".")[1]
    with conn.pipeline():
        conn.execute(_ROLE_GROUPS_DDL)
        tables = conn.execute(_TABLES_SQL, {"policy": POLICY, "schema": SCHEMA})
        function = conn.execute(_FUNCTION_SQL, (SCHEMA, name))
        roles = conn.execute(_ROLES_SQL, {"schema": SCHEMA, "function": name})
    return ({table: (rls, comment, columns or {})
             for table, rls, comment, columns in tables.fetchall()},
            [src for (src,) in function.fetchall()], roles.fetchall())


def install_access(conn, version: str) -> None:
    """The SQL function, role_groups and the readers' policies on every data table, and SELECT
    on the schema's tables for every mapped role (idempotent; in the caller's transaction).

    What is already in place is left alone: a policy (or the function) is created only when
    it is missing or its SQL changed (`_policy_ddl`: the md5 of its SQL, kept in the policy's
    comment and in the function's body), and row-level security is enabled only where it is
    off. Creating a policy takes an ACCESS EXCLUSIVE lock on its table until the publish
    commits, which would hold every reader of the table; a publish that changes no policy
    takes none (tests/python/test_postgres_gaps.py). What is in place is read in one round
    trip (`_catalog`); a publish that changes nothing sends nothing else."""
    found, sources, roles = _catalog(conn)
    columns = {table: cols for table, (_, _, cols) in found.items()
               if "published_in" in cols}  # the data tables (schema.data_tables)
    ddl = _policy_ddl(ROLE_GROUPS, found.get(ROLE_GROUPS.split(".")[1]),
                      "role_name = current_user")
    for table in sorted(columns):
        if table not in (DOCUMENTS_TABLE, ACCESS_TABLE) and table_version(table) is None:
            continue
        ddl += _policy_ddl(f'{SCHEMA}."{table}"', found[table],
                           policy_sql(table, latest_known=ACCESS_TABLE in columns))
    function = function_sql(columns, version)
    created = False
    if function is not None:
        mark = f"-- ragmart:{_md5(function)}"
        if [src.strip().splitlines()[0] for src in sources] != [mark]:
            ddl.append(function.replace("$function$\n", f"$function$\n{mark}\n", 1))
            created = not sources  # a replaced function keeps its grants
    if ddl:
        conn.execute(";\n".join(ddl))
    for role, no_usage, no_select, no_execute in roles:
        _grant(conn, role, usage=no_usage, select=no_select, execute=no_execute or created)


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _policy_ddl(relation: str, found: tuple | None, using: str) -> list[str]:
    """The statements that give `relation` row-level security with the readers' policy USING
    `using`, where it is not already so: `found` is its (row-level security on, policy
    comment, ...) from `_catalog` (the comment holds the md5 of the policy's expression)."""
    mark = f"ragmart:{_md5(using)}"
    enabled, comment = found[:2] if found else (False, None)
    ddl = [] if enabled else [f"alter table {relation} enable row level security"]
    if comment != mark:
        ddl += [f"drop policy if exists {POLICY} on {relation}",
                f"create policy {POLICY} on {relation} for select using ({using})",
                f"comment on policy {POLICY} on {relation} is '{mark}'"]
    return ddl


def _grant(conn, role: str, *, usage: bool, select: bool, execute: bool) -> None:
    """USAGE on the schema, SELECT on its tables, EXECUTE on the function for `role`: those
    asked for (a GRANT rewrites the object's catalog row even when nothing changes)."""
    from psycopg import sql

    name, schema = sql.Identifier(role), sql.Identifier(SCHEMA)
    if usage:
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, name))
    if select:
        conn.execute(sql.SQL("grant select on all tables in schema {} to {}").format(
            schema, name))
    if execute:
        conn.execute(sql.SQL("grant execute on function {} to {}").format(sql.SQL(FUNCTION),
                                                                         name))


def _grant_tables(conn, role: str) -> None:
    """USAGE on the schema, SELECT on its tables and EXECUTE on the function for `role`, where
    it lacks them."""
    row = conn.execute(_ROLES_SQL + " where g.role_name = %(role)s",
                       {"schema": SCHEMA, "function": FUNCTION.split(".")[1], "role": role}
                       ).fetchone()
    usage, select, execute = row[1:] if row else (True, True, False)
    _grant(conn, role, usage=usage, select=select, execute=execute)


def grant_groups(conn, role: str, groups: list[str], *, all_groups: bool = False) -> None:
    """Map the database role `role` to `groups` (or every group, the operator switch): it then
    reads, through any SQL, the serving chunks those groups admit. The role must exist (the
    operator creates it: `create role <name> login password ...`)."""
    exists = conn.execute("select exists (select from pg_roles where rolname = %s)",
                          (role,)).fetchone()[0]
    if not exists:
        raise PostgresServingError(
            f"role {role!r} does not exist on the serving database; create it first "
            f"(create role \"{role}\" login password '...') and grant it again")
    if conn.execute("select to_regclass(%s) is null", (ROLE_GROUPS,)).fetchone()[0]:
        raise PostgresServingError("nothing is published on the serving database yet; run "
                                   "`ragmart publish <version>` first, then grant")
    conn.execute(f"insert into {ROLE_GROUPS} (role_name, groups, all_groups) values "
                 "(%s, %s, %s) on conflict (role_name) do update set groups = excluded.groups,"
                 " all_groups = excluded.all_groups", (role, list(groups), all_groups))
    _grant_tables(conn, role)


def revoke_groups(conn, role: str) -> bool:
    """Unmap `role`: it reads no row any more. Returns whether it was mapped."""
    return bool(conn.execute(f"delete from {ROLE_GROUPS} where role_name = %s",
                             (role,)).rowcount)
