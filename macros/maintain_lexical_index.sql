{% macro maintain_lexical_index(serving_relation) %}
    {{- return(adapter.dispatch('maintain_lexical_index', 'ragmart')(serving_relation)) -}}
{% endmacro %}

{% macro default__maintain_lexical_index(serving_relation) %}
    {{- _adapter_not_supported('maintain_lexical_index') -}}
{% endmacro %}

{% macro duckdb__maintain_lexical_index(serving_relation) %}
    {#- Post-hook SQL of fct_chunk_vector_delta (every build, after the serving set): rebuild
        the full-text index of the serving set (fts, schema fts_main_<serving table>) when it is
        missing, or when the served chunks it lacks (the lexical delta, which search scores by
        tokenizing their text) exceed var lexical_delta_max_rows or lexical_delta_max_ratio of
        its rows, or its rows no longer served exceed lexical_index_max_dead_ratio. fts 1.5
        cannot update an index: a rebuild re-reads the whole serving set, so ordinary builds
        keep it (ragmart.serving.lexical_index). The PRAGMA is the one Python writes
        (registered as ragmart_fts_index_sql by the dbt-duckdb plugin). -#}
    {%- if not execute -%}
        {{- return('select 1 as lexical_index_kept') -}}
    {%- endif -%}
    {%- set database = serving_relation.database -%}
    {%- set fts = database ~ '.fts_main_' ~ serving_relation.identifier -%}
    {%- set found = run_query(
        "select count(*) from duckdb_tables() where database_name = '" ~ database
        ~ "' and schema_name = 'fts_main_" ~ serving_relation.identifier
        ~ "' and table_name = 'docs'"
    ) -%}
    {%- set rebuild = found.columns[0].values()[0] == 0 -%}
    {%- if not rebuild -%}
        {%- set rebuild = index_needs_rebuild(
            "full-text index of " ~ serving_relation,
            "select name as chunk_id from " ~ fts ~ ".docs", serving_relation, {
                "max_dead_ratio": ("lexical_index_max_dead_ratio", 0.2),
                "delta_max_rows": ("lexical_delta_max_rows", 2000),
                "delta_max_ratio": ("lexical_delta_max_ratio", 0.1),
            }
        ) -%}
    {%- endif -%}
    {%- if not rebuild -%}
        {{- return('select 1 as lexical_index_kept') -}}
    {%- endif -%}
    {%- set statement = run_query(
        "select ragmart_fts_index_sql('" ~ database ~ ".main." ~ serving_relation.identifier
        ~ "')"
    ) -%}
    {{ statement.columns[0].values()[0] }};
    checkpoint {{ database }}
{% endmacro %}
