"""The embedding cache: one vector per (chunk_hash, embedding_model), append-only.

Only chunk texts of live document versions that have no vector yet for this model are sent to
the provider, so an unchanged text (another document, an earlier version, a reverted edit) is
never embedded twice. Each build appends a row to the `embedding_runs` table.
"""


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="append")
    from ragmart.pipeline import embed_texts
    from ragmart.providers import get_provider
    from ragmart.runs import EmbeddingRun, record_run

    provider = get_provider(dbt.config.get("embedding_provider") or None)
    expected_model = dbt.config.get("embedding_model")
    if expected_model and provider.model != expected_model:
        raise ValueError(
            f"provider {provider.name!r} embeds with {provider.model!r} but the dbt var "
            f"embedding_model is {expected_model!r}; unset the var or set it to {provider.model!r}"
        )
    chunker_version = str(dbt.config.get("chunker_version"))
    run = EmbeddingRun.start(provider=provider.name, embedding_model=provider.model)

    chunks = dbt.ref("int_chunks")  # noqa: F841 - read by the SQL below
    versions = dbt.ref("int_document_versions")  # noqa: F841 - read by the SQL below
    serving = session.sql(  # noqa: F841 - read by the SQL below
        """
        select chunks.chunk_hash, chunks.chunk_text, chunks.dbt_invocation_id
        from chunks
        inner join versions
            on chunks.document_id = versions.document_id
            and chunks.document_version = versions.document_version
        where versions.is_current and chunks.chunker_version = $chunker_version
        """,
        params={"chunker_version": chunker_version},
    )
    if dbt.is_incremental:
        cached = session.sql(  # noqa: F841 - read by the SQL below
            f"select chunk_hash from {dbt.this} where embedding_model = $model",
            params={"model": provider.model},
        )
        missing_sql = "select * from serving anti join cached using (chunk_hash)"
    else:
        missing_sql = "select * from serving"
    missing = session.sql(
        f"select chunk_hash, any_value(chunk_text) from ({missing_sql}) group by chunk_hash"
    ).fetchall()
    run.chunks_in_serving_set = session.sql("select count(*) from serving").fetchone()[0]
    run.chunks_needing_vectors = session.sql(f"select count(*) from ({missing_sql})").fetchone()[0]
    if dbt.is_incremental:
        # chunks made by this build whose text already had a vector: the cache saved a call
        run.cache_hits = session.sql(
            "select count(*) from serving semi join cached using (chunk_hash) "
            "where serving.dbt_invocation_id = $invocation_id",
            params={"invocation_id": run.invocation_id},
        ).fetchone()[0]

    table = embed_texts(missing, provider, log=run.log)
    run.finish(provider.stats)
    # qualified: the session's default catalog is not the attached database file
    record_run(session, run, table=f'"{dbt.this.database}"."{dbt.this.schema}".embedding_runs')
    return table
