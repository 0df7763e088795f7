"""Rows from DuckDB to PostgreSQL in bulk: DuckDB renders, COPY loads, Python only moves bytes.

DuckDB reads the source table and renders every value as PostgreSQL's text input (a list as an
array literal, a FLOAT[d] as pgvector's `[x, y, ...]`, which DuckDB prints with the shortest
digits that read back to the same float32), plus the row's fingerprint; Arrow batches of those
strings become CSV (pyarrow: every string quoted, NULL left empty and unquoted, which is how
PostgreSQL's CSV COPY tells NULL from '') and stream into `COPY ... FROM STDIN`. No row passes
through a Python loop. The live fingerprints of the target come back as one string per table
(`live_fingerprints`, split by DuckDB) so the diff of an incremental publish runs in DuckDB.
The DuckDB half (`rows_sql`, `gone_sql`, `csv_batches`) runs on the publish's producer thread
(ragmart.serving.postgres.pipeline); `publish_table` is the server half, fed by it.

One column is published that DuckDB does not store: ``source``, on every table with a
``metadata`` column (the documents and the history), the document version's source location
resolved at publish by the one rule of ragmart.retrieval.citations (``source_sql``, SOURCE_KEYS),
so that the SQL function ``ragmart.retrieve`` and the Python search read it as a column.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import duckdb

from ragmart.retrieval.citations import source_sql
from ragmart.serving.postgres.schema import (
    LIVE_FINGERPRINTS,
    REMOVALS,
    SCHEMA,
    SOURCE_COLUMN,
)
from ragmart.serving.postgres.settings import PostgresServingError

BATCH_ROWS = 20_000


def duckdb_columns(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """name -> DuckDB type of a table of the connection's database, in column order ({} when
    it has no such table)."""
    return duckdb_tables(conn, [table]).get(table, {})


def duckdb_tables(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, dict]:
    """table -> `duckdb_columns` of each of `tables` the database has.

    The tables from duckdb_tables(), then a DESCRIBE of each: a publish does this first thing
    on a database it has just opened, where duckdb_columns() (every column of every catalog,
    ~600 on a build database) took 7-17 ms of CPU before the catalog was warm, these 1.5-2 ms
    (20,000-chunk bench database). DESCRIBE gives the same type names as duckdb_columns()."""
    present = {name for (name,) in conn.execute(
        "select table_name from duckdb_tables() where list_contains($t, table_name) "
        "and database_name = current_database() and schema_name = 'main'",
        {"t": tables}).fetchall()}
    return {table: {name: kind for name, kind, *_ in conn.execute(
                'describe main."' + table.replace('"', '""') + '"').fetchall()}
            for table in tables if table in present}


def published_columns(conn: duckdb.DuckDBPyConnection, table: str,
                      columns: dict[str, str] | None = None) -> dict[str, str]:
    """name -> DuckDB type of the columns a publish writes for `table` (its `duckdb_columns`
    when the caller has them): its own, plus SOURCE_COLUMN when it has a metadata column
    (computed: `derived_columns`)."""
    columns = dict(columns) if columns is not None else duckdb_columns(conn, table)
    if "metadata" in columns:
        if SOURCE_COLUMN in columns:
            raise PostgresServingError(f"{table} has a column {SOURCE_COLUMN!r}, which the publish "
                             "derives from its metadata; rename it in its model")
        columns[SOURCE_COLUMN] = "VARCHAR"
    return columns


def derived_columns(columns: dict[str, str]) -> dict[str, str]:
    """name -> DuckDB SQL of the published columns DuckDB computes from a source row."""
    return {SOURCE_COLUMN: source_sql('"metadata"')} if "metadata" in columns else {}


def _text_of(name: str, duckdb_type: str, col: str | None = None) -> str:
    """DuckDB SQL rendering column `name` (or the expression `col`) as PostgreSQL's text input
    for its mapped type."""
    col = col or f'"{name}"'
    if duckdb_type.startswith("FLOAT[") and not duckdb_type.endswith("[]"):
        return f"{col}::varchar"  # [x, y, ...]: pgvector's input, float32 digits round-trip
    if duckdb_type.endswith("[]"):
        quoted = ("list_transform(" + col + ", x -> case when x is null then 'NULL' else "
                  "'\"' || replace(replace(x::varchar, '\\', '\\\\'), '\"', '\\\"') || '\"' "
                  "end)")
        return f"'{{' || array_to_string({quoted}, ',') || '}}'"
    return f"{col}::varchar"


def fingerprint_sql(columns: dict[str, str]) -> str:
    """DuckDB SQL of a row's fingerprint: DuckDB's 64-bit hash of every column but the vector,
    in 16 hex digits.

    Every incremental publish fingerprints every source row, so this is the publish's one
    cost that grows with the corpus on the DuckDB side: hash() of the row struct takes 0.1 s
    per 100,000 chunks here, md5 of the row's JSON (the fingerprint before) 0.9-1.1 s. A changed
    row goes unnoticed only if its new hash equals a live row's: about N / 2^64 per changed row
    (5e-14 at a million chunks). Should a DuckDB release change hash(), every fingerprint differs
    once and that publish writes every row again: slower, never wrong."""
    # a derived column is a function of the others: its name alone marks it (so that rows
    # published before it existed differ, and are written again with it)
    derived = derived_columns(columns)
    fields = ", ".join(f'"{n}" := ' + ("'derived'" if n in derived else f'"{n}"')
                       for n, t in columns.items()
                       if not (t.startswith("FLOAT[") and not t.endswith("[]")))
    return f"printf('%016x', hash(struct_pack({fields})))"


def csv_batches(reader) -> Iterator[tuple[bytes, int]]:
    """(CSV bytes, rows) of each non-empty Arrow batch of `reader`."""
    import pyarrow.csv as pacsv

    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in reader:
        if batch.num_rows:
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, options)
            yield buffer.getvalue(), batch.num_rows


def copy_csv(cur, target: str, columns: list[str], batches) -> int:
    """COPY the CSV `batches` ((bytes, rows) pairs, columns in `columns`' order) into
    `target`; returns the number of rows."""
    count = 0
    names = ", ".join(f'"{c}"' for c in columns)
    with cur.copy(f"copy {target} ({names}) from stdin (format csv)") as copy:
        for chunk, rows in batches:
            copy.write(chunk)
            count += rows
    return count


def copy_rows(duck: duckdb.DuckDBPyConnection, select_sql: str, params: dict, cur,
              target: str, columns: list[str]) -> int:
    """COPY the rows of `select_sql` (every column already text, in `columns`' order) into
    `target`; returns the number of rows."""
    reader = duck.execute(select_sql, params).to_arrow_reader(BATCH_ROWS)
    return copy_csv(cur, target, columns, csv_batches(reader))


def rows_sql(table: str, columns: dict[str, str], *, new: str | None = None) -> str:
    """DuckDB SQL: the rows of `table` to COPY into ragmart.<table> (`row_columns`' order),
    every column as PostgreSQL's text input, published_in the parameter $id: all of them, or
    those whose rowid is a `source_row` of the relation `new` (source_row, fp)."""
    derived = derived_columns(columns)
    texts = ", ".join(f"{_text_of(n, t, derived.get(n))} as \"{n}\""
                      for n, t in columns.items())
    if new is None:
        return (f"select {texts}, $id::varchar as published_in, {fingerprint_sql(columns)} "
                f'as row_fingerprint from main."{table}"')
    return (f"select {texts}, $id::varchar as published_in, n.fp as row_fingerprint "
            f'from main."{table}" as t join {new} as n on t.rowid = n.source_row')


def row_columns(columns: dict[str, str]) -> list[str]:
    """The columns `rows_sql` renders, in order."""
    return [*columns, "published_in", "row_fingerprint"]


def gone_sql(live: str, source: str) -> str:
    """DuckDB SQL: (publication_id $id, table_name $t, fp) of the live fingerprints (relation
    `live` (fp)) the source (relation `source` (source_row, fp)) no longer has."""
    return (f"select $id::varchar as publication_id, $t as table_name, fp "
            f"from {live} anti join {source} using (fp)")


def live_fingerprints(cur, tables: list[str]) -> dict[str, str]:
    """table -> the fingerprints of `ragmart.<table>`'s live rows (removed_in is null),
    comma-joined ('' when none): one round trip to the narrow ragmart.live_fingerprints."""
    joined = dict(cur.execute(f"select table_name, string_agg(row_fingerprint, ',') "
                              f"from {LIVE_FINGERPRINTS} where table_name = any(%s) "
                              "group by table_name", (tables,)).fetchall()) if tables else {}
    return {table: joined.get(table) or "" for table in tables}


def split_fingerprints(joined: str):
    """The fingerprints of a `live_fingerprints` string as an Arrow table (one column, fp).
    pyarrow splits the 20,000 of a 20,000-chunk serving table in 0.4 ms; DuckDB's
    unnest(string_split()) took 5-8 ms, on the way to the first rows an incremental publish
    sends."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fps = pc.split_pattern(pa.array([joined], pa.string()), ",").flatten() if joined \
        else pa.array([], pa.string())
    return pa.table({"fp": fps})


def publish_table(producer, cur, table: str, columns: dict[str, str], publication_id: int,
                  *, full: bool, second=None) -> tuple[int, int]:
    """Bring `ragmart.<table>` to the rows of DuckDB's `table` as publication `publication_id`,
    from the payloads `producer` (ragmart.serving.postgres.pipeline.TableProducer) renders:
    rows whose fingerprint no live row has are COPYed in (published_in = the id), live rows
    whose fingerprint the source lacks get removed_in = the id (their fingerprints logged in
    ragmart.removals, for pruning). `full`: the target has no live row (its first publish),
    nothing to compare. `second` (ragmart.serving.postgres.parallel.SecondWriter): the new rows
    are dealt out between this COPY and one on that connection, committed there first (the
    plan named `table` parallel). Returns (rows written, rows removed)."""
    target = f'{SCHEMA}."{table}"'
    if second is None:
        written = copy_csv(cur, target, row_columns(columns), producer.rows(table))
    else:
        shares = producer.shares(table, 2)
        second.start(shares, 1, table, row_columns(columns), publication_id)
        try:
            written = copy_csv(cur, target, row_columns(columns), shares.share(0))
        except BaseException:
            shares.abort()
            second.wait()  # its error first, if it failed (it stopped this COPY)
            raise
        written += second.wait()
        if second.leftover:  # it could not connect: its share on this connection
            written += copy_csv(cur, target, row_columns(columns), second.leftover)
    if full:
        cur.execute(f"insert into {LIVE_FINGERPRINTS} (table_name, row_fingerprint) "
                    f"select %s, row_fingerprint from {target} where published_in = %s",
                    (table, publication_id))
        return written, 0
    new = producer.new_fingerprints(table)
    if new:
        copy_csv(cur, LIVE_FINGERPRINTS, ["table_name", "row_fingerprint"], [(new, written)])
    gone, removed = producer.gone(table)
    if not removed:
        return written, 0
    copy_csv(cur, REMOVALS, ["publication_id", "table_name", "row_fingerprint"],
             [(gone, removed)])
    cur.execute(f"update {target} as t set removed_in = %s from {REMOVALS} as r "
                "where r.publication_id = %s and r.table_name = %s "
                "and t.row_fingerprint = r.row_fingerprint and t.removed_in is null",
                (publication_id, publication_id, table))
    removed = cur.rowcount
    cur.execute(f"delete from {LIVE_FINGERPRINTS} as l using {REMOVALS} as r "
                "where r.publication_id = %s and r.table_name = %s "
                "and l.table_name = r.table_name "
                "and l.row_fingerprint = r.row_fingerprint", (publication_id, table))
    return written, removed
