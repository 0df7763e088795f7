{% macro provider_embedding_model() %}
    {{- return(adapter.dispatch('provider_embedding_model', 'ragmart')()) -}}
{% endmacro %}

{% macro default__provider_embedding_model() %}
    {{- _adapter_not_supported('provider_embedding_model') -}}
{% endmacro %}

{% macro duckdb__provider_embedding_model() %}
    {#- {model, dimensions} of the configured embedding provider, as the provider itself
        declares them: the function ragmart_embedding_model, registered on dbt's connection
        by the plugin (ragmart.embedding.model_function). The names are not derived here. While
        dbt parses (no database) it returns a placeholder: nothing parsed is executed. -#}
    {%- set provider = var('embedding_provider', env_var('RAGMART_EMBEDDING_PROVIDER', 'local')) | string -%}
    {%- if not execute -%}
        {{- return({'model': 'resolved-when-executing', 'dimensions': 1}) -}}
    {%- endif -%}
    {%- set found = run_query(
        "select answer.model, answer.dimensions, answer.error from (select "
        ~ "ragmart_embedding_model('" ~ provider | replace("'", "''") ~ "') as answer)"
    ).rows[0] -%}
    {%- if found[2] -%}
        {{- exceptions.raise_compiler_error(
            "embedding provider (the var embedding_provider, else RAGMART_EMBEDDING_PROVIDER): "
            ~ found[2]
        ) -}}
    {%- endif -%}
    {{- return({'model': found[0], 'dimensions': found[1] | int}) -}}
{% endmacro %}
