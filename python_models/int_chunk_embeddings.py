"""The embedding cache: one vector per (chunk_hash, embedding_model), append-only.

Only chunk texts of live document versions that have no vector yet for this model are sent to
the provider, so an unchanged text (another document, an earlier version, a reverted edit) is
never embedded twice. Each build appends a row to the `embedding_runs` table. When the provider
fails for good, the vectors obtained before the failure are committed to this table anyway
(ragmart.runs.keep_obtained_vectors) and the model fails.
"""


def model(dbt, session):
    # append_new_columns: a cache built before a column was added gets it (null on old rows)
    dbt.config(
        materialized="incremental",
        incremental_strategy="append",
        on_schema_change="append_new_columns",
    )
    from ragmart.faults import fault_point
    from ragmart.pipeline import EmbeddingIncompleteError, embed_texts
    from ragmart.providers import get_provider
    from ragmart.runs import EmbeddingRun, keep_obtained_vectors, record_run

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
        where not versions.is_deleted and chunks.chunker_version = $chunker_version
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

    # qualified: the session's default catalog is not the attached database file
    runs_table = f'"{dbt.this.database}"."{dbt.this.schema}".embedding_runs'
    try:
        table = embed_texts(missing, provider, log=run.log)
    except EmbeddingIncompleteError as exc:
        # Keep what was paid for, committed apart from this model's transaction (which dbt
        # rolls back); the model fails, so dbt skips the serving models and they keep serving
        # the previous build. The next build finds these vectors cached.
        run.finish(provider.stats, error=str(exc))
        kept = keep_obtained_vectors(session, str(dbt.this), exc.table, run,
                                     runs_table=runs_table)
        raise EmbeddingIncompleteError(
            f"int_chunk_embeddings: {str(exc).rstrip('.')}. The {kept} vectors obtained are "
            f"kept in the cache and will not be requested again; models downstream are skipped "
            f"and keep serving the previous build. Fix the cause and run `dbt build` again: "
            f"only the {exc.total - exc.table.num_rows} missing texts will be sent.",
            table=exc.table,
            total=exc.total,
        ) from exc
    run.finish(provider.stats)
    record_run(session, run, table=runs_table)
    fault_point("embeddings_recorded")
    return table
