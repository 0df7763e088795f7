-- Orphans: serving rows of a document version that is no longer live (the document was deleted,
-- or a later version superseded it). One row per version, naming the document, why it is not
-- live and how many rows it still serves.

{%- set failing_sql %}
select
    document_id,
    document_version,
    version_state,
    superseded_by_version,
    served_rows
from {{ ref('int_document_versions_served') }}
where is_orphan
{% endset -%}

{%- if execute and flags.WHICH in ('build', 'test') -%}
    {{- log_failing_documents('orphaned embeddings', failing_sql) -}}
{%- endif %}

{{ failing_sql }}
