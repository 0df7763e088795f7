"""The landing zone: every file listed, and the files not seen yet ingested into event rows
(used by the dbt Python model stg_landing__document_events).

A file is ingested once per distinct content: files already seen with the same relative path,
size and modification time are skipped without being read, and a re-landed file whose bytes
are unchanged (same sha256) adds nothing. Reading a file is :mod:`ragmart.ingest.cdc`'s (the
compliance purge reads with it too); records of purged documents are dropped as
:mod:`ragmart.ingest.purged` decides.

Nothing under the landing dir is ignored without a word. :func:`list_landing_files` lists every
file, in subfolders too; a file outside the layouts' folders, or with an extension its layout
does not read, becomes one ``unsupported_file`` quarantine row (``ragmart.ingest.cdc`` decides
which paths are readable). Only hidden names (a ``.`` first, on the file or a folder above it)
are skipped: producers write a hidden temporary file and rename it when complete. A landing dir
that does not exist, or that holds files but no layout folder, is a misconfiguration, not an
empty zone: it raises :class:`LandingZoneError` naming the absolute path, so the build fails
instead of writing an empty database that passes every test. An existing empty landing dir is
valid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ragmart.build.faults import fault_point
from ragmart.ingest.cdc import LAYOUT_EXTENSIONS, parse_landing_file
from ragmart.ingest.purged import is_purged
from ragmart.ingest.records import DEFAULT_MAX_CLOCK_SKEW, rows_to_arrow
from ragmart.ingest.store import LandingZoneError
from ragmart.lineage import current_invocation_id, utc_now

LAYOUTS = tuple(LAYOUT_EXTENSIONS)


@dataclass(frozen=True)
class LandedFile:
    path: str  # absolute path of the file
    # ``dms/0001_x.csv``: under the landing dir, '/'-separated; the same whatever the landing
    # dir is called or where it lives
    relative_path: str
    size: int
    modified_at: dt.datetime  # naive UTC

    @property
    def is_hidden(self) -> bool:
        return any(part.startswith(".") for part in self.relative_path.split("/"))


def list_landing_files(landing_dir: str | Path) -> list[LandedFile]:
    """Every file under ``landing_dir``, sorted by relative path; hidden files are included
    (flagged ``is_hidden``), hidden folders are not walked.

    Raises :class:`LandingZoneError` when the dir does not exist, is not a directory, or holds
    visible entries but neither a ``dms/`` nor a ``debezium/`` folder."""
    root = Path(landing_dir).expanduser()
    shown = root.absolute()
    where = f"landing directory {shown}"
    if not root.is_absolute():
        where += f" ({str(landing_dir)!r} resolved from the current directory {Path.cwd()})"
    fix = (
        "set RAGMART_LANDING_DIR (or --vars '{landing_dir: ...}') to the folder that holds "
        "dms/ and debezium/"
    )
    if not root.exists():
        raise LandingZoneError(
            f"{where} does not exist; {fix}, or create it (an empty landing zone is valid)"
        )
    if not root.is_dir():
        raise LandingZoneError(f"{where} is not a directory; {fix}")
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    if visible and not any((root / layout).is_dir() for layout in LAYOUTS):
        found = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
        raise LandingZoneError(
            f"{where} holds no dms/ or debezium/ folder (found: {found}); {fix}"
        )
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while listing: it is not there
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            files.append(
                LandedFile(
                    path=str(path.absolute()),
                    relative_path=path.relative_to(root).as_posix(),
                    size=st.st_size,
                    modified_at=_EPOCH + dt.timedelta(microseconds=st.st_mtime_ns // 1000),
                )
            )
    return sorted(files, key=lambda f: f.relative_path)


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


_EPOCH = dt.datetime(1970, 1, 1)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def ingest_files(
    files: Iterable[LandedFile],
    *,
    seen_keys: set[tuple[str, int, dt.datetime]],
    seen_hashes: set[tuple[str, str]],
    max_content_bytes: int,
    purged: dict[str, int] | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
    now: dt.datetime | None = None,
) -> pa.Table:
    """Parse the files not ingested yet; returns cdc rows plus file and lineage columns.

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
        modified_at = _naive_utc(landed.modified_at)
        if (landed.relative_path, landed.size, modified_at) in seen_keys:
            continue
        data = Path(landed.path).read_bytes()
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
            rows_to_arrow(rows), landed.size, modified_at, ingested_at, invocation_id))
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
) -> pa.Table:
    """The file's rows with the file's bookkeeping and lineage columns."""
    n = table.num_rows
    return (
        table.append_column("file_size", pa.array([size] * n, pa.int64()))
        .append_column("file_modified_at", pa.array([modified_at] * n, pa.timestamp("us")))
        .append_column("ingested_at", pa.array([ingested_at] * n, pa.timestamp("us")))
        .append_column("dbt_invocation_id", pa.array([invocation_id] * n, pa.string()))
    )
