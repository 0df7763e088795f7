{% macro compact_vector_index(index_relation, serving_relation) %}
    {{- return(adapter.dispatch('compact_vector_index', 'ragmart')(
        index_relation, serving_relation
    )) -}}
{% endmacro %}

{% macro default__compact_vector_index(index_relation, serving_relation) %}
    {{- _adapter_not_supported('compact_vector_index') -}}
{% endmacro %}

{% macro duckdb__compact_vector_index(index_relation, serving_relation) %}
    {#- Pre-hook SQL of the vector index: when this build compacts, drop the HNSW index and
        delete the rows no longer served (the model then inserts the delta and the post-hook
        re-creates the index). A no-op statement otherwise. -#}
    {%- if not vector_index_needs_compaction(index_relation, serving_relation, log_decision=true) -%}
        {{- return('select 1 as no_compaction') -}}
    {%- endif -%}
    {{- log("ragmart: compacting " ~ index_relation, info=true) -}}
    drop index if exists
        {{ index_relation.database }}.{{ index_relation.schema }}.{{ index_relation.identifier }}_hnsw;
    delete from {{ index_relation }} as indexed
    where not exists (
        select 1 from {{ serving_relation }} as served
        where served.chunk_id = indexed.chunk_id
    )
{% endmacro %}
