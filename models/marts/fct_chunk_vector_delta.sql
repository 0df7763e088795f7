-- Served vectors the HNSW index does not hold yet: what changed since the last compaction.
-- Rebuilt each build from an anti-join on chunk_id (cheap), searched exactly beside the index.
-- Its post-hook keeps the serving set's full-text index (lexical search) within its thresholds.
{{ config(
    alias='fct_chunk_vector_delta_' ~ var('index_version'),
    materialized='table',
    post_hook=[
        {"sql": "{{ maintain_lexical_index(ref('fct_chunk_embeddings')) }}", "transaction": false},
    ]
) }}

with

served as (

    select * from {{ ref('fct_chunk_embeddings') }}

),

indexed as (

    select * from {{ ref('fct_chunk_vector_index') }}

),

final as (

    select
        served.chunk_id,
        served.embedding
    from served
    anti join indexed
        on served.chunk_id = indexed.chunk_id

)

select * from final
