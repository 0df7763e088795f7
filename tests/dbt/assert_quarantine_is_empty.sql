-- Warns (never fails the build) while landed records sit in quarantine: someone must look.
{{ config(severity='warn') }}

select
    source_file,
    source_line,
    quarantine_reason
from {{ ref('fct_quarantined_events') }}
