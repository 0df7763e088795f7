"""SQL on the serving snapshot: what `ragmart sql`, `ragmart embed` and `ragmart.connect` share.

A SQL user reads what serves (`resolve_target`: the published snapshot, else the build
database), read-only, with the extensions ragmart loads (vss, from its wheel: no download) and
the version's table macro ``ragmart_retrieve_<v>``. The statements that set up a DuckDB session
(`setup_statements`: load vss by path, attach the file read-only, use it) are the ones the
interactive shell runs first and the ones `ragmart sql --setup` prints, in that order: vss is
loaded before the file is attached, as `ragmart.duck.connect` does (a WAL holding HNSW changes
must replay with vss present).

A question's vector comes from the model the version was built with (its index_versions row,
else the model named on its serving rows): `ragmart embed` prints it, and `connect` registers
the SQL function ``ragmart_embed(text) -> FLOAT[n]`` that computes it inside a query. DuckDB
folds ``ragmart_embed('...')`` to a constant, so the vss optimizer can still answer
``order by array_cosine_distance(embedding, ragmart_embed('...')) limit k`` from the index.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ragmart.catalog import macro_exists, table_exists
from ragmart.duck import connect as open_database
from ragmart.duck import extension_path
from ragmart.embedding.providers import EmbeddingProvider, provider_for_model
from ragmart.relations import DEFAULT_VERSION, INDEX_VERSIONS_TABLE, Relations, check_version
from ragmart.retrieval.values import sql_text
from ragmart.serving.pointer import ServingTarget, resolve_target

ALIAS = "ragmart"  # the name the serving file is attached under
EMBED_FUNCTION = "ragmart_embed"
SHELL_PACKAGE = "duckdb_cli"  # the official DuckDB CLI wheel (duckdb-cli, same DuckDB version)


class SqlError(ValueError):
    """The serving database cannot be queried as asked: one line with the fix (exit USAGE)."""


def extension_files() -> list[Path]:
    """The extension files ragmart loads into every connection (ragmart.duck), by path."""
    return [extension_path("vss")]


def target_for(db_path: Path | None = None, version: str | None = None,
               *, pinned: bool = False) -> ServingTarget:
    """What a SQL user reads: `db_path` itself when `pinned` (a file named with --db), else
    what serves for the build database `db_path` (default $RAGMART_DB)."""
    if pinned and db_path is not None:
        return ServingTarget(Path(db_path), check_version(version or DEFAULT_VERSION), False)
    target = resolve_target(db_path, version)
    if not target.database.is_file():
        what = "the published snapshot" if target.published else "the database"
        raise SqlError(f"{what} {target.database} does not exist; run `dbt build` first (or "
                       "pass the database file with --db FILE)")
    return target


@dataclass(frozen=True)
class Session:
    """A serving file checked for SQL: its target, vector size, model, and the statement that
    creates its table macro when the file lacks it (a temp macro: the file stays read-only)."""

    target: ServingTarget
    dimensions: int
    model: str
    temp_macro: str | None

    def setup_statements(self) -> list[str]:
        """The statements that make a DuckDB 1.5.5 session ready on this file."""
        statements = [f"load {sql_text(str(path))};" for path in extension_files()]
        statements += [
            f"attach {sql_text(str(self.target.database.resolve()))} as {ALIAS} (read_only);",
            f"use {ALIAS};",
        ]
        if self.temp_macro:
            statements.append(self.temp_macro + ";")
        return statements


def _binding(conn: duckdb.DuckDBPyConnection, version: str) -> tuple[str, int] | None:
    """(embedding_model, dimensions) of `version` in index_versions, when the file has it."""
    if not table_exists(conn, INDEX_VERSIONS_TABLE):
        return None
    row = conn.execute(f"select embedding_model, embedding_dimensions from "
                       f"{INDEX_VERSIONS_TABLE} where index_version = $v", {"v": version}
                       ).fetchone()
    return (row[0], int(row[1])) if row else None


def session_for(conn: duckdb.DuckDBPyConnection, target: ServingTarget) -> Session:
    """Check that `conn` (on `target`, read-only) holds a built version; its Session."""
    relations = Relations(target.version)
    if not table_exists(conn, relations.serving):
        raise SqlError(f"{target.database} holds no {relations.serving}: index version "
                       f"{target.version} is not built; run `dbt build` first")
    binding = _binding(conn, target.version)
    if binding is None:
        models = [r[0] for r in conn.execute(
            f"select distinct embedding_model from {relations.serving}").fetchall()]
        if len(models) != 1:
            raise SqlError(f"{relations.serving} holds vectors of {len(models)} models "
                           f"({', '.join(map(str, models)) or 'none'}) and no index_versions "
                           f"row names its model; rebuild {target.version} with `dbt build`")
        from ragmart.retrieval.macro import embedding_dimensions

        binding = (models[0], embedding_dimensions(conn.table(relations.serving)))
    model, dimensions = binding
    temp_macro = None
    if not macro_exists(conn, relations.macro):
        temp_macro = _temp_macro_sql(target.version, dimensions)
        conn.execute(temp_macro)
    return Session(target, dimensions, model, temp_macro)


def _temp_macro_sql(version: str, dimensions: int) -> str:
    """The version's table macro as a temp macro (this session only, the file untouched)."""
    from ragmart.retrieval.macro import macro_sql
    from ragmart.retrieval.sql import Tables

    sql = macro_sql(dimensions, Tables.for_version(version))
    head = "create or replace macro "
    if not sql.startswith(head):
        raise SqlError(f"cannot create {Relations(version).macro} read-only; run `dbt build`")
    return "create or replace temp macro " + sql.removeprefix(head)


def question_provider(session: Session) -> EmbeddingProvider:
    """The provider that embeds questions with the model the version was built with."""
    return provider_for_model(session.model, version=session.target.version,
                              purpose="embed a question for")


def check_text(text: object) -> str:
    """`text` when there is something to embed; SqlError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise SqlError("the text to embed is empty; pass the question to embed")
    return text


def embed(provider: EmbeddingProvider, text: str, dimensions: int) -> list[float]:
    check_text(text)
    vector = [float(x) for x in provider.embed([text])[0]]
    if len(vector) != dimensions:
        raise SqlError(f"{provider.model} returned {len(vector)} dimensions, the index holds "
                       f"{dimensions}")
    return vector


def vector_literal(vector: list[float], dimensions: int) -> str:
    """`vector` as a DuckDB literal, `[...]::FLOAT[n]` (repr: float32 values round-trip)."""
    return "[" + ", ".join(repr(x) for x in vector) + f"]::FLOAT[{dimensions}]"


def register_embed(conn: duckdb.DuckDBPyConnection, session: Session) -> None:
    """`ragmart_embed(text) -> FLOAT[n]` in `conn`, with the version's model; deterministic,
    so DuckDB folds a call on a constant into a constant (the HNSW index stays usable)."""
    provider = question_provider(session)
    dims = session.dimensions
    conn.create_function(EMBED_FUNCTION, lambda text: embed(provider, text, dims),
                         [duckdb.sqltype("VARCHAR")], duckdb.sqltype(f"FLOAT[{dims}]"))


def open_session(target: ServingTarget) -> tuple[duckdb.DuckDBPyConnection, Session]:
    """A read-only connection on `target` with vss, the table macro and ragmart_embed."""
    conn = open_database(target.database, read_only=True)
    try:
        session = session_for(conn, target)
        register_embed(conn, session)
    except BaseException:
        conn.close()
        raise
    return conn, session


def connect(db_path: str | Path | None = None, index_version: str | None = None
            ) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection on what serves (the published snapshot, else the build
    database $RAGMART_DB; or the file `db_path`, as it is), with vss loaded, the table macro
    ``ragmart_retrieve_<v>`` and ``ragmart_embed(text)``: in a notebook,
    ``ragmart.connect().sql("select * from ragmart_retrieve_v1(ragmart_embed('...'), 5,
    groups := ['hr'])")``. Close it when done: while it is open a writer cannot open the file."""
    path = Path(db_path) if db_path is not None else None
    conn, _ = open_session(target_for(path, index_version, pinned=path is not None))
    return conn


def shell_binary() -> Path:
    """The DuckDB CLI of the duckdb-cli wheel (its DuckDB matches the extension wheels)."""
    spec = importlib.util.find_spec(SHELL_PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    binary = Path(next(iter(locations))) / "duckdb" if locations else None
    if binary is None or not binary.is_file():
        raise SqlError("the DuckDB shell is not installed; run `pip install duckdb-cli==1.5.5` "
                       "(or `make setup`), or use `ragmart sql -c SQL`")
    return binary


def shell_argv(session: Session) -> list[str]:
    """The command line of the interactive shell: the setup statements run first (-cmd), no
    ~/.duckdbrc (-no-init: an unknown init file could write). The shell starts on an
    in-memory database and attaches the file `(read_only)` once vss is loaded, rather than
    opening the file with -readonly, which would read its WAL before vss is there (and DuckDB
    refuses -readonly on an in-memory database)."""
    return [str(shell_binary()), "-no-init", "-cmd", "\n".join(session.setup_statements())]
