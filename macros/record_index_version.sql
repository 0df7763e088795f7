{% macro record_index_version(versions_relation) %}
    {{- return(adapter.dispatch('record_index_version', 'ragmart')(versions_relation)) -}}
{% endmacro %}

{% macro default__record_index_version(versions_relation) %}
    {#- Post-hook SQL of the serving set, in its transaction: bind var index_version to the
        chunker, embedding model and dimensions this build made it with (when it is first
        built, even empty, and anew after a --full-refresh: the only build check_index_version
        lets change them), and record the build (built_at, dbt_invocation_id) and the last
        change it applied (last_change_seq, the highest change_seq of versions_relation), which
        ragmart freshness reports per version. -#}
    {%- set registry = index_versions_relation() -%}
    {%- set version = "'" ~ var('index_version') ~ "'" -%}
    {%- set chunker = "'" ~ var('chunker_version') ~ "'" -%}
    {%- set model = "'" ~ embedding_model() ~ "'" -%}
    {%- set dimensions = embedding_dimensions() -%}
    create table if not exists {{ registry }} (
        index_version varchar not null,
        chunker_version varchar not null,
        embedding_model varchar not null,
        embedding_dimensions integer not null,
        bound_at timestamp not null,
        bound_invocation_id varchar not null,
        built_at timestamp not null,
        dbt_invocation_id varchar not null,
        last_change_seq bigint
    );
    delete from {{ registry }}
    where
        index_version = {{ version }}
        and (
            chunker_version <> {{ chunker }}
            or embedding_model <> {{ model }}
            or embedding_dimensions <> {{ dimensions }}
        );
    insert into {{ registry }}
    select
        {{ version }},
        {{ chunker }},
        {{ model }},
        {{ dimensions }},
        timezone('UTC', current_timestamp),
        '{{ invocation_id }}',
        timezone('UTC', current_timestamp),
        '{{ invocation_id }}',
        null
    where not exists (select 1 from {{ registry }} where index_version = {{ version }});
    update {{ registry }} set
        built_at = timezone('UTC', current_timestamp),
        dbt_invocation_id = '{{ invocation_id }}',
        last_change_seq = (select max(document_version) from {{ versions_relation }})
    where index_version = {{ version }}
{% endmacro %}
