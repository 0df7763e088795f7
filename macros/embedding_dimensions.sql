{% macro embedding_dimensions() %}
    {{- return(adapter.dispatch('embedding_dimensions', 'ragmart')()) -}}
{% endmacro %}

{% macro default__embedding_dimensions() %}
    {#- The vector size of the configured provider's model, as the provider declares it
        (ragmart.embedding.providers: `local` and `hash` 384, `openai` RAGMART_OPENAI_DIMENSIONS, the
        `@<dims>` of its model name). An index version is typed with it: the casts of the
        serving set, history and evaluation, the contracts (their data_type renders the same
        rule from the same settings, checked equal by check_index_version), the HNSW index and
        delta that copy the serving set's column, and the version's binding in index_versions. -#}
    {%- set provider = var('embedding_provider', env_var('RAGMART_EMBEDDING_PROVIDER', 'local')) -%}
    {%- if provider != 'openai' -%}
        {{- return(384) -}}
    {%- endif -%}
    {%- set raw = (env_var('RAGMART_OPENAI_DIMENSIONS', '') | trim) or '384' -%}
    {%- if not modules.re.match('^[1-9][0-9]*$', raw) -%}
        {{- exceptions.raise_compiler_error(
            "RAGMART_OPENAI_DIMENSIONS must be a positive integer (the vector size the openai"
            ~ " provider asks for, e.g. 1536), got '" ~ raw ~ "'"
        ) -}}
    {%- endif -%}
    {{- return(raw | int) -}}
{% endmacro %}
