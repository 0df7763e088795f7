{% macro create_vector_index(index_relation) %}
    {{- return(adapter.dispatch('create_vector_index', 'ragmart')(index_relation)) -}}
{% endmacro %}

{% macro default__create_vector_index(index_relation) %}
    {{- _adapter_not_supported('create_vector_index') -}}
{% endmacro %}

{% macro duckdb__create_vector_index(index_relation) %}
    {#- Post-hook SQL of the vector index, run outside the model's transaction: when the HNSW
        index is missing (a first build, a compaction dropped it, or a build was killed before
        re-creating it), create it and checkpoint the attached database, so the index leaves
        the WAL at once (vss has no WAL recovery of its own). A no-op statement otherwise:
        ordinary builds leave the index, and the checkpoint, alone. A bare CHECKPOINT would hit
        dbt-duckdb's in-memory default database. The CREATE INDEX statement is the one Python
        writes too (ragmart.serving.vector_index, registered as ragmart_hnsw_index_sql by the
        dbt-duckdb plugin): purge re-creates the same index. -#}
    {%- if not execute -%}
        {{- return('select 1 as index_kept') -}}
    {%- endif -%}
    {%- set name = index_relation.identifier ~ '_hnsw' -%}
    {%- set found = run_query(
        "select count(*) from duckdb_indexes() where database_name = '"
        ~ index_relation.database ~ "' and schema_name = '" ~ index_relation.schema
        ~ "' and index_name = '" ~ name ~ "'"
    ) -%}
    {%- if found.columns[0].values()[0] > 0 -%}
        {{- return('select 1 as index_kept') -}}
    {%- endif -%}
    {%- set statement = run_query(
        "select ragmart_hnsw_index_sql('" ~ name ~ "', '"
        ~ (index_relation | string | replace("'", "''")) ~ "')"
    ) -%}
    {{ statement.columns[0].values()[0] }};
    checkpoint {{ index_relation.database }}
{% endmacro %}
