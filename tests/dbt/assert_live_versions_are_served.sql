-- Stale serving set: a live document version the serving set does not fully cover with the
-- configured chunker and embedding model. One row per version, naming the document and the
-- chunks it misses
-- (`dbt test --select assert_live_versions_are_served --store-failures` keeps them).

{%- set failing_sql %}
select
    document_id,
    document_version,
    committed_at,
    expected_chunks,
    served_chunks,
    expected_chunks - served_chunks as missing_chunks
from {{ ref('int_document_versions_served') }}
where is_stale
{% endset -%}

{%- if execute and flags.WHICH in ('build', 'test') -%}
    {{- log_failing_documents('stale embeddings', failing_sql) -}}
{%- endif %}

{{ failing_sql }}
