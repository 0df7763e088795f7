-- Every document ever seen, deleted ones included, with the access of its latest known state.
-- Retrieval admits a version only when both its own allowed_groups and these admit the caller,
-- so narrowing a document's access is effective at once for every point in time (`--as-of`),
-- whether the document is live or deleted. The latest known state is the latest event's: a
-- delete's own image when it carries allowed_groups, else the last version before the delete
-- (a delete without groups says nothing about access; it does not widen it).
with

versions as (

    select * from {{ ref('int_document_versions') }}

),

latest_states as (

    select
        document_id,
        document_version,
        allowed_groups
    from versions
    where not (is_deleted and allowed_groups is null)
    qualify row_number() over (partition by document_id order by document_version desc) = 1

),

latest_events as (

    select
        document_id,
        document_version,
        is_deleted,
        valid_from
    from versions
    where is_latest

),

final as (

    select
        latest_events.document_id,
        latest_events.document_version as latest_document_version,
        latest_states.allowed_groups,
        latest_events.is_deleted,
        latest_events.valid_from as latest_event_at
    from latest_events
    inner join latest_states
        on latest_events.document_id = latest_states.document_id

)

select * from final
