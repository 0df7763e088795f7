"""The landing zone: every file listed, and the files not seen yet ingested into event rows
(used by the dbt Python model stg_landing__document_events).

The landing zone is a local folder or an S3 bucket/prefix (``s3://bucket/prefix``), listed and
read through :mod:`ragmart.ingest.store`. A file is ingested once per distinct content: files
already seen with the same relative path, size and modification time (or, on S3, the same
relative path, size and ETag) are skipped without being read, so a build's reads grow with what
landed, not with the zone's history; an object overwritten in place is read again, like a local
file rewritten; and a re-landed file whose bytes
are unchanged (same sha256) adds nothing. Reading a file is :mod:`ragmart.ingest.cdc`'s (the
compliance purge reads with it too); records of purged documents are dropped as
:mod:`ragmart.ingest.purged` decides.

Nothing under the landing dir is ignored without a word. :func:`list_landing_files` lists every
file, in subfolders too; a file outside the layouts' folders, or with an extension its layout
does not read, becomes one ``unsupported_file`` quarantine row (``ragmart.ingest.cdc`` decides
which paths are readable). Only hidden names (a ``.`` first, on the file or a folder above it)
are skipped: producers write a hidden temporary file and rename it when complete. A landing dir
(or bucket/prefix) that does not exist or cannot be read, or that holds files but no layout
folder, is a misconfiguration, not an empty zone: it raises :class:`LandingZoneError` naming the
absolute path or URL, so the build fails instead of writing an empty database that passes every
test. An existing empty landing dir (on S3: a prefix with only its folder marker) is valid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ragmart.build.faults import fault_point
from ragmart.ingest.cdc import LAYOUT_EXTENSIONS, parse_landing_file
from ragmart.ingest.purged import is_purged
from ragmart.ingest.records import DEFAULT_MAX_CLOCK_SKEW, rows_to_arrow
from ragmart.ingest.store import (
    LandingStore,
    LandingZoneError,
    LocalStore,
    ObjectChangedError,
    StoreEntry,
    naive_utc,
    open_store,
)
from ragmart.lineage import current_invocation_id, utc_now

LAYOUTS = tuple(LAYOUT_EXTENSIONS)


@dataclass(frozen=True)
class LandedFile:
    path: str  # the file's full name: an absolute path, or an s3:// URL
    # ``dms/0001_x.csv``: under the landing dir, '/'-separated; the same whatever the landing
    # dir is called or where it lives
    relative_path: str
    size: int
    modified_at: dt.datetime  # naive UTC
    etag: str | None = None  # S3: the listed object's ETag (ragmart.ingest.store)
    store: LandingStore | None = field(default=None, compare=False, repr=False)

    @property
    def is_hidden(self) -> bool:
        return any(part.startswith(".") for part in self.relative_path.split("/"))

    def read(self) -> bytes:
        """The bytes of exactly the listed version (see ragmart.ingest.store)."""
        if self.store is None:
            return Path(self.path).read_bytes()
        return self.store.read(StoreEntry(
            self.relative_path, self.size, self.modified_at, etag=self.etag))


def list_landing_files(landing_dir: str | Path | LandingStore) -> list[LandedFile]:
    """Every file under ``landing_dir`` (a folder or ``s3://bucket/prefix``), sorted by
    relative path; hidden files are included (flagged ``is_hidden``), files in hidden folders
    are not.

    Raises :class:`LandingZoneError` when the landing zone does not exist or cannot be listed,
    or holds visible entries but neither a ``dms/`` nor a ``debezium/`` folder."""
    store = landing_dir if isinstance(landing_dir, LandingStore) else open_store(landing_dir)
    entries = store.list()
    visible = sorted(store.top_level(entries))
    if visible and not any(f"{layout}/" in visible for layout in LAYOUTS):
        found = ", ".join(name.rstrip("/") for name in visible[:5]) + (
            ", ..." if len(visible) > 5 else "")
        where = store.describe() if isinstance(store, LocalStore) else f"landing zone {store.url}"
        raise LandingZoneError(
            f"{where} holds no dms/ or debezium/ folder (found: {found}); set "
            "RAGMART_LANDING_DIR (or --vars '{landing_dir: ...}') to the folder that holds "
            "dms/ and debezium/")
    return [
        LandedFile(path=store.location(e.key), relative_path=e.key, size=e.size,
                   modified_at=e.last_modified, etag=e.etag, store=store)
        for e in entries
        if not any(part.startswith(".") for part in e.key.split("/")[:-1])
    ]


def clock_skew_setting(value: object) -> dt.timedelta:
    """``max_clock_skew_minutes`` (dbt var or RAGMART_MAX_CLOCK_SKEW_MINUTES) as a duration;
    empty means the default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_MAX_CLOCK_SKEW
    try:
        minutes = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        minutes = float("nan")
    if not 0 <= minutes <= 525_600 * 100:
        raise ValueError(
            f"max_clock_skew_minutes={value!r} is not a number of minutes between 0 and "
            "52560000; set RAGMART_MAX_CLOCK_SKEW_MINUTES or --vars '{max_clock_skew_minutes: 15}'"
        )
    return dt.timedelta(minutes=minutes)


def ingest_files(
    files: Iterable[LandedFile],
    *,
    seen_keys: set[tuple[str, int, dt.datetime]],
    seen_hashes: set[tuple[str, str]],
    seen_etags: set[tuple[str, int, str]] | None = None,
    max_content_bytes: int,
    purged: dict[str, int] | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
    now: dt.datetime | None = None,
) -> pa.Table:
    """Parse the files not ingested yet; returns cdc rows plus file and lineage columns.

    A file is skipped unread when its (relative path, size, modification time) is in
    `seen_keys`, or, for an S3 object, its (relative path, size, ETag) in `seen_etags`; read,
    when its (relative path, sha256) is in `seen_hashes`. An object overwritten between the
    listing and the read is left for the next build (it is not recorded as read). A read that
    fails raises: the model writes nothing, so no partly read batch counts as read.

    `purged` (document_id -> highest purged change_seq, see ragmart.ingest.purged) drops events a
    compliance purge removed, so a replayed old file cannot resurrect them. Timestamps are
    judged against `now` (default: the ingestion time) plus `max_clock_skew`."""
    purged = purged or {}
    tables: list[pa.Table] = []
    invocation_id = current_invocation_id()
    ingested_at = now or utc_now()
    for landed in sorted(files, key=lambda f: f.relative_path):
        if landed.is_hidden:
            continue
        modified_at = naive_utc(landed.modified_at)
        if (landed.relative_path, landed.size, modified_at) in seen_keys:
            continue
        if landed.etag and (landed.relative_path, landed.size, landed.etag) in (
                seen_etags or ()):
            continue
        try:
            data = landed.read()
        except ObjectChangedError:
            continue  # overwritten or removed since the listing: the next build lists it anew
        digest = hashlib.sha256(data).hexdigest()
        if (landed.relative_path, digest) in seen_hashes:
            continue
        rows = parse_landing_file(
            landed.relative_path,
            data,
            max_content_bytes=max_content_bytes,
            now=ingested_at,
            max_clock_skew=max_clock_skew,
        )
        if purged:
            rows = [r for r in rows if not is_purged(r, purged)]
        tables.append(_with_file_columns(
            rows_to_arrow(rows), landed.size, modified_at, ingested_at, invocation_id,
            landed.etag))
        fault_point("ingest_file")
    fault_point("ingest_done")
    if not tables:
        return _with_file_columns(rows_to_arrow([]), 0, None, ingested_at, invocation_id)
    return pa.concat_tables(tables)


def _with_file_columns(
    table: pa.Table,
    size: int,
    modified_at: dt.datetime | None,
    ingested_at: dt.datetime,
    invocation_id: str,
    etag: str | None = None,
) -> pa.Table:
    """The file's rows with the file's bookkeeping and lineage columns."""
    n = table.num_rows
    return (
        table.append_column("file_size", pa.array([size] * n, pa.int64()))
        .append_column("file_modified_at", pa.array([modified_at] * n, pa.timestamp("us")))
        .append_column("ingested_at", pa.array([ingested_at] * n, pa.timestamp("us")))
        .append_column("dbt_invocation_id", pa.array([invocation_id] * n, pa.string()))
        .append_column("file_etag", pa.array([etag] * n, pa.string()))
    )
