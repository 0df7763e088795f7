"""Lexical search on PostgreSQL: BM25 over the eligible chunks of a publication, with the
scores DuckDB serving gives.

A publish carries the BM25 statistics of the version's full-text index to the serving
database (ragmart.serving.postgres.lexical: each chunk's term bag and length, each term's
document frequency, the document count and average length). The ranking is one SQL statement
(`ranking_sql`): its candidates are the `eligible` rows of ragmart.retrieval.postgres_sql's
eligible_sql (the access rule, the live set or the versions live at as_of, every contract
clause), the same as the vector search's; the chunks holding a term of the question (the GIN
index on the bags finds them) are scored by fts' BM25 exactly as ragmart.retrieval.lexical
scores them (k1 = 1.2, b = 0.75, the question's distinct terms, the sum rounded to 1e-9, ties
by chunk_id in byte order, as DuckDB compares strings), all in double precision.

The question is tokenized as the index tokenizes (`question_terms`): DuckDB's fts macro with
the index's settings (ragmart.serving.lexical_index.create_index_sql), on an in-memory DuckDB
of this process, then stopwords dropped and stemmed; no text leaves for the server but terms.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from ragmart.retrieval.clauses import DISTANCE_CLAUSES, Render, active_clauses
from ragmart.retrieval.lexical import K1, B, terms_of
from ragmart.retrieval.postgres_sql import PostgresTables, eligible_sql, visible_sql
from ragmart.retrieval.results import RetrievalError
from ragmart.serving import lexical_index
from ragmart.serving.postgres.lexical import LexicalTables

# DuckDB's round(score, 9): round(x * 10^9) / 10^9 in double precision (ragmart.retrieval.
# lexical rounds so, ties then broken by chunk_id)
SCORE_DECIMALS = 9
# past this many chunks holding a question's terms, the ranking is planned with hash joins
MANY_HOLDERS = 5_000
MANY_HOLDERS_WORK_MEM = "64MB"
TERM = re.compile(r"[a-z0-9]+")  # what the tokenizer leaves (lexical_index.IGNORE)
_TOKENIZER_TABLE = "question"  # the in-memory table whose (empty) index lends its tokenizer
_tokenizer: duckdb.DuckDBPyConnection | None = None
_tokenizer_lock = threading.Lock()


def _tokenizer_conn() -> duckdb.DuckDBPyConnection:
    """A cursor on this process's in-memory DuckDB holding an empty full-text index built with
    the serving index's settings: its ``tokenize`` macro and ``stopwords`` are the index's."""
    global _tokenizer
    with _tokenizer_lock:
        if _tokenizer is None:
            conn = duckdb.connect()
            lexical_index.register(conn)
            conn.execute(f"create table {_TOKENIZER_TABLE} ({lexical_index.KEY_COLUMN} "
                         f"varchar, {lexical_index.TEXT_COLUMN} varchar)")
            conn.execute(lexical_index.create_index_sql(_TOKENIZER_TABLE))
            _tokenizer = conn
        return _tokenizer.cursor()


def question_terms(question: str) -> list[str]:
    """The distinct terms lexical search looks for in `question` (stopwords dropped, stemmed,
    as ragmart.retrieval.lexical's query_terms), sorted."""
    cursor = _tokenizer_conn()
    try:
        return terms_of(cursor, lexical_index.schema_of(_TOKENIZER_TABLE), question)
    finally:
        cursor.close()


def has_terms(conn: Any, version: str, publication: int) -> bool:
    """Whether publication `publication` of `version` carries BM25 statistics (published from
    a build with a full-text index)."""
    t = LexicalTables(version)
    stats = t.qualified(t.stats)
    if not conn.execute("select to_regclass(%s) is not null", (stats,)).fetchone()[0]:
        return False
    return conn.execute(f"select exists (select from {stats} as stats where "
                        f"{visible_sql('stats', '%(p)s')})", {"p": publication}).fetchone()[0]


def check_terms(conn: Any, version: str, publication: int) -> None:
    """RetrievalError when the publication cannot be searched by terms."""
    if not has_terms(conn, version, publication):
        raise RetrievalError(
            f"{version} on the serving database has no BM25 statistics, which lexical and "
            f"hybrid search read (a publish from a build without a full-text index); run "
            f"`dbt build` and `ragmart publish {version}`, or search with --mode vector")


def _float(value: float) -> str:
    return f"cast({value!r} as double precision)"


def terms_literal(terms: list[str]) -> str:
    """The question's terms as an SQL array literal. In the statement's text, not a parameter:
    the planner then estimates from the GIN statistics how many chunks hold them (a document
    number: a few, a word of every chunk: all of them) and plans the eligibility join by it (a
    parameter's unknown value made it probe the chunks' index once per candidate: 3.5 s for a
    word of every chunk at 100,000 chunks, against a hash join)."""
    for term in terms:
        if not TERM.fullmatch(term):  # the tokenizer keeps [a-z0-9] only; never a quote
            raise RetrievalError(f"unexpected term {term!r} from the tokenizer")
    return "cast(array[" + ", ".join(f"'{term}'" for term in terms) + "] as text[])"


def ranking_sql(p: Render, source: str, tables: PostgresTables, params: dict[str, Any],
                terms: list[str]) -> str:
    """(chunk_id, score) of the eligible chunks holding one of `terms` (the question's), best
    first (score, then chunk_id in byte order), at most $k."""
    t = LexicalTables(tables.version)
    active = active_clauses(params)
    eligible = eligible_sql(p, source, tables, narrow=True, active=active,
                            similarity=bool(active & DISTANCE_CLAUSES))
    publication = p("publication")
    wanted = terms_literal(terms)
    k1, b, one = _float(K1), _float(B), _float(1.0)
    half, scale = _float(0.5), _float(10.0 ** SCORE_DECIMALS)
    return f"""
    with {eligible},
    query_terms as (
        select distinct term from unnest({wanted}) as term
    ),
    kept_terms as materialized (
        select query_terms.term, cast(coalesce(dict.df, 0) as double precision) as df
        from query_terms
        left join {t.qualified(t.terms)} as dict
            on dict.term = query_terms.term and {visible_sql('dict', publication)}
    ),
    stats as materialized (
        select cast(stats.num_docs as double precision) as num_docs, stats.avgdl
        from {t.qualified(t.stats)} as stats
        where {visible_sql('stats', publication)}
    ),
    candidates as materialized (
        select bags.chunk_id, bags.terms, bags.tfs, bags.len
        from {t.qualified(t.chunks)} as bags
        where bags.terms && {wanted} and {visible_sql('bags', publication)}
            and bags.chunk_id in (select eligible.chunk_id from eligible)
    ),
    matches as (
        select candidates.chunk_id, cast(candidates.len as double precision) as len,
            kept_terms.df,
            cast(candidates.tfs[array_position(candidates.terms, kept_terms.term)]
                as double precision) as tf
        from candidates
        inner join kept_terms on candidates.terms @> array[kept_terms.term]
    ),
    scores as (
        select matches.chunk_id,
            round(sum(
                ln(((stats.num_docs - matches.df) + {half}) / (matches.df + {half}) + {one})
                * (matches.tf * ({k1} + {one}))
                / (matches.tf + {k1} * ({one} - {b} + {b} * (matches.len / stats.avgdl)))
            ) * {scale}) / {scale} as score
        from matches
        cross join stats
        group by matches.chunk_id
    )
    select scores.chunk_id, scores.score
    from scores
    order by scores.score desc, scores.chunk_id collate "C" asc
    limit {p('k')}
    """


def rank(conn: Any, p: Render, source: str, params: dict[str, Any],
         tables: PostgresTables) -> list[tuple[str, float]]:
    """The top params['k'] (chunk_id, BM25 score) of the eligible chunks for
    params['question'] in the publication params['publication']; [] when none holds a term of
    it."""
    terms = question_terms(params["question"])
    if not terms:
        return []
    sql = ranking_sql(p, source, tables, params, terms)
    with _plan_for(conn, _holders(conn, tables.version, params["publication"], terms)):
        return [(chunk_id, float(score)) for chunk_id, score in conn.execute(sql, params)]


def _holders(conn: Any, version: str, publication: int, terms: list[str]) -> int:
    """At most how many chunks hold a term of `terms` (the sum of their document frequencies
    in the publication's statistics): what the ranking will score."""
    t = LexicalTables(version)
    return conn.execute(
        f"select coalesce(sum(dict.df), 0) from {t.qualified(t.terms)} as dict "
        f"where dict.term = any(%(terms)s) and {visible_sql('dict', '%(p)s')}",
        {"terms": terms, "p": publication}).fetchone()[0]


@contextlib.contextmanager
def _plan_for(conn: Any, holders: int) -> Iterator[None]:
    """Plan the ranking by how many chunks it scores: up to MANY_HOLDERS, PostgreSQL's own
    plan (it probes the eligible chunks by key: ~10 ms for a document number at 100,000
    chunks); more, hash joins and the memory to sort them (its row estimates for the eligible
    set are low, and probing each of 100,000 candidates took 2-3 s where hashing takes ~1 s).
    The settings are the transaction's and restored after the statement (the vector search of
    a hybrid search plans as ever)."""
    if holders <= MANY_HOLDERS:
        yield
        return
    saved = conn.execute("select current_setting('enable_nestloop'), "
                         "current_setting('work_mem')").fetchone()
    conn.execute(f"select set_config('enable_nestloop', 'off', true), "
                 f"set_config('work_mem', '{MANY_HOLDERS_WORK_MEM}', true)")
    try:
        yield
    finally:
        conn.execute("select set_config('enable_nestloop', %s, true), "
                     "set_config('work_mem', %s, true)", saved)
