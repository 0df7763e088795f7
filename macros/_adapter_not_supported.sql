{% macro _adapter_not_supported(macro_name) %}
    {#- The default__ implementation of a macro whose SQL only DuckDB runs (its duckdb__ one):
        fail at compile time naming the macro and the adapter, instead of sending SQL the
        warehouse rejects with a message that names neither. -#}
    {{- exceptions.raise_compiler_error(
        "ragmart: " ~ macro_name ~ " is not supported on this adapter (" ~ adapter.type()
        ~ "): ragmart builds on DuckDB (dbt-duckdb). To port it, write " ~ adapter.type()
        ~ "__" ~ macro_name ~ " in macros/, beside duckdb__" ~ macro_name ~ "."
    ) -}}
{% endmacro %}
