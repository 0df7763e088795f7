{% macro embedding_model() %}
    {{- return(adapter.dispatch('embedding_model', 'ragmart')()) -}}
{% endmacro %}

{% macro default__embedding_model() %}
    {#- The model name recorded on vectors: explicit var/env, else the provider's model. -#}
    {%- set explicit = var('embedding_model', env_var('RAGMART_EMBEDDING_MODEL', '')) -%}
    {%- if explicit -%}
        {{- return(explicit) -}}
    {%- endif -%}
    {%- set provider = var('embedding_provider', env_var('RAGMART_EMBEDDING_PROVIDER', 'local')) -%}
    {#- openai: <model>@<dimensions>, from the env vars ragmart.embedding.providers.openai reads -#}
    {%- set openai_model = (env_var('RAGMART_OPENAI_MODEL', '') | trim) or 'text-embedding-3-small' -%}
    {%- set openai_dimensions = (env_var('RAGMART_OPENAI_DIMENSIONS', '') | trim) or '384' -%}
    {%- set models = {
        'local': 'all-MiniLM-L6-v2-onnx-int8',
        'hash': 'hash-384-v1',
        'openai': openai_model ~ '@' ~ openai_dimensions,
    } -%}
    {%- if provider not in models -%}
        {{- exceptions.raise_compiler_error(
            "embedding_model(): unknown embedding provider '" ~ provider ~ "'. Set "
            ~ "RAGMART_EMBEDDING_PROVIDER to one of " ~ (models.keys() | list | sort | join(', '))
            ~ ", or set the var embedding_model to the model name the vectors carry."
        ) -}}
    {%- endif -%}
    {{- return(models[provider]) -}}
{% endmacro %}
