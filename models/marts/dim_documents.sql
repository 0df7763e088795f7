-- The live documents: the latest version of each document that is not a tombstone.
with

versions as (

    select * from {{ ref('int_document_versions') }}

),

final as (

    select
        document_id,
        document_version,
        document_checksum,
        document_type,
        title,
        allowed_groups,
        updated_at,
        valid_from,
        version_number,
        metadata,
        length(content) as content_length
    from versions
    where is_current

)

select * from final
