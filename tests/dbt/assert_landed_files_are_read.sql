-- Warns (never fails the build) while a file under the landing zone is not read: outside dms/
-- and debezium/, in a subfolder of them, with an extension its layout does not read, or not
-- readable as a whole (empty, corrupt, no header). Each is one file-level quarantine row.
{{ config(severity='warn') }}

select
    source_file,
    quarantine_code,
    quarantine_reason
from {{ ref('fct_quarantined_events') }}
where source_line is null
