{% macro embedding_dimensions() %}
    {{- return(adapter.dispatch('embedding_dimensions', 'ragmart')()) -}}
{% endmacro %}

{% macro default__embedding_dimensions() %}
    {#- The vector size of the configured provider's model, as the provider declares it
        (provider_embedding_model). An index version is typed with it: the casts of the
        serving set, history and evaluation, the HNSW index and delta that copy the serving
        set's column, and the version's binding in index_versions. The marts' contracts cannot
        call a macro (dbt renders yml while parsing, without macros or a database): their
        data_type renders the size from the settings, and check_index_version refuses, before
        any node runs, a build where that differs from this. -#}
    {{- return(provider_embedding_model().dimensions) -}}
{% endmacro %}
