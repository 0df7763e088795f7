"""The embedding cache: one vector per (chunk_hash, embedding_model), append-only.

Only chunk texts of live document versions that have no vector yet for this model are sent to
the provider, so an unchanged text (another document, an earlier version, a reverted edit) is
never embedded twice. Each build appends a row to the `embedding_runs` table.

Every provider call's vectors are committed at once to `embedding_cache_pending`
(ragmart.embedding.pending.commit_pending_vectors), apart from this model's transaction: a build
killed mid-way has still paid for them only once, and the next build takes them from there
(take_pending_vectors) instead of sending their texts again. The post-hook
clear_pending_vectors deletes them once the cache holds them. When the provider fails for good,
the vectors obtained are committed to this table (ragmart.embedding.pending.keep_obtained_vectors)
and the model fails.
"""


def model(dbt, session):
    # append_new_columns: a cache built before a column was added gets it (null on old rows)
    dbt.config(
        materialized="incremental",
        incremental_strategy="append",
        on_schema_change="append_new_columns",
    )
    import pyarrow as pa

    from ragmart.build.faults import fault_point
    from ragmart.embedding.pending import (
        commit_pending_vectors,
        keep_obtained_vectors,
        take_pending_vectors,
    )
    from ragmart.embedding.pipeline import EMBEDDING_SCHEMA, EmbeddingIncompleteError, embed_texts
    from ragmart.embedding.providers import build_provider
    from ragmart.embedding.runs import EmbeddingRun, record_run
    from ragmart.relations import PENDING_TABLE, RUNS_TABLE

    # plain assignments: dbt fills dbt.config.get() only for the calls its parser finds there
    provider_name = dbt.config.get("embedding_provider")
    expected_model = dbt.config.get("embedding_model")
    provider = build_provider(provider_name, expected_model)
    chunker_version = str(dbt.config.get("chunker_version"))
    run = EmbeddingRun.start(provider=provider.name, embedding_model=provider.model)

    # qualified: the session's default catalog is not the attached database file
    schema = f'"{dbt.this.database}"."{dbt.this.schema}"'
    runs_table = f"{schema}.{RUNS_TABLE}"
    pending_table = f"{schema}.{PENDING_TABLE}"
    # vectors a killed or failed build obtained and committed, not yet in the cache
    pending = take_pending_vectors(session, pending_table,
                                   str(dbt.this) if dbt.is_incremental else None,
                                   EMBEDDING_SCHEMA)
    if pending.num_rows:
        run.log(f"{pending.num_rows} vectors obtained by an interrupted build are taken from "
                f"{PENDING_TABLE}, not requested again")

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
    cache_sql = f"select chunk_hash from {pending_table} where embedding_model = $model"
    if dbt.is_incremental:
        cache_sql += f" union all select chunk_hash from {dbt.this} where embedding_model = $model"
    cached = session.sql(cache_sql, params={"model": provider.model})  # noqa: F841 - read below
    missing_sql = "select * from serving anti join cached using (chunk_hash)"
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

    try:
        table = embed_texts(
            missing, provider, log=run.log,
            on_batch=lambda batch: commit_pending_vectors(
                session, pending_table, batch, run, provider.stats, runs_table=runs_table),
        )
    except EmbeddingIncompleteError as exc:
        # Keep what was paid for, committed apart from this model's transaction (which dbt
        # rolls back); the model fails, so dbt skips the serving models and they keep serving
        # the previous build. The next build finds these vectors cached.
        run.finish(provider.stats, error=str(exc))
        kept = keep_obtained_vectors(session, str(dbt.this), pa.concat_tables([pending, exc.table]),
                                     run, runs_table=runs_table)
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
    return pa.concat_tables([pending, table])
