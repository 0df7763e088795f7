{% macro index_needs_rebuild(label, indexed_ids, serving_relation, thresholds, log_decision=true) %}
    {#- Whether an index over the serving set must be rebuilt this build (the HNSW index:
        vector_index_needs_compaction; the full-text index: maintain_lexical_index). It is
        when it holds no row while chunks are served, or when the share of its rows no longer
        served exceeds thresholds.max_dead_ratio, or the served chunks it lacks (the delta)
        exceed thresholds.delta_max_rows or thresholds.delta_max_ratio of its rows.
        `indexed_ids`: SQL selecting the indexed chunk ids as chunk_id. One anti-join on
        chunk_id (narrow) counts the delta; the dead rows follow from the counts, which
        DuckDB answers from metadata: served = (served and indexed) + delta, so
        dead = indexed - (served - delta). `thresholds`: {name: (var, default)}. -#}
    {%- set counts = run_query(
        "select (select count(*) from (" ~ indexed_ids ~ ") as indexed) as indexed_rows, "
        ~ "(select count(*) from " ~ serving_relation ~ ") as served_rows, "
        ~ "(select count(*) from (select chunk_id from " ~ serving_relation ~ ") as served "
        ~ "anti join (" ~ indexed_ids ~ ") as indexed "
        ~ "on indexed.chunk_id = served.chunk_id) as delta_rows"
    ) -%}
    {%- set indexed_rows = counts.columns[0].values()[0] -%}
    {%- set served_rows = counts.columns[1].values()[0] -%}
    {%- set delta_rows = counts.columns[2].values()[0] -%}
    {%- set dead_rows = indexed_rows - (served_rows - delta_rows) -%}
    {%- if indexed_rows == 0 -%}
        {{- return(delta_rows > 0) -}}
    {%- endif -%}
    {%- set limit = {} -%}
    {%- for name, setting in thresholds.items() -%}
        {%- do limit.update({name: var(setting[0], setting[1])}) -%}
    {%- endfor -%}
    {%- set rebuild = (
        dead_rows / indexed_rows > limit.max_dead_ratio
        or delta_rows > limit.delta_max_rows
        or delta_rows / indexed_rows > limit.delta_max_ratio
    ) -%}
    {{- log(
        "ragmart: " ~ label ~ ": " ~ indexed_rows ~ " rows, "
        ~ dead_rows ~ " no longer served, " ~ delta_rows ~ " in the delta; rebuilt when "
        ~ thresholds.max_dead_ratio[0] ~ " " ~ limit.max_dead_ratio
        ~ ", " ~ thresholds.delta_max_rows[0] ~ " " ~ limit.delta_max_rows
        ~ " or " ~ thresholds.delta_max_ratio[0] ~ " " ~ limit.delta_max_ratio
        ~ " is exceeded: " ~ ('yes' if rebuild else 'no'), info=log_decision
    ) -}}
    {{- return(rebuild) -}}
{% endmacro %}
