"""The judged questions (seed judged_queries) embedded for the configured embedding model.

Append-only cache keyed by (query_id, question_hash, embedding_model): a question is embedded
once per model, again only when its text changes. Feeds fct_retrieval_eval. Thin wrapper around
ragmart.quality.judged.embed_judged_questions.
"""


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="append")
    from ragmart.embedding.providers import build_provider
    from ragmart.quality.judged import embed_judged_questions

    # plain assignments: dbt fills dbt.config.get() only for the calls its parser finds there
    provider_name = dbt.config.get("embedding_provider")
    expected_model = dbt.config.get("embedding_model")
    provider = build_provider(provider_name, expected_model)
    judged = dbt.ref("judged_queries")
    questions = judged.project("query_id, question").fetchall()
    cached = []
    if dbt.is_incremental:
        cached = session.execute(
            f"select query_id, question_hash from {dbt.this} where embedding_model = $model",
            {"model": provider.model},
        ).fetchall()
    return embed_judged_questions(questions, provider, cached=cached)
