{% macro latest_landed_readings(landed_relation) %}
    {{- return(adapter.dispatch('latest_landed_readings', 'ragmart')(landed_relation)) -}}
{% endmacro %}

{% macro default__latest_landed_readings(landed_relation) %}
    {{- _adapter_not_supported('latest_landed_readings') -}}
{% endmacro %}

{% macro duckdb__latest_landed_readings(landed_relation) %}
    {#- The rows of `landed_relation` (stg_landing__document_events) from the latest reading of
        each landing file. A file whose content changed after it was read (read while still
        being written, then completed) is read again; its latest content is what counts, as a
        from-scratch build would read only that. The rows of earlier readings stay in
        stg_landing__document_events for audit. -#}
    select landed.*
    from {{ landed_relation }} as landed
    semi join (
        select
            source_file,
            arg_max(file_sha256, ingested_at) as file_sha256
        from {{ landed_relation }}
        group by source_file
    ) as latest
        on
            landed.source_file = latest.source_file
            and landed.file_sha256 = latest.file_sha256
{% endmacro %}
