"""Step ``postgres``: with RAGMART_SERVING_URL set, the document leaves every version and
publication on the PostgreSQL serving target, and the tables it was in are rewritten
(ragmart.serving.postgres.purge). Without the setting the step does nothing. A server that
cannot be reached stops the purge here; it stays journaled and the next run completes it."""

from __future__ import annotations

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


def step_postgres(document_id: str, report: PurgeReport) -> None:
    url = _url()
    if url is None:
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
