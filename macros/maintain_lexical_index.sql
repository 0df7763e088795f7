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
        {%- set counts = run_query(
            "select (select count(*) from " ~ fts ~ ".docs) as indexed_rows, "
            ~ "(select count(*) from " ~ serving_relation ~ ") as served_rows, "
            ~ "(select count(*) from (select chunk_id from " ~ serving_relation ~ ") as served "
            ~ "anti join (select name from " ~ fts ~ ".docs) as indexed "
            ~ "on indexed.name = served.chunk_id) as delta_rows"
        ) -%}
        {%- set indexed_rows = counts.columns[0].values()[0] -%}
        {%- set served_rows = counts.columns[1].values()[0] -%}
        {%- set delta_rows = counts.columns[2].values()[0] -%}
        {%- set dead_rows = indexed_rows - (served_rows - delta_rows) -%}
        {%- if indexed_rows == 0 -%}
            {%- set rebuild = delta_rows > 0 -%}
        {%- else -%}
            {%- set rebuild = (
                dead_rows / indexed_rows > var('lexical_index_max_dead_ratio', 0.2)
                or delta_rows > var('lexical_delta_max_rows', 2000)
                or delta_rows / indexed_rows > var('lexical_delta_max_ratio', 0.1)
            ) -%}
        {%- endif -%}
        {{- log(
            "ragmart: full-text index of " ~ serving_relation ~ ": " ~ indexed_rows
            ~ " rows, " ~ dead_rows ~ " no longer served, " ~ delta_rows ~ " in the delta; "
            ~ "rebuilt: " ~ ('yes' if rebuild else 'no'), info=true
        ) -}}
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
