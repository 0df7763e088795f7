-- One row per (document_id, change_seq): the valid CDC events of both layouts, typed and
-- de-duplicated. A replayed file, a duplicated batch and the same event delivered through DMS
-- and Debezium all collapse to one event; `delivery_count` says how often it arrived. Only the
-- latest reading of each file counts (latest_landed_readings): a file read while still being
-- written may have yielded a truncated record that the complete file replaces. Records of one
-- (document_id, change_seq) that disagree are quarantined, all of them (checked_landed_records):
-- they are not events, and none of them wins by file order.
with

landed as (

    {{ checked_landed_records(ref('stg_landing__document_events')) }}

),

landed_events as (

    select * from landed
    where quarantine_reason is null

),

ranked as (

    select
        *,
        row_number() over (
            partition by document_id, change_seq
            order by source_layout asc, source_file asc, source_line asc
        ) as delivery_rank,
        count(*) over (partition by document_id, change_seq) as delivery_count
    from landed_events

),

final as (

    select
        document_id,
        change_seq,
        op,
        commit_ts,
        document_type,
        title,
        content,
        updated_at,
        allowed_groups,
        metadata,
        source_layout,
        source_file,
        source_line,
        delivery_count
    from ranked
    where delivery_rank = 1

)

select * from final
