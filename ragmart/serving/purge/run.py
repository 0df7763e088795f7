"""A purge from start to end: the plan, the journaled steps in order, and the two entry points
(``ragmart purge`` and the dbt plugin): :func:`purge_document` and :func:`complete_pending`.

The order of the steps and why is the package docstring's (``ragmart.serving.purge``).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ragmart.build.faults import fault_point
from ragmart.ingest.purged import load_registry, registry_path
from ragmart.serving.purge.artifacts import (
    Needles,
    apply_artifact_action,
    artifact_actions,
    sentences,
)
from ragmart.serving.purge.database import (
    database_document_ids,
    inspect_database,
    step_database,
)
from ragmart.serving.purge.deployment import TEMP_MARK, Deployment, PurgeError
from ragmart.serving.purge.journal import begin, exclusive, load_journal, save_journal
from ragmart.serving.purge.landing import (
    landing_document_ids,
    landing_hits,
    step_landing,
    step_unreadable,
    unreadable_mentions,
)
from ragmart.serving.purge.plan import PurgePlan, PurgeReport
from ragmart.serving.purge.postgres import (
    plan_postgres,
    refresh_postgres_baseline,
    step_postgres,
)
from ragmart.serving.purge.snapshots import purged_name, step_snapshots

STEPS = ("artifacts", "landing", "snapshots", "database", "postgres", "unreadable")


def plan_purge(dep: Deployment, document_id: str, *, artifacts: bool = True) -> PurgePlan:
    """What a purge of `document_id` would change; reads only."""
    plan = PurgePlan(document_id)
    texts: list[str] = [document_id]
    seqs: list[int] = []
    for path, _rel, _data, records, _only in landing_hits(dep, document_id):
        plan.landing[str(path)] = [r.row["source_line"] for r in records]
        for r in records:
            texts += [r.row["content"], r.row["title"], r.row["raw_record"]]
            if r.row["change_seq"] is not None:
                seqs.append(r.row["change_seq"])
    for database in [dep.db_path, *dep.snapshots()]:
        if not database.exists():
            continue
        found = inspect_database(database, document_id, with_texts=artifacts)
        if not found.counts:
            continue
        plan.databases[str(database)] = found.counts
        texts += found.texts
        if found.max_change_seq is not None:
            seqs.append(found.max_change_seq)
        if database != dep.db_path:
            plan.snapshots[str(database)] = purged_name(database.name)
    plan_postgres(plan, document_id)
    plan.max_change_seq = max(seqs) if seqs else None
    plan.unreadable = unreadable_mentions(dep, document_id)
    if artifacts:
        plan.artifacts = artifact_actions(dep, Needles(document_id, frozenset(sentences(texts))))
    return plan


def _step_artifacts(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    for name, action in plan_purge(dep, document_id).artifacts.items():
        apply_artifact_action(Path(name), action)
        (report.files_deleted if action == "delete" else report.files_rewritten).append(name)


def _remove_temporaries(dep: Deployment) -> None:
    folders = {dep.db_path.resolve().parent, dep.publish_dir, registry_path(dep.db_path).parent}
    folders |= {p.parent for _rel, p in dep.landing_files()}
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(f".*{TEMP_MARK}*"):
                path.unlink(missing_ok=True)


def _run(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    """Run the steps not yet done for a journaled purge; each is marked done when it ends."""
    journal = load_journal(dep.db_path)
    entry = journal[document_id]
    _remove_temporaries(dep)
    for step in STEPS:
        if step in entry["done"]:
            continue
        if step == "artifacts":
            _step_artifacts(dep, document_id, report)
        elif step == "landing":
            step_landing(dep, document_id, report)
        elif step == "snapshots":
            step_snapshots(dep, document_id, report)
        elif step == "database":
            step_database(dep, document_id, report)
        elif step == "postgres":
            step_postgres(dep, document_id, report)
        else:
            step_unreadable(dep, document_id)
        entry["done"].append(step)
        save_journal(dep.db_path, journal)
        fault_point(f"purge_step_{step}")
    # What serves changed: the gate's baseline is measured again (ragmart.serving.baseline).
    # Before the journal entry goes, so a failed measurement (a locked database, a provider not
    # configured) leaves the purge pending and the next purge or build measures again.
    from ragmart.serving.baseline import refresh_baseline

    refreshed = refresh_baseline(dep.db_path)
    if refreshed is not None:
        refresh_postgres_baseline(refreshed.report)
    del journal[document_id]
    save_journal(dep.db_path, journal)


def known_document_ids(dep: Deployment) -> set[str]:
    """Every document id the deployment holds (the build database and the landing zone)."""
    ids = database_document_ids(dep.db_path) if dep.db_path.exists() else set()
    return ids | landing_document_ids(dep)


def purge_document(dep: Deployment, document_id: str, *, dry_run: bool = False
                   ) -> PurgePlan | PurgeReport:
    """Purge one document (or, with `dry_run`, return the plan and change nothing).

    An id that no record of the deployment carries is refused, naming the closest ids, and
    nothing is touched; an id whose purge is pending in the journal is completed."""
    if not document_id or not document_id.strip():
        raise PurgeError("purge needs a document id: ragmart purge --document-id ID")
    pending = document_id in load_journal(dep.db_path)
    plan = plan_purge(dep, document_id, artifacts=dry_run)
    if not plan.found and not pending:
        if document_id in load_registry(registry_path(dep.db_path)):
            raise PurgeError(f"{document_id!r} was already purged; no file holds it any more")
        close = difflib.get_close_matches(document_id, sorted(known_document_ids(dep)), n=5,
                                          cutoff=0.6)
        hint = f"; closest ids: {', '.join(close)}" if close else ""
        raise PurgeError(f"no document {document_id!r} in the database, its snapshots or the "
                         f"landing zone: nothing purged{hint}")
    if dry_run:
        return plan
    report = PurgeReport(document_id, max_change_seq=plan.max_change_seq,
                         completed_interrupted_purge=pending)
    with exclusive(dep):
        begin(dep, document_id, plan.max_change_seq)
        _run(dep, document_id, report)
    return report


def complete_pending(dep: Deployment) -> list[PurgeReport]:
    """Complete every purge the journal holds (interrupted by a lock, an error or a kill)."""
    reports: list[PurgeReport] = []
    if not load_journal(dep.db_path):
        return reports
    with exclusive(dep):
        for document_id in list(load_journal(dep.db_path)):
            report = PurgeReport(document_id, completed_interrupted_purge=True)
            _run(dep, document_id, report)
            reports.append(report)
    return reports
