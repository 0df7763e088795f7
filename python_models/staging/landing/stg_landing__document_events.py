"""Every record of every landed CDC file, typed; bad records carry a quarantine_reason.

Thin wrapper: parsing lives in ragmart.ingest.cdc, file listing and bookkeeping in
ragmart.ingest.landing (a local folder or s3://bucket/prefix, through ragmart.ingest.store).
Incremental (append): each file is read once per distinct content. Valid rows feed
stg_cdc__document_events, quarantined ones fct_quarantined_events; nothing is dropped, and a
file ingestion cannot read (wrong folder or extension) is one quarantined row.
"""

import datetime as dt


def model(dbt, session):
    # append_new_columns: a database built before file_etag existed gains the column
    dbt.config(materialized="incremental", incremental_strategy="append",
               on_schema_change="append_new_columns")
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
    # silence, and it fails on a landing zone that does not exist, naming it (listed first:
    # on S3 the sources' read_blob would fail first, with a bare HTTP 404).
    files = list_landing_files(landing_dir or Settings.from_env().landing_dir)
    dbt.source("landing", "dms_files")
    dbt.source("landing", "debezium_files")

    seen_keys: set[tuple[str, int, dt.datetime]] = set()
    seen_hashes: set[tuple[str, str]] = set()
    seen_etags: set[tuple[str, int, str]] = set()
    if dbt.is_incremental:
        columns = {c[0] for c in session.execute(f"select * from {dbt.this} limit 0").description}
        etag_column = "file_etag" if "file_etag" in columns else "null"  # built before it
        for path, size, modified_at, digest, etag in session.execute(
            "select distinct source_file, file_size, file_modified_at, file_sha256, "
            f"{etag_column} "
            f"from {dbt.this}"
        ).fetchall():
            seen_keys.add((path, size, modified_at))
            seen_hashes.add((path, digest))
            if etag is not None:
                seen_etags.add((path, size, etag))
    return ingest_files(
        files,
        seen_keys=seen_keys,
        seen_hashes=seen_hashes,
        seen_etags=seen_etags,
        max_content_bytes=int(max_content_bytes),
        max_clock_skew=clock_skew_setting(max_clock_skew_minutes),
        purged=load_registry(registry_path(Settings.from_env().db_path)),
    )
