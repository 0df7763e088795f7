{% macro log_failing_documents(label, failing_sql, limit=20) %}
    {{- return(adapter.dispatch('log_failing_documents', 'ragmart')(label, failing_sql, limit)) -}}
{% endmacro %}

{% macro default__log_failing_documents(label, failing_sql, limit) %}
    {{- _adapter_not_supported('log_failing_documents') -}}
{% endmacro %}

{% macro duckdb__log_failing_documents(label, failing_sql, limit) %}
    {#- dbt only counts a test's failing rows: log each one (up to `limit`) so the build output
        names the documents. Call it only when executing a test (execute and flags.WHICH in
        ('build', 'test')): it runs `failing_sql`. -#}
    {%- if not label or not failing_sql -%}
        {{- exceptions.raise_compiler_error(
            "log_failing_documents: pass a label and the test's SQL, e.g. "
            ~ "log_failing_documents('stale', failing_sql)"
        ) -}}
    {%- endif -%}
    {%- set rows = run_query(
        "select * from (" ~ failing_sql ~ ") as failing order by all limit " ~ (limit | int)
    ) -%}
    {%- for row in rows -%}
        {%- set details = [] -%}
        {%- for column in rows.column_names if column not in ('document_id', 'document_version') -%}
            {%- do details.append(column ~ "=" ~ row[column]) -%}
        {%- endfor -%}
        {{- log(
            label ~ ": " ~ row['document_id'] ~ " v" ~ row['document_version']
            ~ " (" ~ (details | join(", ")) ~ ")",
            info=true,
        ) -}}
    {%- endfor -%}
    {{- return('') -}}
{% endmacro %}
