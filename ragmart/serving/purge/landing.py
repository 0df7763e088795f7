"""Steps ``landing`` and ``unreadable``: the document's records leave the landing zone.

Records are found with the readers ingestion uses (``ragmart.ingest``), never a second parser,
and removed by ``without_records``, which keeps every other byte of the file; a file holding
nothing but the document's records is deleted. A file ingestion cannot read as records but
whose bytes name the id cannot be purged record by record: the step ``unreadable`` names it
and the purge stays open until the operator deletes it.

The landing zone is read and written through its store (``ragmart.ingest.store``), so a local
folder and an S3 prefix take the same path. An S3 bucket with versioning keeps what a write
replaces: a rewritten or deleted object leaves its old bytes in a noncurrent version, and older
versions (an earlier upload of the key, an object deleted under a delete marker) may hold the
document too. S3 versions cannot be rewritten, so after the current objects the step reads
every noncurrent version under the prefix and deletes, by its version id, each one that holds
the document by the same rules (a record of it, or bytes ingestion cannot read that name it).
A delete marker is never removed: the key stays deleted instead of an older version becoming
current again. Because the scan finds every such version whatever left it, the step is
idempotent: a purge stopped midway (a refused permission, a kill) is finished by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragmart.build.faults import fault_point
from ragmart.ingest.cdc import landing_records, without_records
from ragmart.ingest.landing import LandedFile, list_landing_files
from ragmart.ingest.purged import belongs
from ragmart.ingest.records import LandingRecord
from ragmart.ingest.store import LandingZoneError, ObjectChangedError
from ragmart.serving.purge.artifacts import Needles
from ragmart.serving.purge.deployment import Deployment, PurgeError
from ragmart.serving.purge.objects import purge_failure, s3_error_code, store_call, unreachable
from ragmart.serving.purge.plan import PurgeReport


@dataclass(frozen=True)
class Hit:
    """A landing file, or a noncurrent version of an S3 object, holding the document."""

    location: str  # the file's path or the object's s3:// URL
    key: str  # relative to the landing zone, as ingestion names it
    data: bytes
    records: list[LandingRecord]  # the document's records
    only: bool  # whether they are every record of the file
    version_id: str | None = None  # a noncurrent version's id


def _records(key: str, data: bytes, document_id: str) -> tuple[list[LandingRecord], bool, bool]:
    """(the document's records in the file, whether they are all its records, whether
    ingestion cannot read the file as records)."""
    every = landing_records(key, data)
    records = [r for r in every if belongs(r.row, document_id)]
    spans = {r.span for r in every}
    only = bool(records) and None not in spans and spans <= {r.span for r in records}
    return records, only, None in spans


def landing_files(dep: Deployment) -> list[LandedFile]:
    """Every file under the landing zone, as ingestion lists it
    (ragmart.ingest.landing.list_landing_files, through the landing store): the files it reads,
    the ones it reports as unsupported, and the hidden ones it skips (a partial upload may hold
    the text too). A folder that does not exist or holds no layout folder, an empty prefix or
    a missing bucket hold nothing ingestion would read; a prefix S3 does not let the purge list
    stops it, naming the permission (ragmart.serving.purge.objects)."""
    store = dep.landing_store
    if store is None:
        return []
    try:
        return list_landing_files(store)
    except LandingZoneError as exc:
        if s3_error_code(exc) in (None, "NoSuchBucket") and not unreachable(exc):
            return []
        raise purge_failure(None, "list", store.url, exc) from None


def _current(dep: Deployment, document_id: str | None) -> list[tuple[str, str, bytes]]:
    """(location, key, bytes) of every file the landing zone lists now."""
    out = []
    for landed in landing_files(dep):
        with store_call(document_id, "read", landed.path):
            out.append((landed.path, landed.relative_path, landed.read()))
    return out


def landing_hits(dep: Deployment, document_id: str) -> list[Hit]:
    """Each landing file holding a record of the document."""
    hits = []
    for location, key, data in _current(dep, document_id):
        records, only, _unreadable = _records(key, data, document_id)
        if records:
            hits.append(Hit(location, key, data, records, only))
    return hits


def version_hits(dep: Deployment, document_id: str) -> list[Hit]:
    """Each noncurrent version (S3 versioning) holding the document: a record of it, or bytes
    ingestion cannot read as records that name it. None in a store that keeps no versions."""
    store = dep.landing_store
    if store is None:
        return []
    try:
        with store_call(document_id, "list_versions", store.url):
            versions = [v for v in store.list_versions() if not v.is_latest]
    except LandingZoneError:  # no folder, no object under the prefix: no version either
        return []
    names = Needles(document_id)
    hits = []
    for version in versions:
        location = store.location(version.key)
        try:
            with store_call(document_id, "read_version", location, version.version_id):
                data = store.read(version)
        except ObjectChangedError:  # removed since the listing: nothing left to purge there
            continue
        records, only, unreadable = _records(version.key, data, document_id)
        if records or (unreadable and names.in_bytes(data)):
            hits.append(Hit(location, version.key, data, records, only, version.version_id))
    return hits


def step_landing(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    store = dep.landing_store
    for hit in landing_hits(dep, document_id):
        if hit.only:
            # nothing of another document is left: the file goes (an emptied JSONL would be
            # read as an empty, unreadable file and quarantined on the next build)
            with store_call(document_id, "delete", hit.location):
                store.delete(hit.key)
            report.files_deleted.append(hit.location)
        else:
            with store_call(document_id, "put", hit.location):
                store.put(hit.key, without_records(hit.key, hit.data, hit.records))
            report.files_rewritten.append(hit.location)
        fault_point("purge_landing_file")
    for hit in version_hits(dep, document_id):
        with store_call(document_id, "delete_version", hit.location, hit.version_id):
            store.delete(hit.key, hit.version_id)
        report.versions_deleted.setdefault(hit.location, []).append(hit.version_id)
        fault_point("purge_landing_version")


def unreadable_mentions(dep: Deployment, document_id: str) -> list[str]:
    """Landing files ingestion cannot read as records (an unsupported name, a corrupt parquet
    file, a broken CSV header) whose bytes name the id: no record of them can be removed."""
    names = Needles(document_id)
    found = []
    for location, key, data in _current(dep, document_id):
        if names.in_bytes(data) and _records(key, data, document_id)[2]:
            found.append(location)
    return found


def step_unreadable(dep: Deployment, document_id: str) -> None:
    unreadable = unreadable_mentions(dep, document_id)
    if unreadable:
        raise PurgeError(
            f"purge of {document_id!r} done except in {', '.join(unreadable)}: ingestion cannot "
            "read it (see fct_quarantined_events), so no record of it can be removed, but it "
            "names the document; delete it or re-land a readable copy, then run `ragmart purge` "
            "to finish (the purge stays journaled)")


def landing_document_ids(dep: Deployment) -> set[str]:
    """Every document id a record of the landing zone carries."""
    return {r.row["document_id"] for _location, key, data in _current(dep, None)
            for r in landing_records(key, data) if r.row["document_id"] is not None}
