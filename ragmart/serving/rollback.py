"""Rollback: serve the publication before the current one again.

Its snapshot is kept (ragmart.serving.snapshots.prune_snapshots keeps the recent ones), and it
is evaluated again before it serves, because a purge may have changed it since it was
published; its metrics become the gate's baseline as for a publish
(ragmart.serving.baseline.serve).

With RAGMART_SERVING_URL set, PostgreSQL serves: its pointer goes back to the publication
before the serving one (ragmart.serving.postgres.rollback, no data written), that
publication's report becomes the gate's baseline, and serving.json follows to the same
snapshot when it is still on disk.
"""

from __future__ import annotations

from pathlib import Path

from ragmart.serving.baseline import Evaluator, evaluate_snapshot, reevaluated, serve
from ragmart.serving.pointer import (
    Publication,
    ServingError,
    current_publication,
    history,
    publish_dir,
)


def rollback(db_path: Path, *, evaluate: Evaluator = evaluate_snapshot) -> Publication:
    """Serve the publication before the current one again, re-evaluated."""
    db_path = Path(db_path)
    from ragmart.serving.postgres.settings import serving_url

    url = serving_url()
    if url:
        return _rollback_postgres(db_path, url)
    serving = current_publication(db_path)
    if serving is None:
        raise ServingError("nothing is published; there is nothing to roll back")
    seen: list[str] = []
    for pub in history(db_path):
        if pub.action == "publish" and pub.snapshot not in seen:
            seen.append(pub.snapshot)
    # walk back from the serving snapshot to the one published before it
    if serving.snapshot not in seen or seen.index(serving.snapshot) == 0:
        raise ServingError(f"no publication before {serving.version} ({serving.snapshot})")
    previous_name = seen[seen.index(serving.snapshot) - 1]
    previous = next(p for p in reversed(history(db_path)) if p.snapshot == previous_name)
    path = publish_dir(db_path) / previous.snapshot
    if not path.exists():
        raise ServingError(f"the snapshot {previous.snapshot} of {previous.version} is gone")
    restored = reevaluated(previous, path, evaluate, action="rollback")
    restored.published_at = restored.evaluated_at
    serve(db_path, restored)
    return restored


def _rollback_postgres(db_path: Path, url: str) -> Publication:
    """Switch PostgreSQL back, then the baseline (and serving.json, when the snapshot of the
    publication served again is still kept) to the same publication."""
    from ragmart.serving.baseline import now, write_baseline
    from ragmart.serving.postgres.rollback import rollback_version

    back = rollback_version(url)
    restored = Publication(
        version=back.version, snapshot=back.snapshot or "", published_at=now(),
        metrics=dict(back.report.get("metrics", {})), report=back.report, action="rollback",
        evaluated_at=None, postgres=back.to_dict())
    if back.snapshot and (publish_dir(db_path) / back.snapshot).exists():
        serve(db_path, restored)
    elif back.report:
        write_baseline(db_path, back.report)
    return restored
