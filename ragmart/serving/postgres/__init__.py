"""Serving from PostgreSQL + pgvector (issue 15), on when RAGMART_SERVING_URL is set.

DuckDB stays the build engine and the evaluation gate's: `ragmart publish` still takes the DuckDB
snapshot and gates it, then copies the version into the `ragmart` schema of the server
(``publish``: the first time in full, after that only the rows that changed, each row carrying
the publication that added it and the one that removed it) and switches the one-row pointer
``ragmart.serving`` in the same transaction. ``rollback`` moves the pointer back without writing
data, ``versions`` reads the publications, ``purge`` removes a document from every version and
vacuums what it touched. ``settings`` reads the URL (and masks its password in every message),
``schema`` holds the idempotent DDL. Nothing here is imported when the URL is unset.
"""
