-- Every version of every document, ordered by the source's own sequence (change_seq / LSN),
-- never by file name or arrival. A delete is a tombstone version. `document_version` is the
-- change_seq of the event that produced the version: stable when late events arrive.
-- Incremental (delete+insert by document): a build recomputes the versions of the documents
-- whose events changed (a new event, a late one, another delivery of one), found by comparing
-- narrow keys, so it reads and writes the content of those documents only. A document can lose
-- all its events (a later conflicting delivery quarantines its only one, a re-read file no
-- longer holds it): delete+insert only deletes documents it inserts rows for, so the post-hook
-- removes the versions of documents that have no event left, as a rebuild would.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='document_id',
    on_schema_change='fail',
    post_hook=[
        "delete from {{ this }} as versions where not exists (select 1 from "
        ~ "{{ ref('stg_cdc__document_events') }} as events "
        ~ "where events.document_id = versions.document_id)"
    ],
) }}

with

events as (

    select * from {{ ref('stg_cdc__document_events') }}

),

{% if is_incremental() %}
    delivered as (

        select
            document_id,
            change_seq as document_version,
            delivery_count,
            source_layout,
            source_file,
            source_line
        from events

    ),

    recorded as (

        select
            document_id,
            document_version,
            delivery_count,
            source_layout,
            source_file,
            source_line
        from {{ this }}

    ),

    changed_documents as (

        (
            select * from delivered
            except
            select * from recorded
        )
        union all
        (
            select * from recorded
            except
            select * from delivered
        )

    ),
{% endif %}

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
    {% if is_incremental() %}
        where document_id in (select changed_documents.document_id from changed_documents)
    {% endif %}
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
