-- Landed records that could not be trusted, with where they came from and why. Nothing a
-- producer sends is dropped silently: it is either an event or a row here.
-- Only the latest reading of each file counts (latest_file_readings): a truncated last line of
-- a file read while it was still being written is not a record to look at once it is complete.
with

landed as (

    select * from {{ ref('stg_landing__document_events') }}

),

latest_readings as (

    {{ latest_file_readings(ref('stg_landing__document_events')) }}

),

final as (

    select
        landed.source_file,
        landed.source_line,
        landed.source_layout,
        landed.file_sha256,
        split_part(landed.quarantine_reason, ':', 1) as quarantine_code,
        landed.quarantine_reason,
        landed.document_id,
        landed.change_seq,
        landed.raw_record,
        landed.ingested_at,
        landed.dbt_invocation_id
    from landed
    semi join latest_readings
        on
            landed.source_file = latest_readings.source_file
            and landed.file_sha256 = latest_readings.file_sha256
    where landed.quarantine_reason is not null

)

select * from final
