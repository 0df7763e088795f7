-- The serving set of one index version (relation fct_chunk_embeddings_<index_version>): one row
-- per chunk of every live document version, with its vector for the version's embedding model
-- and full lineage. A new chunker or model is built beside the serving one under a new
-- index_version (dbt build --vars '{index_version: v2, chunker_version: ...}').
-- Incremental: a build inserts the chunk rows it has not served yet and deletes rows whose
-- version is no longer live, so its cost follows the change, not the corpus (the new chunks
-- are picked on keys before any text or vector is read). Nearest-neighbour
-- search goes through fct_chunk_vector_index_<v> and fct_chunk_vector_delta_<v>.
{{ config(
    alias='fct_chunk_embeddings_' ~ var('index_version'),
    materialized='incremental',
    incremental_strategy='append',
    unique_key='chunk_id',
    on_schema_change='fail',
    post_hook=[
        "{{ prune_serving_set(this, ref('int_document_versions')) }}",
        "{{ record_index_version(ref('int_document_versions')) }}",
    ]
) }}

with

live_versions as (

    select * from {{ ref('int_document_versions') }}
    where is_current

),

-- the chunks of live versions not served yet, picked on keys alone, so that only their rows
-- (text, vectors) are read in full: the cost follows the change, not the corpus. It reads the
-- tables, not the CTEs: a CTE read twice is materialized whole (content included).
new_chunk_ids as (

    select chunk_keys.chunk_id
    from {{ ref('int_chunks') }} as chunk_keys
    semi join {{ ref('int_document_versions') }} as current_versions
        on
            chunk_keys.document_id = current_versions.document_id
            and chunk_keys.document_version = current_versions.document_version
            and current_versions.is_current
    {% if is_incremental() %}
        anti join {{ this }} as served
            on chunk_keys.chunk_id = served.chunk_id
    {% endif %}
    where chunk_keys.chunker_version = '{{ var("chunker_version") }}'

),

chunks as (

    select * from {{ ref('int_chunks') }}
    where
        chunker_version = '{{ var("chunker_version") }}'
        and chunk_id in (select new_chunk_ids.chunk_id from new_chunk_ids)

),

vectors as (

    select * from {{ ref('int_chunk_embeddings') }}
    where embedding_model = '{{ embedding_model() }}'

),

final as (

    select
        chunks.chunk_id,
        chunks.document_id,
        chunks.document_version,
        chunks.document_checksum,
        chunks.chunk_index,
        chunks.chunker_version,
        chunks.chunk_hash,
        chunks.section,
        chunks.section_type,
        chunks.chunk_text,
        chunks.word_count,
        chunks.section_chunk_index,
        chunks.section_chunk_count,
        chunks.is_split_paragraph,
        live_versions.document_type,
        live_versions.title,
        live_versions.allowed_groups,
        live_versions.updated_at as document_updated_at,
        live_versions.valid_from as document_valid_from,
        vectors.embedding_model,
        cast(vectors.embedding as float[{{ embedding_dimensions() }}]) as embedding,
        vectors.created_at,
        vectors.dbt_invocation_id as embedding_invocation_id,
        chunks.created_at as chunk_created_at,
        chunks.dbt_invocation_id as chunk_invocation_id,
        '{{ invocation_id }}' as dbt_invocation_id
    from chunks
    inner join live_versions
        on
            chunks.document_id = live_versions.document_id
            and chunks.document_version = live_versions.document_version
    inner join vectors
        on chunks.chunk_hash = vectors.chunk_hash

)

select * from final
