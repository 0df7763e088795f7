"""The gate's baseline: what serves is what a candidate must not fall below.

The baseline lives in two places that must always agree: the serving publication's report
(`serving.json`, which ragmart.serving.publish's gate reads) and the table
`published_eval_metrics` in the build database (which the dbt test
`assert_candidate_does_not_regress` reads during a build, when no snapshot is at hand). Every
change of what serves, or of what the serving snapshot holds, goes through `serve`: it writes the
evaluated metrics to the build database first, then switches the pointer
(ragmart.serving.pointer.record). A publish, a rollback, and `refresh_baseline`, which a purge
calls after editing the snapshot in place, all do. The table is written first because the
pointer switch is the commit: if the table cannot be written (the build database stays locked
by a build), nothing has changed; if the switch failed after it, the table would hold the
candidate's metrics, which passed the gate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ragmart.serving.build_db import mtime_ns, open_build_db
from ragmart.serving.pointer import (
    Publication,
    ServingError,
    current_publication,
    publish_dir,
    record,
)
from ragmart.serving.snapshots import snapshot_info

# evaluate(database file, version) -> an evaluation report (a dict with "metrics")
Evaluator = Callable[[Path, str], dict]
# gate(candidate report, baseline report or None) -> the failures (empty: it passes)
Gate = Callable[[dict, dict | None], list[str]]


def evaluate_snapshot(database: Path, version: str) -> dict:
    """The judged-query evaluation report of `version` in a database file (exact search over its
    serving table), as ragmart.quality.metrics.EvalReport.to_dict(): what a publication
    records."""
    from ragmart.quality.evaluation import evaluate_version

    return evaluate_version(database, version).to_dict()


def gate_on_serving(candidate: dict, baseline: dict | None) -> list[str]:
    """Failures of the candidate report against the serving one
    (ragmart.quality.gate.gate)."""
    from ragmart.quality.gate import gate
    from ragmart.quality.metrics import EvalReport

    if not baseline:
        return []
    return list(gate(EvalReport.from_dict(candidate), EvalReport.from_dict(baseline)).failures)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def write_baseline(db_path: Path, report: dict) -> None:
    """Append `report`'s metrics to published_eval_metrics in the build database, the baseline
    of assert_candidate_does_not_regress, waiting up to RAGMART_LOCK_WAIT_SECONDS for a build
    that holds the database; raises ServingError when it stays locked."""
    from ragmart.quality.baseline import record_published_metrics
    from ragmart.quality.metrics import EvalReport

    conn = open_build_db(db_path, read_only=False)
    try:
        conn.execute("begin")
        record_published_metrics(conn, EvalReport.from_dict(report))
        conn.execute("commit")
    finally:
        conn.close()


def make_baseline(db_path: Path, publication: Publication) -> None:
    """Write `publication`'s metrics as the dbt gate's baseline and note the build database's
    modification time after that write: everything `serve` does before the switch."""
    write_baseline(db_path, publication.report)
    publication.build_db_mtime_ns = mtime_ns(db_path)


def serve(db_path: Path, publication: Publication) -> None:
    """Make `publication` the one serving: its metrics become the dbt gate's baseline, then the
    pointer switches (see the module docstring for the order)."""
    make_baseline(db_path, publication)
    record(db_path, publication)


def reevaluated(publication: Publication, path: Path, evaluate: Evaluator,
                **changes: object) -> Publication:
    """`publication` with the chunks and evaluation of its snapshot file `path` as they are now
    (a purge may have changed it since it was evaluated), and `changes`."""
    report = evaluate(path, publication.version)
    return Publication(**{
        **asdict(publication),
        "chunks": snapshot_info(path, publication.version).chunks,
        "metrics": dict(report.get("metrics", {})),
        "report": report,
        "evaluated_at": now(),
        **changes,
    })


def refresh_baseline(db_path: Path, *, evaluate: Evaluator = evaluate_snapshot
                     ) -> Publication | None:
    """Re-evaluate the serving snapshot and make its new metrics the baseline everywhere (the
    pointer, the history and the dbt gate's table); None when nothing is published.

    Call it after anything changes what the serving snapshot holds (a purge): the gate must
    compare a candidate with what serves now, or every honest publish after a purge is refused
    for the documents the purge removed."""
    db_path = Path(db_path)
    serving = current_publication(db_path)
    if serving is None:
        return None
    path = publish_dir(db_path) / serving.snapshot
    if not path.exists():
        raise ServingError(f"the serving snapshot {serving.snapshot} of {serving.version} is "
                           f"gone; publish a version again (ragmart publish {serving.version})")
    refreshed = reevaluated(serving, path, evaluate, action="refresh")
    serve(db_path, refreshed)
    return refreshed
