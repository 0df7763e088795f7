{% macro checked_landed_records(landed_relation) %}
    {{- return(adapter.dispatch('checked_landed_records', 'ragmart')(landed_relation)) -}}
{% endmacro %}

{% macro default__checked_landed_records(landed_relation) %}
    {{- _adapter_not_supported('checked_landed_records') -}}
{% endmacro %}

{% macro duckdb__checked_landed_records(landed_relation) %}
    {#- The rows of `landed_relation` (stg_landing__document_events) from the latest reading of
        each file (latest_landed_readings), with conflicting duplicates quarantined.

        Two valid records with the same (document_id, change_seq) are one event delivered twice
        when they agree on what the document becomes: the op and, unless it is a delete, the
        document_type, title, content and allowed_groups. They collapse to one event downstream.
        When they disagree, neither can be trusted over the other (the order files landed in is
        no evidence), so every delivery of that key becomes a quarantine row with the code
        `conflicting_duplicate`, naming the other deliveries, and no version is built from it.
        Left out of the comparison: a delete's other columns (a Debezium delete carries the
        before image, a DMS delete often only the key), and commit_ts, updated_at and metadata,
        which layouts carry at different precisions and with different extra columns. -#}
    {%- set payload -%}
        struct_pack(
            op := op,
            document_type := case when op <> 'D' then document_type end,
            title := case when op <> 'D' then title end,
            content := case when op <> 'D' then content end,
            allowed_groups := case when op <> 'D' then allowed_groups end
        )
    {%- endset %}
    with

    readings as (

        {{ latest_landed_readings(landed_relation) }}

    ),

    repeated_keys as (

        select
            document_id,
            change_seq
        from ({{ latest_landed_readings(landed_relation) }}) as landed
        where quarantine_reason is null
        group by document_id, change_seq
        having count(*) > 1

    ),

    conflicting_keys as (

        select
            landed.document_id,
            landed.change_seq,
            count(distinct {{ payload }}) as version_count,
            string_agg(
                distinct landed.source_file || ':' || landed.source_line, ', '
                order by landed.source_file || ':' || landed.source_line
            ) as deliveries
        from ({{ latest_landed_readings(landed_relation) }}) as landed
        semi join repeated_keys
            on
                landed.document_id = repeated_keys.document_id
                and landed.change_seq = repeated_keys.change_seq
        where landed.quarantine_reason is null
        group by landed.document_id, landed.change_seq
        having count(distinct {{ payload }}) > 1

    )

    select
        readings.* replace (
            case
                when readings.quarantine_reason is null and conflicting_keys.document_id is not null
                    then 'conflicting_duplicate: ' || conflicting_keys.version_count
                    || ' records of document_id ' || readings.document_id || ' change_seq '
                    || readings.change_seq || ' disagree (' || conflicting_keys.deliveries
                    || '); neither is applied: fix the wrong one (a file re-landed under its '
                    || 'own name replaces its earlier reading)'
                else readings.quarantine_reason
            end as quarantine_reason,
            case
                when conflicting_keys.document_id is null then readings.op
            end as op
        )
    from readings
    left join conflicting_keys
        on
            readings.document_id = conflicting_keys.document_id
            and readings.change_seq = conflicting_keys.change_seq
            and readings.quarantine_reason is null
{% endmacro %}
