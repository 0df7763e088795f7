"""Step ``postgres``: with RAGMART_SERVING_URL set, the document leaves every version and
publication on the PostgreSQL serving target, and the tables it was in are rewritten
(ragmart.serving.postgres.purge). A server that cannot be reached stops the purge here; it
stays journaled and the next run completes it. Without the setting the step does nothing,
unless the deployment's publication history shows publishes to PostgreSQL: then it stops the
purge (a run without the URL, say a build completing an interrupted purge, must not mark the
step done while the document is still on the server)."""

from __future__ import annotations

from pathlib import Path

from ragmart.serving.purge.deployment import Deployment, PurgeError
from ragmart.serving.purge.plan import PurgePlan, PurgeReport


def _url() -> str | None:
    from ragmart.serving.postgres.settings import serving_url

    return serving_url()


def plan_postgres(plan: PurgePlan, document_id: str) -> None:
    """Add the serving database's rows of the document to `plan` (under its masked URL)."""
    url = _url()
    if url is None:
        return
    from ragmart.serving.postgres.purge import count_document_rows
    from ragmart.serving.postgres.settings import masked

    counts = count_document_rows(url, document_id)
    if counts:
        plan.databases[masked(url)] = counts


def _published_target(db_path: Path) -> str | None:
    """The (masked) PostgreSQL target of the latest publish recorded in the history, if any."""
    from ragmart.serving.pointer import history

    return next((p.postgres.get("target") for p in reversed(history(db_path)) if p.postgres),
                None)


def step_postgres(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    url = _url()
    if url is None:
        target = _published_target(dep.db_path)
        if target:
            raise PurgeError(
                f"purge of {document_id!r} done except on the PostgreSQL serving database "
                f"{target}, which this deployment publishes to: set RAGMART_SERVING_URL and run "
                "`ragmart purge` to finish (the purge stays journaled)")
        return
    from ragmart.serving.postgres.purge import purge_document_rows
    from ragmart.serving.postgres.settings import masked

    for table, n in purge_document_rows(url, document_id).items():
        report.rows_deleted[f"{masked(url)}:{table}"] = n


def refresh_postgres_baseline(report: dict) -> None:
    """The serving snapshot was re-evaluated after the purge: record its `report` for the
    publication PostgreSQL serves too (the publish gate reads it there)."""
    url = _url()
    if url is None:
        return
    from ragmart.serving.postgres.purge import record_refresh

    record_refresh(url, report)
