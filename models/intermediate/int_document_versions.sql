-- Every version of every document, ordered by the source's own sequence (change_seq / LSN),
-- never by file name or arrival. A delete is a tombstone version. `document_version` is the
-- change_seq of the event that produced the version: stable when late events arrive.
with

events as (

    select * from {{ ref('stg_cdc__document_events') }}

),

versioned as (

    select
        document_id,
        change_seq as document_version,
        op = 'D' as is_deleted,
        case when op = 'D' then null else coalesce(content, '') end as content,
        case
            when op = 'D' then null
            else sha256(coalesce(content, ''))
        end as document_checksum,
        document_type,
        title,
        updated_at,
        allowed_groups,
        metadata,
        commit_ts as valid_from,
        lead(commit_ts) over document_history as valid_to,
        lead(change_seq) over document_history as superseded_by_version,
        row_number() over document_history as version_number,
        source_layout,
        source_file,
        source_line,
        delivery_count
    from events
    window document_history as (partition by document_id order by change_seq asc)

),

final as (

    select
        *,
        superseded_by_version is null as is_latest,
        superseded_by_version is null and not is_deleted as is_current
    from versioned

)

select * from final
