"""Lexical search: BM25 over the eligible chunks, from the serving set's full-text index.

The ranking is one SQL statement. Its candidates are the `eligible` rows of ragmart.retrieval.
sql's eligible_sql, the same source (access groups, the live set or the versions live at
as_of) and the same contract clauses as vector search, so a chunk the caller may not see, or
that the contract excludes, is never scored, whatever the question's terms. Within them:

- a chunk the full-text index holds (ragmart.serving.lexical_index) is scored from the index's
  ``terms``/``docs`` tables;
- an eligible chunk it lacks (served since the index was last rebuilt, or an old version an
  as-of search reads) is scored by the same formula over its text, tokenized now by the index's
  own ``tokenize`` macro, stopwords dropped then stemmed, as the index was built;
- a chunk the index holds that is not eligible (a deleted document, another group's) is
  dropped by the join on `eligible`.

Both use the index's statistics (documents, average length, each term's document frequency)
and fts' BM25 (k1 = 1.2, b = 0.75, the query's distinct terms, as ``match_bm25``). Scores are
rounded to 1e-9 before ranking, ties broken by chunk_id: the same question gives the same
order. A chunk matching no term of the question is not a lexical result: when no eligible chunk
matches any, the search abstains (LEXICAL_NO_MATCH).

A Retriever whose snapshot's index holds every served row ranks without this statement
(ragmart.retrieval.memory_lexical): the postings in memory propose the candidates, scored from
the same integers by `scored_sql`'s arithmetic reproduced in numpy (ragmart.retrieval.bm25,
bit for bit), or by `scored_sql` itself when a sum is too close to a rounding boundary.
"""

from __future__ import annotations

from typing import Any

import duckdb

from ragmart.retrieval.bm25 import K1, B  # fts' BM25 parameters
from ragmart.retrieval.clauses import DISTANCE_CLAUSES, Render, active_clauses
from ragmart.retrieval.results import RetrievalError
from ragmart.retrieval.sql import Tables, eligible_sql, used
from ragmart.serving.lexical_index import STEMMER, ensure_loaded, has_index, schema_of

# the extra parameter a lexical search binds (python_param's `extra`)
QUESTION_PARAMETER = {"question": "varchar"}
LEXICAL_NO_MATCH = ("no eligible chunk contains any term of the question (lexical search: "
                    "{terms}); rephrase with words of the documents, or search by meaning "
                    "(--mode vector or hybrid)")


def check_index(conn: duckdb.DuckDBPyConnection, tables: Tables) -> None:
    """RetrievalError when the serving set has no full-text index to search."""
    if not has_index(conn, tables.serving):
        raise RetrievalError(
            f"{tables.serving} has no full-text index, which lexical and hybrid search read; "
            "run `dbt build` (it builds the index) and `ragmart publish`, or search with "
            "--mode vector")


def ranking_sql(p: Render, source: str, tables: Tables, params: dict[str, Any], *,
                delta: bool = True, only: str | None = None, matches: str | None = None
                ) -> str:
    """(chunk_id, score) of the eligible chunks matching a term of $question, best first.
    `delta` False: the caller knows that every row of `source` is in the index (`has_delta`),
    and the statement scores from the index only (the delta's anti joins cost ~40% of it).
    `only`: a literal chunk_id list (sql.literal_list) the eligible chunks are taken from
    (ragmart.retrieval.memory_lexical's candidates). `matches`: a relation holding what the
    `indexed` step reads from the index (chunk_id, len, df, tf) for those candidates
    (memory_lexical.LexicalPostings.matches), read instead of the index's tables; the scores
    are computed by the same expression from the same integers."""
    fts = schema_of(tables.serving)
    active = active_clauses(params)
    eligible = eligible_sql(p, source, tables, narrow=True, active=active, only=only,
                            similarity=bool(active & DISTANCE_CLAUSES))
    text_table = tables.history if source == "as_of" else tables.serving
    unindexed = f"""    unindexed_tokens as (
        select chunks.chunk_id, unnest({fts}.tokenize(chunks.chunk_text)) as token
        from {text_table} as chunks
        semi join eligible on chunks.chunk_id = eligible.chunk_id
        anti join {fts}.docs as docs on chunks.chunk_id = docs.name
    ),
    unindexed_kept as (
        select chunk_id, stem(token, '{STEMMER}') as term
        from unindexed_tokens
        where token <> ''
            and token not in (select stopwords.sw from {fts}.stopwords as stopwords)
    ),
    unindexed_lengths as (
        select chunk_id, count(*) as len from unindexed_kept group by chunk_id
    ),
    unindexed as (
        select unindexed_kept.chunk_id, any_value(unindexed_lengths.len) as len,
            kept_terms.df, count(*) as tf
        from unindexed_kept
        inner join kept_terms on unindexed_kept.term = kept_terms.term
        inner join unindexed_lengths on unindexed_kept.chunk_id = unindexed_lengths.chunk_id
        group by unindexed_kept.chunk_id, kept_terms.term, kept_terms.df
    ),
""" if delta else ""
    indexed = f"""
        select docs.name as chunk_id, docs.len, kept_terms.df, count(*) as tf
        from {fts}.terms as terms
        inner join kept_terms on terms.termid = kept_terms.termid
        inner join {fts}.docs as docs on terms.docid = docs.docid
        where docs.name in (select eligible.chunk_id from eligible)
        group by docs.name, docs.len, kept_terms.termid, kept_terms.df""" if matches is None \
        else f"""
        select postings.chunk_id, postings.len, postings.df, postings.tf
        from {matches} as postings
        where postings.chunk_id in (select eligible.chunk_id from eligible)"""
    delta_union = ("union all\n        select chunk_id, len, df, tf from unindexed" if delta
                   else "")
    return f"""
    with {eligible},
    query_tokens as (
        select unnest({fts}.tokenize({p('question')})) as token
    ),
    query_terms as (
        select distinct stem(token, '{STEMMER}') as term
        from query_tokens
        where token <> ''
            and token not in (select stopwords.sw from {fts}.stopwords as stopwords)
    ),
    kept_terms as (
        select query_terms.term, dict.termid, coalesce(dict.df, 0) as df
        from query_terms
        left join {fts}.dict as dict on dict.term = query_terms.term
    ),
    indexed as ({indexed}
    ),
{unindexed}    matches as (
        select chunk_id, len, df, tf from indexed
        {delta_union}
    ),
    {scored_sql(fts, p('k'))}"""


def scored_sql(fts: str, limit: str) -> str:
    """The end of a ranking statement: CTE `scores` (fts' BM25 of each chunk of CTE `matches`:
    chunk_id, len, df, tf per term it holds, with the index's statistics, rounded to 1e-9)
    and the first `limit` chunks by (score desc, chunk_id). ragmart.retrieval.bm25 computes the
    same scores in numpy, operation for operation: change both (tests/python/
    test_bm25_exact.py compares them)."""
    return f"""scores as (
        select matches.chunk_id,
            round(fsum(
                ln(((stats.num_docs - matches.df) + 0.5) / (matches.df + 0.5) + 1)
                * (matches.tf * ({K1} + 1))
                / (matches.tf + {K1} * (1 - {B} + {B} * (matches.len / stats.avgdl)))
            ), 9) as score
        from matches
        cross join {fts}.stats as stats
        group by matches.chunk_id
    )
    select scores.chunk_id, scores.score
    from scores
    order by scores.score desc, scores.chunk_id asc
    limit {limit}
    """


def rank_matches(conn: duckdb.DuckDBPyConnection, tables: Tables, relation: str, k: int
                 ) -> list[tuple[str, float]]:
    """The top `k` (chunk_id, BM25 score) of the chunks in `relation` (chunk_id, len, df, tf:
    what the ranking statement's `indexed` step reads from the index, for chunks already known
    eligible: ragmart.retrieval.memory_lexical), scored and ordered by the same expression."""
    sql = f"""
    with matches as (
        select chunk_id, len, df, tf from {relation}
    ),
    {scored_sql(schema_of(tables.serving), str(int(k)))}"""
    return [(chunk_id, float(score)) for chunk_id, score in conn.execute(sql).fetchall()]


def rank(conn: duckdb.DuckDBPyConnection, p: Render, source: str, params: dict[str, Any],
         tables: Tables, *, delta: bool = True, only: str | None = None,
         matches: str | None = None) -> list[tuple[str, float]]:
    """The top params['k'] (chunk_id, BM25 score) of the eligible chunks for
    params['question']; [] when none matches a term of it. The index must exist
    (check_index). `delta`, `only`, `matches`: see ranking_sql."""
    ensure_loaded(conn)  # stem()
    sql = ranking_sql(p, source, tables, params, delta=delta, only=only, matches=matches)
    return [(chunk_id, float(score))
            for chunk_id, score in conn.execute(sql, used(sql, params)).fetchall()]


def question_terms(conn: duckdb.DuckDBPyConnection, tables: Tables, question: str) -> list[str]:
    """The terms lexical search looks for in `question` (stemmed, stopwords dropped), for the
    abstention reason."""
    return terms_of(conn, schema_of(tables.serving), question)


def terms_of(conn: duckdb.DuckDBPyConnection, fts: str, question: str) -> list[str]:
    """The distinct terms of `question` as the full-text index in schema `fts` tokenizes it
    (its tokenize macro, its stopwords dropped, stemmed), sorted."""
    rows = conn.execute(
        f"select distinct stem(token, '{STEMMER}') as term from (select unnest("
        f"{fts}.tokenize($q)) as token) where token <> '' and token not in "
        f"(select sw from {fts}.stopwords) order by term", {"q": question}).fetchall()
    return [term for (term,) in rows]


def has_delta(conn: duckdb.DuckDBPyConnection, tables: Tables) -> bool:
    """Whether a row of the serving set is missing from its full-text index (the delta a
    search scores from the text): asked once per snapshot by a reader of a read-only file,
    which cannot change under it."""
    fts = schema_of(tables.serving)
    return bool(conn.execute(
        f"select exists (select 1 from {tables.serving} as chunks anti join {fts}.docs as docs "
        "on chunks.chunk_id = docs.name)").fetchone()[0])
