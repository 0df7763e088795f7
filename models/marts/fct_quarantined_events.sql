-- Landed records that could not be trusted, with where they came from and why. Nothing a
-- producer sends is dropped silently: it is either an event or a row here.
-- Only the latest reading of each file counts (latest_landed_readings): a truncated last line of
-- a file read while it was still being written is not a record to look at once it is complete.
-- Conflicting duplicates (checked_landed_records) are here under `conflicting_duplicate`, and a
-- file ingestion does not read (wrong folder or extension) as one `unsupported_file` row.
with

landed as (

    {{ checked_landed_records(ref('stg_landing__document_events')) }}

),

final as (

    select
        source_file,
        source_line,
        source_layout,
        file_sha256,
        split_part(quarantine_reason, ':', 1) as quarantine_code,
        quarantine_reason,
        document_id,
        change_seq,
        raw_record,
        ingested_at,
        dbt_invocation_id
    from landed
    where quarantine_reason is not null

)

select * from final
