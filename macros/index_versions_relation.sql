{% macro index_versions_relation() %}
    {{- return(adapter.dispatch('index_versions_relation', 'ragmart')()) -}}
{% endmacro %}

{% macro default__index_versions_relation() %}
    {#- The table binding each index version to the chunker, embedding model and dimensions it
        was built with: one row per version, written by record_index_version when the
        version's serving set is built, read by check_index_version before a build touches
        anything (ragmart.quality.freshness reads it too, as INDEX_VERSIONS_TABLE). -#}
    {{- return(api.Relation.create(
        database=target.database, schema=target.schema, identifier='index_versions'
    )) -}}
{% endmacro %}
