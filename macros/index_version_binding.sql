{% macro index_version_binding(index_version) %}
    {{- return(adapter.dispatch('index_version_binding', 'ragmart')(index_version)) -}}
{% endmacro %}

{% macro default__index_version_binding(index_version) %}
    {{- _adapter_not_supported('index_version_binding') -}}
{% endmacro %}

{% macro duckdb__index_version_binding(index_version) %}
    {#- What `index_version` is bound to, as a dict (chunker_version, embedding_model,
        embedding_dimensions, and evidence: where that is known from), or none for a version
        never built. Its row in index_versions; for a version built before that table existed,
        what its serving rows were made with (several chunkers or models there: a mix, bound
        to none of them, so any build of it is refused but --full-refresh). Runs queries: call
        it only when executing. -#}
    {%- set registry = index_versions_relation() -%}
    {%- if adapter.get_relation(registry.database, registry.schema, registry.identifier) -%}
        {%- set rows = run_query(
            "select chunker_version, embedding_model, embedding_dimensions, "
            ~ "strftime(bound_at, '%Y-%m-%d %H:%M:%S') as bound_at from " ~ registry
            ~ " where index_version = '" ~ (index_version | replace("'", "''")) ~ "'"
        ) -%}
        {%- if rows | length > 0 -%}
            {{- return({
                'chunker_version': rows[0][0],
                'embedding_model': rows[0][1],
                'embedding_dimensions': rows[0][2] | int,
                'evidence': 'recorded ' ~ rows[0][3] ~ ' UTC',
            }) -}}
        {%- endif -%}
    {%- endif -%}
    {%- set serving = adapter.get_relation(
        target.database, target.schema, 'fct_chunk_embeddings_' ~ index_version
    ) -%}
    {%- if not serving -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set rows = run_query(
        "select string_agg(distinct chunker_version, ', ' order by chunker_version), "
        ~ "string_agg(distinct embedding_model, ', ' order by embedding_model), "
        ~ "max(len(embedding)), count(*) from " ~ serving
    ) -%}
    {%- if rows[0][3] == 0 -%}
        {{- return(none) -}}
    {%- endif -%}
    {{- return({
        'chunker_version': rows[0][0],
        'embedding_model': rows[0][1],
        'embedding_dimensions': rows[0][2] | int,
        'evidence': 'read from its serving rows: built before index_versions existed',
    }) -}}
{% endmacro %}
