"""Fault injection for crash tests: SIGKILL the running process at a named point.

Pipeline code calls :func:`fault_point` where a crash is interesting (a landing file parsed, an
embedding batch sent, the embedding run recorded). It does nothing unless the environment asks
for a crash there:

* ``RAGMART_KILL_AT=<name>`` kills the process at the first hit of point ``<name>``;
* ``RAGMART_KILL_AT=<name>:<n>`` at its n-th hit (counted per process, from 1).

The kill is a real ``SIGKILL`` of the process itself (for dbt, the whole ``dbt build``): no
exception handler, ``finally`` block, ``atexit`` hook or DuckDB checkpoint runs, exactly as with
``kill -9`` or the OOM killer. When ``RAGMART_FAULT_LOG`` names a file, a line
``<name> <hit>`` is appended (and fsynced) to it just before the kill, so a test can tell where
the process died.

Points in the pipeline (see the ``fault_point(...)`` calls):

============================ ===============================================================
``ingest_file``              after each landing file is parsed (ragmart.ingest.landing)
``ingest_done``              after all new landing files are parsed, before the rows are
                             returned
``embedding_batch``          after each provider call of ragmart.embedding.pipeline.embed_texts
``embeddings_recorded``      int_chunk_embeddings: the run is recorded, the vectors not yet
                             written
``purge_journaled``          ragmart.serving.purge: the id is in the journal and registry,
                             nothing changed
``purge_step_<step>``        after a purge step is marked done (artifacts, landing, snapshots,
                             database, postgres)
``purge_landing_file``       after each landing file a purge rewrites
``purge_snapshot_copied``    a purged snapshot copy is written, serving not yet switched to it
``purge_snapshot_switched``  serving switched to the purged copy, the old file not yet removed
``purge_database_deleted``   the build database's rows are deleted, the file not yet rewritten
``purge_postgres_deleted``   the serving PostgreSQL's rows are deleted, not yet vacuumed
============================ ===============================================================
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "RAGMART_KILL_AT"
LOG_ENV = "RAGMART_FAULT_LOG"

_hits: Counter[str] = Counter()


class FaultSpecError(ValueError):
    """A RAGMART_KILL_AT value that names no point or no positive hit number."""


def parse_spec(spec: str) -> tuple[str, int]:
    """``"name"`` -> ("name", 1); ``"name:3"`` -> ("name", 3)."""
    name, sep, nth = spec.strip().partition(":")
    if not name:
        raise FaultSpecError(f"{KILL_ENV}={spec!r}: expected <point> or <point>:<n>")
    if not sep:
        return name, 1
    try:
        hit = int(nth)
    except ValueError:
        hit = 0
    if hit < 1:
        raise FaultSpecError(f"{KILL_ENV}={spec!r}: <n> must be a positive integer")
    return name, hit


def fault_point(name: str) -> None:
    """SIGKILL this process if ``RAGMART_KILL_AT`` selects this hit of point ``name``."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    target, nth = parse_spec(spec)
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] != nth:
        return
    log = os.environ.get(LOG_ENV)
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{name} {nth}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
