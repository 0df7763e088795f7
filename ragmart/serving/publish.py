"""Publish: snapshot a version, gate it against what serves, and switch serving to it.

`publish` takes the version's snapshot (ragmart.serving.snapshots), evaluates it, compares it
with the serving publication's report (the gate, ragmart.serving.baseline) and, when it passes
or is forced, makes it the baseline and switches `serving.json` to it with one atomic rename
(ragmart.serving.pointer): readers see the old or the new snapshot, never a mix. A refused or
failed publish leaves what serves unchanged and deletes its snapshot. With RAGMART_SERVING_URL
set, the snapshot that passed the gate is then published to PostgreSQL
(ragmart.serving.postgres.publish: only the rows that changed since the last publish there,
switched in one transaction) before serving.json switches, and the gate's baseline is what
PostgreSQL serves. `publish_after_build` is
the same publish as `ragmart build --watch --publish` runs it after every green build. Rolling
back is ragmart.serving.rollback; purging a document, ragmart.serving.purge.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragmart.relations import check_version
from ragmart.serving.baseline import Evaluator, Gate, gate_on_serving, make_baseline, now
from ragmart.serving.evaluation import evaluate_snapshot
from ragmart.serving.pointer import (
    Publication,
    current_publication,
    publish_dir,
    record,
    write_atomic,
)
from ragmart.serving.snapshots import prune_snapshots, snapshot, snapshot_info, snapshot_marks

AUTO_PUBLISH_FILE = "auto_publish.json"  # in the publish dir: the watch loop's last attempt


class GateRefused(RuntimeError):
    """The evaluation gate refused a candidate: not an error of the command (exit code 4)."""

    def __init__(self, message: str, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = list(failures)


def publish(
    db_path: Path,
    version: str,
    *,
    evaluate: Evaluator = evaluate_snapshot,
    gate: Gate = gate_on_serving,
    force: bool = False,
    phases: dict[str, float] | None = None,
) -> Publication:
    """Snapshot `version`, evaluate it, and switch serving to it if the gate passes (or force).

    `evaluate(database_file, version)` returns an evaluation report (a dict with "metrics");
    `gate(candidate, baseline)` returns the list of failures (empty = pass), baseline being the
    serving publication's report. Raises GateRefused, naming the failing metrics, unless
    `force`. The published metrics become the baseline of the dbt gate. `phases`, when given,
    receives the seconds of each step (snapshot's own steps included)."""
    check_version(version)
    db_path = Path(db_path)
    url = _serving_url()  # a malformed RAGMART_SERVING_URL fails before any work
    phases = {} if phases is None else phases
    path = snapshot(db_path, version, phases=phases)
    try:
        with timed(phases, "evaluate"):
            report = evaluate(path, version)
        serving = current_publication(db_path)
        baseline = serving.report if serving and serving.report else None
        if url:
            baseline = _postgres_baseline(url) or baseline
        failures = gate(report, baseline)
        if failures and not force:
            raise GateRefused(
                f"publish {version} refused by the evaluation gate: " + "; ".join(failures)
                + " (use --force to publish anyway; it is recorded)",
                failures,
            )
        info = snapshot_info(path, version)
        built_at, ingested_through = snapshot_marks(path, version)
        published_at = now()
        publication = Publication(
            version=version,
            snapshot=path.name,
            published_at=published_at,
            embedding_model=info.embedding_model,
            chunker_version=info.chunker_version,
            chunks=info.chunks,
            metrics=dict(report.get("metrics", {})),
            report=report,
            forced=bool(failures) and force,
            gate_failures=failures,
            evaluated_at=published_at,
            built_at=built_at,
            ingested_through=ingested_through,
        )
        with timed(phases, "baseline"):
            make_baseline(db_path, publication)
        if url:
            from ragmart.serving.postgres.publish import publish_version

            publication.postgres = publish_version(
                path, version, url, report=report, snapshot=path.name,
                forced=publication.forced, gate_failures=failures).to_dict()
    except BaseException:
        path.unlink(missing_ok=True)  # nothing switched: the snapshot serves nobody
        raise
    with timed(phases, "record"):
        record(db_path, publication)
        prune_snapshots(db_path)
    return publication


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to phases[name]."""
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - started


def _serving_url() -> str | None:
    """RAGMART_SERVING_URL (None: DuckDB serving only; psycopg is then never imported). With
    it, the other PostgreSQL settings a publish reads are checked too, so that a bad one fails
    before the snapshot and the evaluation, not after them."""
    from ragmart.serving.postgres.settings import (
        hnsw_settings,
        max_build_memory,
        serving_url,
    )

    url = serving_url()
    if url is not None:
        max_build_memory()
        hnsw_settings()
    return url


def _postgres_baseline(url: str) -> dict | None:
    """The report of the publication PostgreSQL serves (None before its first publish)."""
    from ragmart.serving.postgres.versions import serving_report

    return serving_report(url)


@dataclass
class AutoPublish:
    """One publish the watch loop attempted after a green build (`ragmart build --watch
    --publish`): published, refused (by the gate) or failed (any other error). What serves is
    unchanged unless it was published; the next green build tries again."""

    outcome: str
    version: str
    attempted_at: str
    message: str
    snapshot: str | None = None
    gate_failures: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step of the publish

    @property
    def published(self) -> bool:
        return self.outcome == "published"

    def summary(self) -> str:
        if self.published:
            steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.phases.items())
            return f"published {self.version} ({self.snapshot}{'; ' + steps if steps else ''})"
        return (f"publish {self.version} {self.outcome.upper()}, still serving the previous "
                f"snapshot (retried after the next build): {self.message}")


def auto_publish_status(db_path: Path) -> AutoPublish | None:
    """The watch loop's last publish attempt, None when it never attempted one."""
    path = publish_dir(Path(db_path)) / AUTO_PUBLISH_FILE
    if not path.exists():
        return None
    return AutoPublish(**json.loads(path.read_text()))


def publish_after_build(db_path: Path, version: str, *, evaluate: Evaluator = evaluate_snapshot,
                        gate: Gate = gate_on_serving) -> AutoPublish:
    """`publish` without force, as the watch loop runs it after every green build: never
    raises for a refused or failed publish (what serves stays as it was), records the attempt
    for `ragmart freshness` (auto_publish_status) and returns it."""
    phases: dict[str, float] = {}
    try:
        pub = publish(db_path, version, evaluate=evaluate, gate=gate, phases=phases)
        attempt = AutoPublish("published", version, now(), "", pub.snapshot, phases=phases)
    except GateRefused as exc:
        attempt = AutoPublish("refused", version, now(), str(exc), None, exc.failures, phases)
    except Exception as exc:  # any failure leaves the previous snapshot serving
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        attempt = AutoPublish("failed", version, now(), message, phases=phases)
    try:
        write_atomic(publish_dir(Path(db_path)) / AUTO_PUBLISH_FILE,
                     json.dumps(asdict(attempt), indent=2))
    except OSError as exc:
        attempt.message += f" (its status could not be recorded: {exc})"
    return attempt
