"""Every record of every landed CDC file, typed; bad records carry a quarantine_reason.

Thin wrapper: parsing lives in ragmart.ingest.cdc, file listing and bookkeeping in
ragmart.ingest.landing.
Incremental (append): each file is read once per distinct content. Valid rows feed
stg_cdc__document_events, quarantined ones fct_quarantined_events; nothing is dropped, and a
file ingestion cannot read (wrong folder or extension) is one quarantined row.
"""

import datetime as dt


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="append")
    from ragmart.config import Settings
    from ragmart.ingest.landing import clock_skew_setting, ingest_files, list_landing_files
    from ragmart.ingest.purged import load_registry, registry_path

    # Read each config key in a plain assignment: dbt's parser fills dbt.config.get() only for
    # calls it finds there (inside `x or y` it found none, and the setting was silently ignored).
    max_content_bytes = dbt.config.get("max_content_bytes")
    landing_dir = dbt.config.get("landing_dir")
    max_clock_skew_minutes = dbt.config.get("max_clock_skew_minutes")
    # The sources declare what this model reads (lineage, `dbt source freshness` per layout);
    # the listing itself is ragmart.ingest.landing's: recursive, so no file is passed over in
    # silence,
    # and it fails on a landing dir that does not exist.
    dbt.source("landing", "dms_files")
    dbt.source("landing", "debezium_files")
    files = list_landing_files(landing_dir or Settings.from_env().landing_dir)

    seen_keys: set[tuple[str, int, dt.datetime]] = set()
    seen_hashes: set[tuple[str, str]] = set()
    if dbt.is_incremental:
        for path, size, modified_at, digest in session.execute(
            f"select distinct source_file, file_size, file_modified_at, file_sha256 from {dbt.this}"
        ).fetchall():
            seen_keys.add((path, size, modified_at))
            seen_hashes.add((path, digest))
    return ingest_files(
        files,
        seen_keys=seen_keys,
        seen_hashes=seen_hashes,
        max_content_bytes=int(max_content_bytes),
        max_clock_skew=clock_skew_setting(max_clock_skew_minutes),
        purged=load_registry(registry_path(Settings.from_env().db_path)),
    )
