{% macro prune_serving_set(serving_relation, versions_relation) %}
    {{- return(adapter.dispatch('prune_serving_set', 'ragmart')(serving_relation, versions_relation)) -}}
{% endmacro %}

{% macro default__prune_serving_set(serving_relation, versions_relation) %}
    {#- Delete served rows whose document version is no longer live (edited or deleted), or that
        were made with another chunker or embedding model than the one configured. -#}
    delete from {{ serving_relation }} as served
    where
        served.chunker_version <> '{{ var("chunker_version") }}'
        or served.embedding_model <> '{{ embedding_model() }}'
        or not exists (
            select 1 from {{ versions_relation }} as versions
            where
                versions.is_current
                and versions.document_id = served.document_id
                and versions.document_version = served.document_version
        )
{% endmacro %}
