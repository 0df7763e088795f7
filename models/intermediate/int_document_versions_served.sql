-- Serving freshness of one index version (relation int_document_versions_served_<index_version>):
-- one row per document version that is live or has rows in the version's serving set: how many
-- chunks it should serve (int_chunks, the version's chunker) and serves (the version's chunker
-- and embedding model), when its last vector was ready and the lag since its change was
-- committed. Per version, like the serving set it describes: building v2 rewrites v2's facts
-- and leaves v1's as v1's last build left them (its serving set has not changed either).
-- Rebuilt by every build of the version after its serving set; the dbt tests
-- (tests/dbt/assert_*) and `ragmart freshness` both read it. A table, not a view: generic
-- maintenance (ragmart purge rewrites every table holding a document_id) must be able to
-- delete from it.
{{ config(alias='int_document_versions_served_' ~ var('index_version')) }}

with

versions as (

    select * from {{ ref('int_document_versions') }}

),

expected as (

    select
        document_id,
        document_version,
        count(*) as expected_chunks
    from {{ ref('int_chunks') }}
    where chunker_version = '{{ var("chunker_version") }}'
    group by document_id, document_version

),

served as (

    select
        document_id,
        document_version,
        count(*) filter (
            where
            chunker_version = '{{ var("chunker_version") }}'
            and embedding_model = '{{ embedding_model() }}'
        ) as served_chunks,
        count(*) as served_rows,
        -- a vector is ready for a version once the version was chunked and the text embedded;
        -- a cached vector can predate the change, so the later of the two counts
        max(greatest(created_at, chunk_created_at)) as embedded_at
    from {{ ref('fct_chunk_embeddings') }}
    group by document_id, document_version

),

latest_events as (

    select
        document_id,
        is_deleted as is_document_deleted
    from versions
    where is_latest

),

keys as (

    select
        document_id,
        document_version
    from versions
    where is_current
    union
    select
        document_id,
        document_version
    from served

),

final as (

    select
        keys.document_id,
        keys.document_version,
        coalesce(versions.is_current, false) as is_live,
        case
            when versions.document_id is null then 'unknown'
            when versions.is_current then 'live'
            when latest_events.is_document_deleted then 'deleted'
            else 'superseded'
        end as version_state,
        versions.superseded_by_version,
        versions.valid_from as committed_at,
        coalesce(expected.expected_chunks, 0) as expected_chunks,
        coalesce(served.served_chunks, 0) as served_chunks,
        coalesce(served.served_rows, 0) as served_rows,
        served.embedded_at,
        case
            when coalesce(served.served_chunks, 0) >= coalesce(expected.expected_chunks, 0)
                then date_diff('second', versions.valid_from, served.embedded_at)
        end as lag_seconds,
        (
            coalesce(versions.is_current, false)
            and coalesce(served.served_chunks, 0) < coalesce(expected.expected_chunks, 0)
        ) as is_stale,
        (
            not coalesce(versions.is_current, false)
            and coalesce(served.served_rows, 0) > 0
        ) as is_orphan
    from keys
    left join versions
        on
            keys.document_id = versions.document_id
            and keys.document_version = versions.document_version
    left join latest_events
        on keys.document_id = latest_events.document_id
    left join expected
        on
            keys.document_id = expected.document_id
            and keys.document_version = expected.document_version
    left join served
        on
            keys.document_id = served.document_id
            and keys.document_version = served.document_version

)

select * from final
