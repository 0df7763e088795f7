{% macro compact_vector_index(index_relation, serving_relation, max_dead_ratio=none) %}
    {{- return(adapter.dispatch('compact_vector_index', 'ragmart')(
        index_relation, serving_relation, max_dead_ratio
    )) -}}
{% endmacro %}

{% macro default__compact_vector_index(index_relation, serving_relation, max_dead_ratio) %}
    {#- Pre-hook SQL: when the share of indexed rows no longer served exceeds max_dead_ratio, drop
        the HNSW index and delete those rows (the post-hook re-creates the index). Empty SQL
        otherwise. -#}
    {%- set ratio = max_dead_ratio if max_dead_ratio is not none
        else var('vector_index_max_dead_ratio', 0.2) -%}
    {%- if not execute or not is_incremental() -%}
        {{- return('select 1 as no_compaction') -}}
    {%- endif -%}
    {%- set counts = run_query(
        "select count(*) as total_rows, count(*) filter (where not exists (select 1 from "
        ~ serving_relation ~ " as served where served.chunk_id = indexed.chunk_id)) as dead_rows "
        ~ "from " ~ index_relation ~ " as indexed"
    ) -%}
    {%- set total_rows = counts.columns[0].values()[0] -%}
    {%- set dead_rows = counts.columns[1].values()[0] -%}
    {%- if total_rows == 0 or (dead_rows / total_rows) <= ratio -%}
        {{- return('select 1 as no_compaction') -}}
    {%- endif -%}
    {{- log("ragmart: compacting " ~ index_relation ~ ": " ~ dead_rows ~ " of " ~ total_rows
        ~ " rows no longer served", info=true) -}}
    drop index if exists {{ index_relation.database }}.{{ index_relation.schema }}.{{ index_relation.identifier }}_hnsw;
    delete from {{ index_relation }} as indexed
    where not exists (
        select 1 from {{ serving_relation }} as served
        where served.chunk_id = indexed.chunk_id
    )
{% endmacro %}
