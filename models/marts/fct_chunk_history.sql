-- Relation fct_chunk_history_<index_version>. Every chunk of every document version that was
-- ever live (deletes excluded), with the version's validity window, its vector for the index
-- version's embedding model and full lineage: what `ragmart retrieve --as-of` searches (an exact
-- scan over the rows live at that time; no vector index).
-- Incremental (delete+insert by document): a build rewrites the rows of documents whose
-- history changed (a new version ends the previous one, a late event splits a window, a
-- vector arrived), so its cost follows the change.
{{ config(
    alias='fct_chunk_history_' ~ var('index_version'),
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='document_id',
    on_schema_change='fail',
    post_hook=[
        "delete from {{ this }} where chunker_version <> '{{ var(\"chunker_version\") }}'
            or embedding_model <> '{{ embedding_model() }}'",
    ]
) }}

with

versions as (

    select * from {{ ref('int_document_versions') }}
    where not is_deleted

),

chunks as (

    select * from {{ ref('int_chunks') }}
    where chunker_version = '{{ var("chunker_version") }}'

),

vectors as (

    select * from {{ ref('int_chunk_embeddings') }}
    where embedding_model = '{{ embedding_model() }}'

),

history as (

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
        versions.document_type,
        versions.title,
        versions.allowed_groups,
        versions.metadata,
        versions.updated_at as document_updated_at,
        versions.valid_from as document_valid_from,
        versions.valid_to as document_valid_to,
        versions.superseded_by_version,
        vectors.embedding_model,
        cast(vectors.embedding as float[{{ var('embedding_dimensions') }}]) as embedding,
        vectors.created_at,
        vectors.dbt_invocation_id as embedding_invocation_id,
        chunks.created_at as chunk_created_at,
        chunks.dbt_invocation_id as chunk_invocation_id,
        '{{ invocation_id }}' as dbt_invocation_id
    from chunks
    inner join versions
        on
            chunks.document_id = versions.document_id
            and chunks.document_version = versions.document_version
    inner join vectors
        on chunks.chunk_hash = vectors.chunk_hash

),

{% if is_incremental() %}
    changed_rows as (

        (
            select
                chunk_id,
                document_id,
                document_valid_to
            from history
            except
            select
                chunk_id,
                document_id,
                document_valid_to
            from {{ this }}
        )
        union all
        (
            select
                chunk_id,
                document_id,
                document_valid_to
            from {{ this }}
            except
            select
                chunk_id,
                document_id,
                document_valid_to
            from history
        )

    ),
{% endif %}

final as (

    select * from history
    {% if is_incremental() %}
        where document_id in (select changed_rows.document_id from changed_rows)
    {% endif %}

)

select * from final
