"""The BM25 statistics of a publication on the serving database, so that PostgreSQL ranks by
terms as DuckDB serving does (ragmart.retrieval.postgres_lexical reads them).

DuckDB's lexical search (ragmart.retrieval.lexical) scores an eligible chunk from the serving
set's full-text index (ragmart.serving.lexical_index): the chunk's terms and length (from the
index, or for a chunk the index lacks, from its text tokenized by the index's own ``tokenize``
macro, stopwords dropped, then stemmed), and the index's statistics (its document count and
average length, each term's document frequency). A publish carries exactly those to three data
tables per version, rows of publications like every other (``published_in``/``removed_in``,
``row_fingerprint``, the rows marked removed logged in ``ragmart.removals`` for pruning,
ragmart.serving.postgres.schema):

- ``lexical_chunks_vN``: one row per chunk_id of the serving set and the history (as-of
  searches rank old versions too): its ``terms`` (text[]), their counts ``tfs`` (int[], same
  order) and ``len`` (their sum, what the index's ``docs.len`` holds), keyed by chunk_id: a
  chunk_id names one document version and position, so its text, hence its bag, never changes
  and an incremental publish tokenizes only the chunks it has not published yet. A GIN index
  on ``terms`` finds the chunks holding a question's terms.
- ``lexical_terms_vN``: the index's ``dict`` (term, df); rewritten only where a df changed (an
  index rebuild), so most publishes write none.
- ``lexical_stats_vN``: the index's one ``stats`` row (num_docs, avgdl).

A source without a full-text index publishes no statistics (its live ones are marked removed):
that publication serves vector search only, as DuckDB serving does without an index.

Readers' roles see none of these rows (row-level security on, no policy: the terms of every
document are in them; the publishing role owns the tables and reads them for every caller,
under the access rule applied to the chunks). Purge deletes a document's bags with its rows
(the tables carry document_id) and `purge_orphan_terms` the terms no remaining bag holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ragmart.relations import (
    LEXICAL_CHUNKS_PREFIX,
    LEXICAL_STATS_PREFIX,
    LEXICAL_TERMS_PREFIX,
    Relations,
)
from ragmart.serving.lexical_index import STEMMER, has_index, schema_of
from ragmart.serving.postgres.schema import REMOVALS, SCHEMA
from ragmart.serving.postgres.transfer import copy_rows, duckdb_tables

_BOOKKEEPING = "published_in bigint not null, removed_in bigint, row_fingerprint text not null"
_COLUMNS = {
    "chunks": "chunk_id text not null, document_id text, terms text[] not null, "
              "tfs integer[] not null, len integer not null",
    "terms": "term text not null, df bigint not null",
    "stats": "num_docs bigint not null, avgdl double precision",
}


@dataclass(frozen=True)
class LexicalTables:
    """The three statistics tables of one index version (unqualified names)."""

    version: str

    @property
    def chunks(self) -> str:
        return LEXICAL_CHUNKS_PREFIX + self.version

    @property
    def terms(self) -> str:
        return LEXICAL_TERMS_PREFIX + self.version

    @property
    def stats(self) -> str:
        return LEXICAL_STATS_PREFIX + self.version

    def qualified(self, table: str) -> str:
        return f'{SCHEMA}."{table}"'


def ensure_tables(conn, version: str) -> None:
    """Create the version's statistics tables and their indexes when missing, readers locked
    out (idempotent; in the caller's transaction).

    One catalog query first, then only the DDL that is missing: a publish runs this every
    time, and ``alter table ... enable row level security`` takes an ACCESS EXCLUSIVE lock
    (held to the commit, every lexical reader waiting) and ``create index if not exists`` a
    SHARE lock even when the index exists. So row-level security is enabled where it is off
    (a table created before, or switched off by hand: pg_class.relrowsecurity) and nothing
    else is touched."""
    t = LexicalTables(version)
    kinds = (("chunks", t.chunks), ("terms", t.terms), ("stats", t.stats))
    indexes = {t.chunks: [("fingerprint", "(row_fingerprint)"), ("terms", "using gin (terms)"),
                          ("chunk_id", "(chunk_id)"), ("document", "(document_id)")],
               t.terms: [("fingerprint", "(row_fingerprint)"), ("term", "(term)")],
               t.stats: [("fingerprint", "(row_fingerprint)")]}
    found = dict(conn.execute(
        "select c.relname, c.relrowsecurity from pg_class as c join pg_namespace as n "
        "on n.oid = c.relnamespace where n.nspname = %s and c.relname = any(%s)",
        (SCHEMA, [table for _, table in kinds] + [f"{table}_{suffix}" for table, names
                                                   in indexes.items() for suffix, _ in names])
    ).fetchall())
    statements = []  # one round trip, and none when everything is in place
    for kind, table in kinds:
        q = t.qualified(table)
        if table not in found:
            statements.append(f"create table {q} ({_COLUMNS[kind]}, {_BOOKKEEPING})")
        if not found.get(table):
            statements.append(f"alter table {q} enable row level security")
        statements += [f'create index "{table}_{suffix}" on {q} {how}'
                       for suffix, how in indexes[table] if f"{table}_{suffix}" not in found]
    if statements:
        conn.execute(";\n".join(statements))


def _texts_sql(duck: duckdb.DuckDBPyConnection, version: str) -> str:
    """DuckDB SQL: (chunk_id, document_id, chunk_text) of every chunk_id of the version's
    serving set and history."""
    r = Relations(version)
    found = duckdb_tables(duck, [r.serving, r.history])
    parts = [f'select chunk_id, document_id, chunk_text from main."{table}"'
             for table in (r.serving, r.history) if found.get(table)]
    return ("select chunk_id, any_value(document_id) as document_id, "
            "any_value(chunk_text) as chunk_text from (" + " union all ".join(parts) +
            ") group by chunk_id")


def bags_sql(fts: str, texts: str) -> str:
    """DuckDB SQL: each chunk of `texts` (a relation of chunk_id, document_id, chunk_text) as
    its term bag, tokenized as the full-text index `fts` tokenized it (ragmart.retrieval.
    lexical scores an unindexed chunk the same way), rendered as PostgreSQL's text input."""
    return f"""
    with tokens as (
        select chunk_id, document_id, unnest({fts}.tokenize(chunk_text)) as token
        from {texts}
    ),
    kept as (
        select chunk_id, document_id, stem(token, '{STEMMER}') as term
        from tokens
        where token <> '' and token not in (select sw from {fts}.stopwords)
    ),
    counted as (
        select chunk_id, any_value(document_id) as document_id, term, count(*) as tf
        from kept group by chunk_id, term
    )
    select chunk_id, any_value(document_id) as document_id,
        '{{' || array_to_string(list('"' || term || '"' order by term), ',') || '}}' as terms,
        '{{' || array_to_string(list(tf order by term), ',') || '}}' as tfs,
        sum(tf)::varchar as len, $id::varchar as published_in, chunk_id as row_fingerprint
    from counted group by chunk_id"""


def _live(cur, duck: duckdb.DuckDBPyConnection, table: str) -> pa.Table:
    rows = cur.execute(f'select row_fingerprint from {SCHEMA}."{table}" '
                       "where removed_in is null").fetchall()
    return pa.table({"fp": pa.array([fp for (fp,) in rows], pa.string())})


def _sync(duck: duckdb.DuckDBPyConnection, cur, table: str, keys_sql: str, rows_sql,
          columns: list[str], publication_id: int) -> tuple[int, int]:
    """Bring ``ragmart.<table>`` to the source's rows as publication `publication_id`: the keys
    of `keys_sql` (column fp) that no live row has are rendered by `rows_sql(new)` (`new`: a
    relation of those keys) and COPYed in; live rows whose key the source lacks get
    removed_in. Returns (written, removed)."""
    live, source = f"ragmart_pg_live_{table}", f"ragmart_pg_keys_{table}"
    duck.register(live, _live(cur, duck, table))
    duck.register(source, duck.execute(keys_sql).to_arrow_table())
    try:
        new = f"(select fp from {source} anti join {live} using (fp))"
        written = copy_rows(duck, rows_sql(new), {"id": publication_id}, cur,
                            f'{SCHEMA}."{table}"', columns)
        gone = [fp for (fp,) in duck.execute(
            f"select fp from {live} anti join {source} using (fp)").fetchall()]
    finally:
        duck.unregister(live)
        duck.unregister(source)
    return written, _mark_removed(cur, table, publication_id, gone) if gone else 0


def _mark_removed(cur, table: str, publication_id: int, fingerprints: list[str] | None) -> int:
    """Set removed_in on the live rows of `fingerprints` (None: every live row) and log them
    in ragmart.removals, which pruning deletes by. Returns how many."""
    only = "" if fingerprints is None else "and row_fingerprint = any(%(fps)s)"
    cur.execute(f"""
        with marked as (
            update {SCHEMA}."{table}" set removed_in = %(id)s
            where removed_in is null {only}
            returning row_fingerprint
        )
        insert into {REMOVALS} (publication_id, table_name, row_fingerprint)
        select %(id)s, %(table)s, row_fingerprint from marked""",
                {"id": publication_id, "table": table, "fps": fingerprints})
    return cur.rowcount


def _remove_all(cur, t: LexicalTables, publication_id: int) -> dict[str, dict[str, int]]:
    return {table: {"written": 0, "removed": _mark_removed(cur, table, publication_id, None)}
            for table in (t.chunks, t.terms, t.stats)}


def publish_terms(duck: duckdb.DuckDBPyConnection, conn, version: str,
                  publication_id: int) -> dict[str, dict[str, int]]:
    """Publish the BM25 statistics of `version` from the DuckDB database `duck` (its serving
    table's full-text index and texts) as publication `publication_id`, in the caller's
    transaction on `conn`; only what changed since the live rows is written. Returns
    table -> {written, removed}."""
    from ragmart.duck import load_extension

    t = LexicalTables(version)
    ensure_tables(conn, version)
    serving = Relations(version).serving
    with conn.cursor() as cur:
        if not has_index(duck, serving):
            return _remove_all(cur, t, publication_id)
        load_extension(duck, "fts")  # stem()
        fts = schema_of(serving)
        texts = _texts_sql(duck, version)
        out = {}
        out[t.chunks] = _sync(
            duck, cur, t.chunks, f"select chunk_id as fp from ({texts})",
            lambda new: bags_sql(fts, f"(select texts.* from ({texts}) as texts semi join {new} "
                                     "as n on texts.chunk_id = n.fp)"),
            ["chunk_id", "document_id", "terms", "tfs", "len", "published_in",
             "row_fingerprint"], publication_id)
        # the index's dict and stats, copied as they are (a row changes with a rebuild)
        for table, relation, columns, fp in (
                (t.terms, f"{fts}.dict", ("term", "df"), "term || ' ' || df::varchar"),
                (t.stats, f"{fts}.stats", ("num_docs", "avgdl"),
                 "num_docs::varchar || ' ' || coalesce(avgdl::varchar, '')")):
            texts_of = ", ".join(f"{c}::varchar" for c in columns)
            out[table] = _sync(
                duck, cur, table, f"select {fp} as fp from {relation}",
                lambda new, relation=relation, texts_of=texts_of, fp=fp: (
                    f"select {texts_of}, $id::varchar, {fp} from {relation} "
                    f"semi join {new} as n on {fp} = n.fp"),
                [*columns, "published_in", "row_fingerprint"], publication_id)
        for table, (written, removed) in out.items():
            if written or removed:  # the planner's statistics (publish_version's VACUUM runs
                cur.execute(f"analyze {t.qualified(table)}")  # only after pruning)
    return {table: {"written": w, "removed": r} for table, (w, r) in out.items()}


def lexical_versions(conn) -> list[str]:
    """The versions with statistics tables on the serving database."""
    return [name.removeprefix(LEXICAL_CHUNKS_PREFIX) for (name,) in conn.execute(
        "select table_name from information_schema.tables where table_schema = %s "
        "and starts_with(table_name, %s) order by table_name",
        (SCHEMA, LEXICAL_CHUNKS_PREFIX)).fetchall()]


def purge_orphan_terms(conn, pending: str) -> dict[str, int]:
    """After a purge deleted a document's term bags (every publication): delete the terms no
    remaining bag holds (its own words), and record each table it deleted from in `pending`
    (the purge's VACUUM FULL list). Returns table -> rows deleted."""
    deleted = {}
    for version in lexical_versions(conn):
        t = LexicalTables(version)
        n = conn.execute(
            f"delete from {t.qualified(t.terms)} as dict where not exists (select from "
            f"{t.qualified(t.chunks)} as bags where bags.terms @> array[dict.term])").rowcount
        if n:
            deleted[t.terms] = n
            conn.execute(f"insert into {pending} values (%s) on conflict do nothing",
                         (t.terms,))
    return deleted


def purge_statistics(conn, document_id: str, pending: str) -> None:
    """Before a purge deletes `document_id`'s rows: take its chunks out of the statistics of
    every kept publication of every version (each term's df, the chunk count and average
    length), as a fresh full-text index without the document counts them, so that BM25
    scores after the purge are those of a fresh publish without it (rollback targets too).

    For each kept publication P the purged chunks served at P (serving rows and bags visible
    at P) are subtracted from the statistics rows visible at P. A row that several kept
    publications share may then need different values per publication: it is replaced by one
    row per run of kept publications with equal values (the next one's visibility starting
    where the previous one's ends), each with its fingerprint and, when removed, its
    ragmart.removals entry. Records every table it rewrote in `pending` (the VACUUM FULL
    list)."""
    from ragmart.serving.postgres.schema import PUBLICATIONS

    for version in lexical_versions(conn):
        t = LexicalTables(version)
        serving = Relations(version).serving
        kept = [pid for (pid,) in conn.execute(
            f"select publication_id from {PUBLICATIONS} where version = %s and action = "
            "'publish' and pruned_at is null order by publication_id", (version,))]
        if not kept or conn.execute("select to_regclass(%s) is null",
                                    (f'{SCHEMA}."{serving}"',)).fetchone()[0]:
            continue
        served = conn.execute(f"""
            select p.pid, bags.terms, bags.len
            from unnest(cast(%(kept)s as bigint[])) as p (pid)
            join {SCHEMA}."{serving}" as chunks on chunks.document_id = %(doc)s
                and {_visible("chunks", "p.pid")}
            join {t.qualified(t.chunks)} as bags on bags.chunk_id = chunks.chunk_id
                and {_visible("bags", "p.pid")}""", {"kept": kept, "doc": document_id}
                              ).fetchall()
        if not served:
            continue
        df: dict[tuple[str, int], int] = {}
        docs: dict[int, list[int]] = {}
        for pid, terms, length in served:
            for term in terms:
                df[term, pid] = df.get((term, pid), 0) + 1
            docs.setdefault(pid, [0, 0])
            docs[pid][0] += 1
            docs[pid][1] += length
        _rewrite(conn, t, t.terms, "term, df", ("text", "bigint"), sorted({k for k, _ in df}),
                 kept, lambda key, pid, row, df=df: (key, row[1] - df.get((key, pid), 0)),
                 lambda row: row[1] > 0, "term = any(%(keys)s)", "term || ' ' || df::text")
        _rewrite(conn, t, t.stats, "num_docs, avgdl", ("bigint", "double precision"), [None],
                 kept, lambda key, pid, row, docs=docs: _less(row, *docs.get(pid, (0, 0))),
                 lambda row: True, "true", "num_docs::text || ' ' || coalesce(avgdl::text, '')")
        for table in (t.terms, t.stats):
            conn.execute(f"insert into {pending} values (%s) on conflict do nothing", (table,))


def _visible(alias: str, publication: str) -> str:
    return (f"{alias}.published_in <= {publication} and ({alias}.removed_in is null "
            f"or {alias}.removed_in > {publication})")


def _less(row: tuple, chunks: int, length: int) -> tuple:
    """(num_docs, avgdl) of stats `row` without `chunks` chunks of total `length` terms."""
    num_docs, avgdl = row
    left = num_docs - chunks
    total = round((avgdl or 0.0) * num_docs) - length
    return left, (total / left if left else None)


def _rewrite(conn, t: LexicalTables, table: str, columns: str, types: tuple[str, str],
             keys: list, kept: list[int], value, keep, where: str, fingerprint: str) -> None:
    """Replace the rows of `table` (of `keys`: a term each, or [None] for the one stats row)
    visible at a kept publication by rows of `value(key, pid, old row)` per run of kept
    publications with equal values (`keep(values)` false: no row there)."""
    q = t.qualified(table)
    key_of = (lambda row: row[0]) if keys != [None] else (lambda row: None)
    rows = conn.execute(f"""
        delete from {q} as t where {where} and exists (
            select from unnest(cast(%(kept)s as bigint[])) as p (pid)
            where {_visible("t", "p.pid")})
        returning {columns}, published_in, removed_in""", {"keys": keys, "kept": kept}
                        ).fetchall()
    width = len(columns.split(","))
    new: list[tuple] = []
    for key in keys:
        mine = [r for r in rows if key_of(r) == key]
        runs: list[list] = []  # [values, published_in, removed_in, its last kept pid]
        previous = None  # the kept publication before pid
        for pid in kept:
            row = next((r for r in mine if r[width] <= pid
                        and (r[width + 1] is None or r[width + 1] > pid)), None)
            values = value(key, pid, row[:width]) if row else None
            last = runs[-1] if runs and runs[-1][3] == previous else None
            if values is not None and not keep(values):
                values = None
            if last is not None and last[0] == values:  # the run goes on
                last[2], last[3] = row[width + 1], pid
            else:
                if last is not None:  # it ends here
                    last[2] = pid if last[2] is None else min(last[2], pid)
                if values is not None:
                    start = pid if previous is not None and row[width] <= previous \
                        else row[width]
                    runs.append([values, start, row[width + 1], pid])
            previous = pid
        new += [(*values, start, end) for values, start, end, _ in runs]
    placeholders = ", ".join(f"cast(%s as {kind})" for kind in [*types, "bigint", "bigint"])
    insert = (f"insert into {q} ({columns}, published_in, removed_in, row_fingerprint) "
              f"select *, {fingerprint} from (values ({placeholders})) "
              f"as v ({columns}, published_in, removed_in) returning row_fingerprint")
    for row in new:
        (fp,) = conn.execute(insert, row).fetchone()
        if row[-1] is not None:  # pruning deletes it by its entry
            conn.execute(f"insert into {REMOVALS} (publication_id, table_name, "
                         "row_fingerprint) values (%s, %s, %s)", (row[-1], table, fp))
