{% test unique_combination(model, columns) %}
{#- Rows whose combination of `columns` is not unique: one row per duplicated key. -#}
{%- if columns is string or columns | length == 0 -%}
    {{ exceptions.raise_compiler_error(
        "unique_combination on " ~ model ~ ": `columns` must be a non-empty list, e.g. "
        ~ "columns: [document_id, document_version]"
    ) }}
{%- endif %}
select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
