"""Compliance purge: remove a document's text and vectors from every file of a deployment.

What belongs to the document is decided by the readers ingestion uses, never by a second
parser: a landing record is the document's when ``ragmart.ingest`` reads its ``document_id``
as the id (however the file spells it: JSON escapes, CSV quoting, a header in another case, a
byte-order mark, a JSON array, parquet), or when it is a quarantined record that has no readable
id and whose raw text names the id (``ragmart.ingest.purged.belongs``). A landing file is
rewritten only when it holds such a record, every other byte kept, so `dbt source freshness`
sees no other file change. In a database the document's rows are those keyed by its
``document_id``, quarantined raw records by the same rule, the chunk ids of its chunks (vector
index and delta tables) and the embedding-cache rows of texts no other document uses; each
database file is then copied into a fresh file, because DuckDB reuses freed blocks without
erasing them.

A purge is journaled, so it is never left half done. Before any change the id goes into the
journal (``purge_journal.json``) and into the registry of purged ids (``purged_documents.json``,
which ingestion honours: a replayed file cannot bring the document back). Then come the steps,
each idempotent and marked done in the journal when it completes:

1. ``artifacts``: lines of dbt logs and reports (``$DBT_LOG_PATH``, ``$DBT_TARGET_PATH``, eval
   reports under it) that carry the id or a sentence of the document are removed; any other
   artifact file carrying them (run_results.json, manifest.json, ...) is deleted, dbt writes it
   anew. This step comes first because the sentences to look for are read from the document's
   records, which the later steps remove.
2. ``landing``: the document's records leave every landing file ingestion reads.
3. ``snapshots``: each published snapshot holding the document is replaced by a purged copy
   under a new name, and serving.json and the history are switched to it atomically
   (``ragmart.serving.pointer.replace_snapshot``); a reader that has the old file open is never
   written under, it keeps its file until it reopens. The old file is then removed.
4. ``database``: the build database is purged in place and rewritten.
5. ``postgres`` (with RAGMART_SERVING_URL set): the document's rows leave every version and
   publication on the PostgreSQL serving target, and each table they were in is rewritten with
   VACUUM FULL (``ragmart.serving.postgres.purge``; the measurement that rules out a plain
   VACUUM is there).
6. ``unreadable``: a landing file that ingestion cannot read as records (a corrupt parquet file,
   a broken CSV header, a name it does not accept) but whose bytes name the id stops the purge
   here with an error naming it: only the operator can delete or re-land it. The purge stays
   journaled and the next run finishes it.

An interrupted purge (a locked database, a kill at any point) stays in the journal and the
next ``ragmart purge`` completes it, as does the start of the next dbt invocation
(``ragmart.build.dbt_plugin``). Temporary files of a purge carry ``.purge-`` in their names and
are removed by the next run. One purge runs at a time per deployment (``purge_journal.lock``).

Logs, reports and the unreadable files of step 5 are not records, so there the document is
recognised by bytes: its id as a whole word (``hr-relocation`` does not match inside
``hr-relocation-assistance``) or one of its distinctive sentences, each in UTF-8, UTF-16 and
JSON-escaped form (``ragmart.serving.purge.artifacts.Needles``).

The modules, one per part: ``deployment`` (the files a purge covers), ``journal`` (the journal,
the registry entry, the lock), ``artifacts``, ``landing``, ``snapshots``, ``database`` and
``postgres`` (the steps), ``plan`` (what a purge would change, and what it changed) and ``run``
(the order of the steps, and the commands' entry points ``purge_document`` and
``complete_pending``).
"""
