-- The HNSW-indexed vectors of the serving set. Append-only: a build appends the vectors of newly
-- served chunks, so index maintenance costs what changed, not the corpus. Rows of chunks that
-- left the serving set stay until compaction (retrieval joins candidates back to the live rows);
-- when they exceed `vector_index_max_dead_ratio` the pre-hook drops the index, deletes them and
-- the post-hook re-creates it. The index never lives through a delete (vss defect: an HNSW index
-- on a table that saw deletes can return fewer than k rows after a reopen).
{{ config(
    alias='fct_chunk_vector_index_' ~ var('index_version'),
    materialized='incremental',
    incremental_strategy='append',
    unique_key='chunk_id',
    on_schema_change='fail',
    pre_hook=[
        "{{ compact_vector_index(this, ref('fct_chunk_embeddings')) }}",
    ],
    post_hook=[
        "create index if not exists {{ this.identifier }}_hnsw on {{ this }}
            using hnsw (embedding) with (metric = 'cosine')",
        {"sql": "checkpoint", "transaction": false},
    ]
) }}

with

served as (

    select * from {{ ref('fct_chunk_embeddings') }}

),

final as (

    select
        chunk_id,
        embedding,
        cast(current_timestamp as timestamp) as indexed_at,
        '{{ invocation_id }}' as dbt_invocation_id
    from served
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as indexed
            where indexed.chunk_id = served.chunk_id
        )
    {% endif %}

)

select * from final
