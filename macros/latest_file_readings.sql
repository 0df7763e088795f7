{% macro latest_file_readings(landed_relation) %}
    {#- One row per landing file: the file_sha256 of its latest reading. A file whose content
        changed after it was read (read while still being written, then completed) is read
        again; its latest content is what counts, as a from-scratch build would read only that.
        The rows of earlier readings stay in stg_landing__document_events for audit. -#}
    select
        source_file,
        arg_max(file_sha256, ingested_at) as file_sha256
    from {{ landed_relation }}
    group by source_file
{% endmacro %}
