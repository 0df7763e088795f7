-- The HNSW-indexed vectors of the serving set. Ordinary builds insert nothing here: new vectors
-- wait in fct_chunk_vector_delta (searched exactly), so index maintenance never costs the
-- corpus. When the delta or the rows no longer served grow past their thresholds, a build
-- compacts: the pre-hook drops the index and deletes the dead rows, this model inserts every
-- served vector it lacks, and the post-hook re-creates the index and checkpoints, moving it
-- out of the WAL (create_vector_index). The index never lives through a delete (vss defect: an
-- HNSW index on a table that saw deletes can return fewer than k rows after a reopen).
-- Strategy append_nonempty: an ordinary build runs no INSERT here at all, which would load the
-- whole HNSW index (1.7 s at 100,000 vectors) to insert nothing.
{{ config(
    alias='fct_chunk_vector_index_' ~ var('index_version'),
    materialized='incremental',
    incremental_strategy='append_nonempty',
    unique_key='chunk_id',
    on_schema_change='fail',
    pre_hook=[
        "{{ compact_vector_index(this, ref('fct_chunk_embeddings')) }}",
    ],
    post_hook=[
        {"sql": "{{ create_vector_index(this) }}", "transaction": false},
    ]
) }}

{%- set compacting = vector_index_needs_compaction(this, ref('fct_chunk_embeddings')) %}

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
        where
            {{ 'true' if compacting else 'false' }}
            and not exists (
                select 1 from {{ this }} as indexed
                where indexed.chunk_id = served.chunk_id
            )
    {% endif %}

)

select * from final
