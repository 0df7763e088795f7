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
    {#- One anti-join on chunk_id (narrow): the delta. The dead rows follow from the counts,
        which DuckDB answers from metadata: served = (served and indexed) + delta, so
        dead = indexed - (served - delta). -#}
    {%- set counts = run_query(
        "select (select count(*) from " ~ index_relation ~ ") as indexed_rows, "
        ~ "(select count(*) from " ~ serving_relation ~ ") as served_rows, "
        ~ "(select count(*) from (select chunk_id from " ~ serving_relation ~ ") as served "
        ~ "anti join (select chunk_id from " ~ index_relation ~ ") as indexed "
        ~ "on indexed.chunk_id = served.chunk_id) as delta_rows"
    ) -%}
    {%- set indexed_rows = counts.columns[0].values()[0] -%}
    {%- set served_rows = counts.columns[1].values()[0] -%}
    {%- set delta_rows = counts.columns[2].values()[0] -%}
    {%- set dead_rows = indexed_rows - (served_rows - delta_rows) -%}
    {%- if indexed_rows == 0 -%}
        {{- return(delta_rows > 0) -}}
    {%- endif -%}
    {%- set compacting = (
        dead_rows / indexed_rows > var('vector_index_max_dead_ratio', 0.2)
        or delta_rows > var('vector_delta_max_rows', 5000)
        or delta_rows / indexed_rows > var('vector_delta_max_ratio', 0.1)
    ) -%}
    {{- log(
        "ragmart: vector index " ~ index_relation ~ ": " ~ indexed_rows ~ " rows, "
        ~ dead_rows ~ " no longer served, " ~ delta_rows ~ " in the delta; compacts when "
        ~ "vector_index_max_dead_ratio " ~ var('vector_index_max_dead_ratio', 0.2)
        ~ ", vector_delta_max_rows " ~ var('vector_delta_max_rows', 5000)
        ~ " or vector_delta_max_ratio " ~ var('vector_delta_max_ratio', 0.1)
        ~ " is exceeded: " ~ ('yes' if compacting else 'no'), info=log_decision
    ) -}}
    {{- return(compacting) -}}
{% endmacro %}
