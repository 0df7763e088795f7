{% macro clear_pending_vectors(cache_relation) %}
    {#- Post-hook of int_chunk_embeddings: delete from embedding_cache_pending the vectors the
        cache now holds (committed with the cache rows, in the model's transaction). The model
        creates that table before it embeds anything and commits each provider call's vectors
        to it (ragmart.embedding.pending). The only place pending vectors are deleted: Python
        takes only those the cache does not hold. -#}
    {%- set pending = api.Relation.create(
        database=cache_relation.database,
        schema=cache_relation.schema,
        identifier='embedding_cache_pending',
    ) -%}
    delete from {{ pending }} as pending
    where exists (
        select 1 from {{ cache_relation }} as cached
        where
            cached.chunk_hash = pending.chunk_hash
            and cached.embedding_model = pending.embedding_model
    )
{% endmacro %}
