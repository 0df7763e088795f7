{% macro vector_index_needs_compaction(index_relation, serving_relation, log_decision=false) %}
    {{- return(adapter.dispatch('vector_index_needs_compaction', 'ragmart')(
        index_relation, serving_relation, log_decision
    )) -}}
{% endmacro %}

{% macro default__vector_index_needs_compaction(index_relation, serving_relation, log_decision=false) %}
    {{- _adapter_not_supported('vector_index_needs_compaction') -}}
{% endmacro %}

{% macro duckdb__vector_index_needs_compaction(index_relation, serving_relation, log_decision=false) %}
    {#- True when this build must rebuild the HNSW index: it is empty, or the share of its rows
        no longer served exceeds var vector_index_max_dead_ratio, or the served rows it lacks
        (the delta) exceed var vector_delta_max_rows or vector_delta_max_ratio of its rows. -#}
    {%- if not execute or not is_incremental() -%}
        {{- return(false) -}}
    {%- endif -%}
    {{- return(index_needs_rebuild(
        "vector index " ~ index_relation, "select chunk_id from " ~ index_relation,
        serving_relation, {
            "max_dead_ratio": ("vector_index_max_dead_ratio", 0.2),
            "delta_max_rows": ("vector_delta_max_rows", 5000),
            "delta_max_ratio": ("vector_delta_max_ratio", 0.1),
        }, log_decision=log_decision
    )) -}}
{% endmacro %}
