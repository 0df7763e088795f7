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

import json
import threading
from typing import Any

import duckdb

from ragmart.retrieval.clauses import DISTANCE_CLAUSES, Render, active_clauses
from ragmart.retrieval.lexical import K1, B
from ragmart.retrieval.postgres_sql import PostgresTables, eligible_sql, visible_sql
from ragmart.retrieval.results import RetrievalError
from ragmart.serving import lexical_index
from ragmart.serving.postgres.lexical import LexicalTables

# the extra parameter a PostgreSQL lexical search binds: the question's terms
TERMS_PARAMETER = {"terms": "varchar[]"}
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
    fts = lexical_index.schema_of(_TOKENIZER_TABLE)
    cursor = _tokenizer_conn()
    try:
        rows = cursor.execute(
            f"select distinct stem(token, '{lexical_index.STEMMER}') as term from (select "
            f"unnest({fts}.tokenize($q)) as token) where token <> '' and token not in "
            f"(select sw from {fts}.stopwords) order by term", {"q": question}).fetchall()
    finally:
        cursor.close()
    return [term for (term,) in rows]


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


def ranking_sql(p: Render, source: str, tables: PostgresTables, params: dict[str, Any]) -> str:
    """(chunk_id, score) of the eligible chunks holding a term of $terms, best first (score,
    then chunk_id in byte order), at most $k."""
    t = LexicalTables(tables.version)
    active = active_clauses(params)
    eligible = eligible_sql(p, source, tables, narrow=True, active=active,
                            similarity=bool(active & DISTANCE_CLAUSES))
    publication = p("publication")
    k1, b, one = _float(K1), _float(B), _float(1.0)
    half = _float(0.5)
    return f"""
    with {eligible},
    query_terms as (
        select distinct term from unnest({p('terms')}) as term
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
        where bags.terms && {p('terms')} and {visible_sql('bags', publication)}
    ),
    matches as (
        select candidates.chunk_id, cast(candidates.len as double precision) as len,
            kept_terms.df, cast(bag.tf as double precision) as tf
        from candidates
        cross join lateral unnest(candidates.terms, candidates.tfs) as bag (term, tf)
        inner join kept_terms on kept_terms.term = bag.term
        where candidates.chunk_id in (select eligible.chunk_id from eligible)
    ),
    scores as (
        select matches.chunk_id,
            round(cast(sum(
                ln(((stats.num_docs - matches.df) + {half}) / (matches.df + {half}) + {one})
                * (matches.tf * ({k1} + {one}))
                / (matches.tf + {k1} * ({one} - {b} + {b} * (matches.len / stats.avgdl)))
            ) as numeric), 9) as score
        from matches
        cross join stats
        group by matches.chunk_id
    )
    select scores.chunk_id, cast(scores.score as double precision) as score
    from scores
    order by scores.score desc, scores.chunk_id collate "C" asc
    limit {p('k')}
    """


def rank(conn: Any, p: Render, source: str, params: dict[str, Any],
         tables: PostgresTables) -> list[tuple[str, float]]:
    """The top params['k'] (chunk_id, BM25 score) of the eligible chunks for
    params['question'] in the publication params['publication']; [] when none holds a term of
    it. `p` must render the `terms` parameter (TERMS_PARAMETER)."""
    terms = question_terms(params["question"])
    if not terms:
        return []
    sql = ranking_sql(p, source, tables, params)
    return [(chunk_id, float(score))
            for chunk_id, score in conn.execute(sql, {**params, "terms": json.dumps(terms)})]
