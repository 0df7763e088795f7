-- Relation fct_chunk_history_<index_version>. Every chunk of every document version that was
-- ever live (deletes excluded), with the version's validity window, its vector for the index
-- version's embedding model and full lineage: what `ragmart retrieve --as-of` searches (an exact
-- scan over the rows live at that time; no vector index).
-- Incremental (delete+insert by document): a build rewrites the rows of documents whose
-- history changed (a new version ends the previous one, a late event splits a window, a
-- vector arrived), so its cost follows the change: the changed documents are found on narrow
-- keys, then only their versions, chunks and vectors are read (not every vector of the corpus).
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

{% if is_incremental() %}
    -- the rows the history should hold, narrow (no text, no vectors): compared with the table to
    -- find the documents whose history changed, whose rows alone are then read in full. It reads
    -- the tables, not the CTEs below: a CTE read twice is materialized whole (vectors included).
    expected as (

        select
            chunk_keys.chunk_id,
            chunk_keys.document_id,
            version_windows.valid_to as document_valid_to
        from {{ ref('int_chunks') }} as chunk_keys
        inner join {{ ref('int_document_versions') }} as version_windows
            on
                chunk_keys.document_id = version_windows.document_id
                and chunk_keys.document_version = version_windows.document_version
        semi join {{ ref('int_chunk_embeddings') }} as vector_keys
            on
                chunk_keys.chunk_hash = vector_keys.chunk_hash
                and vector_keys.embedding_model = '{{ embedding_model() }}'
        where
            chunk_keys.chunker_version = '{{ var("chunker_version") }}'
            and not version_windows.is_deleted

    ),

    changed_rows as (

        (
            select
                chunk_id,
                document_id,
                document_valid_to
            from expected
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
            from expected
        )

    ),

    changed_documents as (

        select distinct changed_rows.document_id from changed_rows

    ),
{% endif %}

versions as (

    select * from {{ ref('int_document_versions') }}
    where
        not is_deleted
    {% if is_incremental() %}
        and document_id in (select changed_documents.document_id from changed_documents)
    {% endif %}

),

chunks as (

    select * from {{ ref('int_chunks') }}
    where
        chunker_version = '{{ var("chunker_version") }}'
    {% if is_incremental() %}
        and document_id in (select changed_documents.document_id from changed_documents)
    {% endif %}

),

vectors as (

    select * from {{ ref('int_chunk_embeddings') }}
    where
        embedding_model = '{{ embedding_model() }}'
    {% if is_incremental() %}
        -- only the vectors of the changed documents' chunks: joined unfiltered, every
        -- vector of the corpus was read to serve one document (1-2 s at 100k chunks)
        and chunk_hash in (
            select chunk_keys.chunk_hash from {{ ref('int_chunks') }} as chunk_keys
            where
                chunk_keys.document_id
                in (select changed_documents.document_id from changed_documents)
        )
    {% endif %}

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
        versions.document_type,
        versions.title,
        versions.allowed_groups,
        versions.metadata,
        versions.updated_at as document_updated_at,
        versions.valid_from as document_valid_from,
        versions.valid_to as document_valid_to,
        versions.superseded_by_version,
        vectors.embedding_model,
        cast(vectors.embedding as float[{{ embedding_dimensions() }}]) as embedding,
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

)

select * from final
