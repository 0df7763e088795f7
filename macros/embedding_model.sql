{% macro embedding_model() %}
    {{- return(adapter.dispatch('embedding_model', 'ragmart')()) -}}
{% endmacro %}

{% macro default__embedding_model() %}
    {#- The model name recorded on vectors: explicit var/env (the cache model then fails unless
        the provider embeds with it), else the provider's model (provider_embedding_model). -#}
    {%- set explicit = var('embedding_model', env_var('RAGMART_EMBEDDING_MODEL', '')) -%}
    {%- if explicit -%}
        {{- return(explicit) -}}
    {%- endif -%}
    {{- return(provider_embedding_model().model) -}}
{% endmacro %}
