"""Steps ``landing`` and ``unreadable``: the document's records leave the landing zone.

Records are found with the readers ingestion uses (``ragmart.ingest``), never a second parser,
and removed by ``without_records``, which keeps every other byte of the file; a file holding
nothing but the document's records is deleted. A file ingestion cannot read as records but
whose bytes name the id cannot be purged record by record: the step ``unreadable`` names it
and the purge stays open until the operator deletes it.
"""

from __future__ import annotations

from pathlib import Path

from ragmart.build.faults import fault_point
from ragmart.ingest.cdc import landing_records, without_records
from ragmart.ingest.purged import belongs
from ragmart.ingest.records import LandingRecord
from ragmart.serving.purge.artifacts import Needles
from ragmart.serving.purge.deployment import Deployment, PurgeError, write_atomic
from ragmart.serving.purge.plan import PurgeReport


def landing_hits(dep: Deployment, document_id: str) -> list[tuple[Path, str, bytes,
                                                                   list[LandingRecord], bool]]:
    """(file, relative path, bytes, the document's records, whether they are every record of
    the file) of each landing file holding a record of the document."""
    hits = []
    for rel, path in dep.landing_files():
        data = path.read_bytes()
        every = landing_records(rel, data)
        records = [r for r in every if belongs(r.row, document_id)]
        if records:
            spans = {r.span for r in every}
            only = None not in spans and spans <= {r.span for r in records}
            hits.append((path, rel, data, records, only))
    return hits


def step_landing(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    for path, rel, data, records, only in landing_hits(dep, document_id):
        if only:
            # nothing of another document is left: the file goes (an emptied JSONL would be
            # read as an empty, unreadable file and quarantined on the next build)
            path.unlink(missing_ok=True)
            report.files_deleted.append(str(path))
        else:
            write_atomic(path, without_records(rel, data, records))
            report.files_rewritten.append(str(path))
        fault_point("purge_landing_file")


def unreadable_mentions(dep: Deployment, document_id: str) -> list[str]:
    """Landing files ingestion cannot read as records (an unsupported name, a corrupt parquet
    file, a broken CSV header) whose bytes name the id: no record of them can be removed."""
    names = Needles(document_id)
    found = []
    for rel, path in dep.landing_files():
        data = path.read_bytes()
        if names.in_bytes(data) and any(r.span is None for r in landing_records(rel, data)):
            found.append(str(path))
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
    return {r.row["document_id"] for rel, path in dep.landing_files()
            for r in landing_records(rel, path.read_bytes())
            if r.row["document_id"] is not None}
