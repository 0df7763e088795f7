-- Embedding lag over the SLA (var embedding_lag_sla_minutes): a live document version whose
-- vectors were ready later than the SLA after its change was committed (commit_ts), or that is
-- still not fully served that long after. One row per version, naming the document. The lag
-- the SLA judges is ragmart_embedding_sla_lag_seconds (ragmart.quality.embedding_lag,
-- registered by the dbt-duckdb plugin), the function `ragmart freshness` calls too.
-- Severity is var embedding_lag_sla_severity: the sample corpus replays changes committed in
-- the past, so its lag is the sample's age (warn); set it to error in production.
{{ config(severity=var('embedding_lag_sla_severity', 'warn')) }}

{%- set failing_sql %}
with

versions as (

    select * from {{ ref('int_document_versions_served') }}

),

judged as (

    select
        document_id,
        document_version,
        committed_at,
        embedded_at,
        -- null for a version the SLA does not judge (not live, or nothing to embed)
        ragmart_embedding_sla_lag_seconds(
            is_live,
            expected_chunks,
            lag_seconds,
            committed_at,
            timezone('UTC', current_timestamp)
        ) as lag_seconds,
        -- double: an SLA of years in minutes overflows an integer product
        cast({{ var('embedding_lag_sla_minutes') }} as double) * 60 as sla_seconds,
        is_stale
    from versions

),

final as (

    select * from judged
    where lag_seconds > sla_seconds

)

select * from final
{% endset -%}

{%- if execute and flags.WHICH in ('build', 'test') -%}
    {{- log_failing_documents('embedding lag over the SLA', failing_sql) -}}
{%- endif %}

{{ failing_sql }}
