"""Index versions, published snapshots, atomic switch and rollback (purge: ragmart.serving.purge).

The build database (RAGMART_DB) is written by `dbt build` and locked while it runs. Serving never
reads it directly once something is published: `publish` copies the database, under a shared
lock that keeps writers out for the length of the copy, into an immutable snapshot file under
`<publish dir>/`, then switches `serving.json` to it with an atomic rename. Readers resolve the
pointer once per request and open the snapshot read-only, so a build never blocks them and
every answer comes wholly from one version. `rollback` points back to the previous snapshot.

The baseline. Whatever serves is the baseline a candidate must not fall below, in two places
that must always agree: the serving publication's report (`serving.json`, which `publish`'s gate
reads) and the table `published_eval_metrics` in the build database (which the dbt test
`assert_candidate_does_not_regress` reads during a build, when no snapshot is at hand). Every
change of what serves, or of what the serving snapshot holds, writes the evaluated metrics to
the build database first (`_write_baseline`) and then switches the pointer
(ragmart.serving.pointer.record): a publish, a rollback, and `refresh_baseline`, which a purge
calls after editing the snapshot in place. The table is written first because the pointer switch is the commit: if the table
cannot be written (the build database stays locked by a build), nothing has changed; if the
switch failed after it, the table would hold the candidate's metrics, which passed the gate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from ragmart.duck import connect
from ragmart.relations import (
    INDEX_PREFIX,
    INDEX_VERSION,
    LANDED_TABLE,
    SERVING_PREFIX,
    check_version,
)
from ragmart.serving.pointer import (
    Publication,
    ServingError,
    current_publication,
    history,
    history_path,
    pointer_path,
    publish_dir,
    record,
    write_atomic,
)

KEEP_SNAPSHOTS = 3
# How long writing the baseline into the build database waits for a build's lock to go away.
LOCK_WAIT_ENV = "RAGMART_LOCK_WAIT_SECONDS"
DEFAULT_LOCK_WAIT_SECONDS = 120.0


class GateRefused(RuntimeError):
    """The evaluation gate refused a candidate: not an error of the command (exit code 4)."""

    def __init__(self, message: str, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = list(failures)


def _open_build_db(db_path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection to the build database, waiting up to RAGMART_LOCK_WAIT_SECONDS while a
    build (another process) holds it; ServingError when it does not exist or stays locked."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise ServingError(f"database {db_path} does not exist; run `dbt build` first")
    wait = _lock_wait_seconds()
    deadline = time.monotonic() + wait
    while True:
        try:
            return connect(db_path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise ServingError(f"cannot open {db_path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise ServingError(
                    f"{db_path} stayed locked by another process (a dbt build?) for {wait:g} s "
                    f"and nothing was switched; retry when it finishes, or wait longer with "
                    f"{LOCK_WAIT_ENV} ({exc})"
                ) from exc
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))


@dataclass(frozen=True)
class VersionInfo:
    version: str
    chunks: int
    documents: int
    embedding_model: str | None
    chunker_version: str | None
    built_at: str | None
    index_rows: int
    size_bytes: int


def list_versions(conn: duckdb.DuckDBPyConnection) -> list[VersionInfo]:
    names = [r[0] for r in conn.execute(
        "select table_name from information_schema.tables where table_name like $p "
        "order by table_name", {"p": f"{SERVING_PREFIX}v%"}).fetchall()]
    out = []
    for name in names:
        version = name.removeprefix(SERVING_PREFIX)
        if not INDEX_VERSION.fullmatch(version):
            continue
        chunks, documents, model, chunker, built, size = conn.execute(
            f"select count(*), count(distinct document_id), min(embedding_model), "
            f"min(chunker_version), max(created_at), coalesce(sum(length(chunk_text)), 0) "
            f"+ coalesce(sum(len(embedding)), 0) * 4 from {name}"  # float32 at its model's size
        ).fetchone()
        index_rows = 0
        if conn.execute(
            "select count(*) from information_schema.tables where table_name = $t",
            {"t": f"{INDEX_PREFIX}{version}"},
        ).fetchone()[0]:
            index_rows = conn.execute(f"select count(*) from {INDEX_PREFIX}{version}").fetchone()[0]
        out.append(VersionInfo(version, chunks, documents, model, chunker,
                               built.isoformat() if built else None, index_rows, int(size)))
    return out


MARKS_TABLE = "published_snapshot_marks"  # one row in every snapshot: what it was taken from


def _slim_relations(version: str) -> list[str]:
    """What serving `version` reads besides the index_versions row and the retrieval macro:
    the serving set, its exact delta, the history `--as-of` reads, the documents and their
    latest access. Not the HNSW index table: see `snapshot`."""
    from ragmart.retrieval.sql import Tables

    t = Tables.for_version(version)
    return [t.serving, t.delta, t.history, t.documents, t.access]


def _embedding_dimensions(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    (data_type,) = conn.execute(
        "select data_type from information_schema.columns where table_name = $t "
        "and column_name = 'embedding' and table_catalog = current_database()", {"t": table},
    ).fetchone()
    return int(re.sub(r"[^0-9]", "", data_type))


def snapshot(db_path: Path, version: str) -> Path:
    """Write `version`'s immutable snapshot file from the build database; returns its path.

    A read-only connection holds a shared lock for the length of the copy, so no build can
    write meanwhile (a build that starts waits or fails on the lock, per its retries).

    What a snapshot holds. A serving set of at most EXACT_SCAN_MAX_ROWS chunks is searched
    exactly, never through the HNSW index, so its snapshot is *slim*: only what serving the
    version reads (`_slim_relations`, its index_versions row, the retrieval macro), copied
    table by table (`create table ... as select`) into a new file: 3.4 MB instead of 9.2 MB for
    the 838-chunk sample, and a publish after a small change copies no staging, history of
    other versions or embedding cache. A larger serving set is searched through its HNSW index,
    and DuckDB cannot move an index to another file: a copied table gets it only by building it
    again (`create index ... using hnsw`: 212 s for 20,000 rows on the 2-core test machine,
    against ~1 s to copy the whole file). So its snapshot stays a copy of the whole build
    database, index included. Either way the snapshot records what it was taken from
    (MARKS_TABLE: the version's last build and the newest ingestion it holds)."""
    from ragmart.retrieval.planner import EXACT_SCAN_MAX_ROWS
    from ragmart.retrieval.sql import Tables, install_sql_macros

    db_path = Path(db_path)
    target_dir = publish_dir(db_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = target_dir / f"{version}-{stamp}.duckdb"
    tmp = target_dir / f".{final.name}.tmp"
    conn = _open_build_db(db_path, read_only=True)
    try:
        from ragmart.catalog import table_exists as _exists
        from ragmart.relations import INDEX_VERSIONS_TABLE

        serving = f"{SERVING_PREFIX}{version}"
        if not _exists(conn, serving):
            raise ServingError(
                f"version {version} is not built in {db_path}; build it with "
                f"`dbt build --vars '{{index_version: {version}}}'`"
            )
        built_at = ingested = None
        if _exists(conn, INDEX_VERSIONS_TABLE):
            row = conn.execute(f"select built_at from {INDEX_VERSIONS_TABLE} "
                               "where index_version = $v", {"v": version}).fetchone()
            built_at = row[0] if row else None
        if _exists(conn, LANDED_TABLE):
            ingested = conn.execute(f"select max(ingested_at) from {LANDED_TABLE}").fetchone()[0]
        slim = conn.execute(f"select count(*) from {serving}").fetchone()[0] \
            <= EXACT_SCAN_MAX_ROWS
        dims = _embedding_dimensions(conn, serving)
        if slim:
            tmp.unlink(missing_ok=True)
            quoted = str(tmp).replace("'", "''")
            conn.execute(f"attach '{quoted}' as snapshot_copy")
            try:
                for table in _slim_relations(version):
                    if _exists(conn, table):
                        conn.execute(f'create table snapshot_copy.main."{table}" as '
                                     f'select * from main."{table}"')
                if _exists(conn, INDEX_VERSIONS_TABLE):
                    conn.execute(f"create table snapshot_copy.main.{INDEX_VERSIONS_TABLE} as "
                                 f"select * from main.{INDEX_VERSIONS_TABLE} "
                                 f"where index_version = '{version}'")
            finally:
                conn.execute("detach snapshot_copy")
        else:
            shutil.copyfile(db_path, tmp)
            wal = Path(f"{db_path}.wal")
            if wal.exists():
                shutil.copyfile(wal, Path(f"{tmp}.wal"))
    finally:
        conn.close()
    # fold any WAL into the copy (with vss loaded), add the lookup indexes readers need and the
    # retrieval macro (a slim copy has none), so readers open a clean, read-optimized file
    copy = connect(tmp)
    try:
        if slim:
            install_sql_macros(copy, dims, Tables.for_version(version))
        copy.execute(f"create or replace table {MARKS_TABLE} as select $v as index_version, "
                     "$b::timestamp as built_at, $i::timestamp as ingested_through, $s as slim",
                     {"v": version, "b": built_at, "i": ingested, "s": slim})
        add_lookup_indexes(copy, version)
        copy.execute("checkpoint")
    finally:
        copy.close()
    os.replace(tmp, final)
    return final


def add_lookup_indexes(conn: duckdb.DuckDBPyConnection, version: str) -> list[str]:
    """Create the unique chunk_id (ART) indexes of `version`'s serving and history tables that
    are missing; returns the names created.

    Retrieval looks chunks up by constant chunk_id lists, and DuckDB answers those from an ART
    index, reading only those rows' vectors (a Retriever search at 100,000 chunks: ~25 ms with
    it, ~250 ms without). The build database has no such index on purpose: DuckDB rewrites a
    table with one at the checkpoint after every insert (0.5 s at 20,000 rows, 2.7 s at 100,000,
    whatever the change), so a build would pay for it in proportion to the corpus. A snapshot is
    written once and read many times; its indexes are built here, once per publish (0.1 s to
    create at 100,000 rows). Uniqueness in the build database is a dbt data test."""
    from ragmart.retrieval.sql import Tables

    relations = Tables.for_version(check_version(version))
    existing = {name for (name,) in conn.execute(
        "select index_name from duckdb_indexes() where database_name = current_database()"
    ).fetchall()}
    tables = {name for (name,) in conn.execute(
        "select table_name from duckdb_tables() where database_name = current_database()"
    ).fetchall()}
    created = []
    for table in (relations.serving, relations.history):
        name = f"{table}_chunk_id"
        if table in tables and name not in existing:
            conn.execute(f'create unique index "{name}" on "{table}" (chunk_id)')
            created.append(name)
    return created


Evaluator = Callable[[Path, str], dict]
Gate = Callable[[dict, dict | None], list[str]]


def evaluate_snapshot(database: Path, version: str) -> dict:
    """The judged-query evaluation report of `version` in a database file (exact search over its
    serving table), as ragmart.quality.evaluation.EvalReport.to_dict(): what a publication
    records."""
    from ragmart.quality.evaluation import evaluate_version

    return evaluate_version(database, version).to_dict()


def gate_on_serving(candidate: dict, baseline: dict | None) -> list[str]:
    """Failures of the candidate report against the serving one
    (ragmart.quality.evaluation.gate)."""
    from ragmart.quality.gate import gate
    from ragmart.quality.metrics import EvalReport

    if not baseline:
        return []
    return list(gate(EvalReport.from_dict(candidate), EvalReport.from_dict(baseline)).failures)


def _lock_wait_seconds() -> float:
    from ragmart.config import seconds_from_env

    try:
        seconds = seconds_from_env(LOCK_WAIT_ENV)
    except ValueError as exc:
        raise ServingError(f"{exc}; unset it (default {DEFAULT_LOCK_WAIT_SECONDS:g}) or write "
                           "e.g. 30") from None
    return DEFAULT_LOCK_WAIT_SECONDS if seconds is None else seconds


def _write_baseline(db_path: Path, report: dict) -> None:
    """Append `report`'s metrics to published_eval_metrics in the build database, the baseline
    of assert_candidate_does_not_regress, waiting up to RAGMART_LOCK_WAIT_SECONDS for a build
    that holds the database; raises ServingError when it stays locked."""
    from ragmart.quality.baseline import record_published_metrics
    from ragmart.quality.metrics import EvalReport

    conn = _open_build_db(db_path, read_only=False)
    try:
        conn.execute("begin")
        record_published_metrics(conn, EvalReport.from_dict(report))
        conn.execute("commit")
    finally:
        conn.close()


def _serve(db_path: Path, publication: Publication) -> None:
    """Make `publication` the one serving: its metrics become the dbt gate's baseline, then the
    pointer switches (see the module docstring for the order)."""
    _write_baseline(db_path, publication.report)
    publication.build_db_mtime_ns = _mtime_ns(db_path)
    record(db_path, publication)


def _snapshot_chunks(path: Path, version: str) -> VersionInfo:
    conn = connect(path, read_only=True)
    try:
        return next(v for v in list_versions(conn) if v.version == version)
    finally:
        conn.close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _snapshot_marks(path: Path, version: str) -> tuple[str | None, str | None]:
    """(when `version` was last built, the newest ingested_at of the landed files it holds)
    as recorded in the snapshot `path` (MARKS_TABLE), naive-UTC ISO text or None."""
    conn = connect(path, read_only=True)
    try:
        built, ingested = conn.execute(
            f"select built_at, ingested_through from {MARKS_TABLE} where index_version = $v",
            {"v": version}).fetchone()
        return (built.isoformat() if built else None, ingested.isoformat() if ingested else None)
    finally:
        conn.close()


def _mtime_ns(db_path: Path) -> int:
    """The newest modification time of the database file and its WAL (0 when absent)."""
    paths = (Path(db_path), Path(f"{db_path}.wal"))
    return max([0, *(path.stat().st_mtime_ns for path in paths if path.exists())])


def publish(
    db_path: Path,
    version: str,
    *,
    evaluate: Evaluator = evaluate_snapshot,
    gate: Gate = gate_on_serving,
    force: bool = False,
) -> Publication:
    """Snapshot `version`, evaluate it, and switch serving to it if the gate passes (or force).

    `evaluate(database_file, version)` returns an evaluation report (a dict with "metrics");
    `gate(candidate, baseline)` returns the list of failures (empty = pass), baseline being the
    serving publication's report. Raises GateRefused, naming the failing metrics, unless
    `force`. The published metrics become the baseline of the dbt gate."""
    check_version(version)
    db_path = Path(db_path)
    path = snapshot(db_path, version)
    try:
        report = evaluate(path, version)
        serving = current_publication(db_path)
        baseline = serving.report if serving and serving.report else None
        failures = gate(report, baseline)
        if failures and not force:
            raise GateRefused(
                f"publish {version} refused by the evaluation gate: " + "; ".join(failures)
                + " (use --force to publish anyway; it is recorded)",
                failures,
            )
        info = _snapshot_chunks(path, version)
        built_at, ingested_through = _snapshot_marks(path, version)
        now = _now()
        publication = Publication(
            version=version,
            snapshot=path.name,
            published_at=now,
            embedding_model=info.embedding_model,
            chunker_version=info.chunker_version,
            chunks=info.chunks,
            metrics=dict(report.get("metrics", {})),
            report=report,
            forced=bool(failures) and force,
            gate_failures=failures,
            evaluated_at=now,
            built_at=built_at,
            ingested_through=ingested_through,
        )
        _write_baseline(db_path, report)
        publication.build_db_mtime_ns = _mtime_ns(db_path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record(db_path, publication)
    _prune_snapshots(db_path)
    return publication


AUTO_PUBLISH_FILE = "auto_publish.json"  # in the publish dir: the watch loop's last attempt


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

    @property
    def published(self) -> bool:
        return self.outcome == "published"

    def summary(self) -> str:
        if self.published:
            return f"published {self.version} ({self.snapshot})"
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
    try:
        pub = publish(db_path, version, evaluate=evaluate, gate=gate)
        attempt = AutoPublish("published", version, _now(), "", pub.snapshot)
    except GateRefused as exc:
        attempt = AutoPublish("refused", version, _now(), str(exc), None, exc.failures)
    except Exception as exc:  # any failure leaves the previous snapshot serving
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        attempt = AutoPublish("failed", version, _now(), message)
    try:
        write_atomic(publish_dir(Path(db_path)) / AUTO_PUBLISH_FILE,
                      json.dumps(asdict(attempt), indent=2))
    except OSError as exc:
        attempt.message += f" (its status could not be recorded: {exc})"
    return attempt


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
    report = evaluate(path, serving.version)
    refreshed = Publication(**{
        **asdict(serving),
        "chunks": _snapshot_chunks(path, serving.version).chunks,
        "metrics": dict(report.get("metrics", {})),
        "report": report,
        "action": "refresh",
        "evaluated_at": _now(),
    })
    _serve(db_path, refreshed)
    return refreshed


def rollback(db_path: Path, *, evaluate: Evaluator = evaluate_snapshot) -> Publication:
    """Serve the publication before the current one again (its snapshot is kept), re-evaluated:
    a purge may have changed it since it was published."""
    db_path = Path(db_path)
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
    report = evaluate(path, previous.version)
    now = _now()
    restored = Publication(**{
        **asdict(previous), "action": "rollback", "published_at": now,
        "chunks": _snapshot_chunks(path, previous.version).chunks,
        "metrics": dict(report.get("metrics", {})), "report": report, "evaluated_at": now,
    })
    _serve(db_path, restored)
    return restored


def replace_snapshot(db_path: Path, old_name: str, new_name: str) -> bool:
    """Serve `new_name` wherever `old_name` served or may be rolled back to (a purged copy of a
    snapshot, ragmart.serving.purge): the history is rewritten with the new name, then
    serving.json is
    switched with one atomic rename, the same switch as a publish. A reader that opened the old
    file keeps reading it until it reopens; the next reader opens the new one. Returns whether
    serving.json was switched. Idempotent."""
    db_path = Path(db_path)
    history_file = history_path(db_path)
    if history_file.exists():
        lines = []
        for line in history_file.read_text().splitlines():
            if line:
                entry = json.loads(line)
                if entry.get("snapshot") == old_name:
                    entry["snapshot"] = new_name
                line = json.dumps(entry, sort_keys=True)
            lines.append(line)
        text = "\n".join(lines) + "\n" if lines else ""
        if text != history_file.read_text():
            write_atomic(history_file, text)
    serving = current_publication(db_path)
    if serving is None or serving.snapshot != old_name:
        return False
    serving.snapshot = new_name
    write_atomic(pointer_path(db_path), json.dumps(asdict(serving), indent=2))
    return True


def _prune_snapshots(db_path: Path) -> None:
    """Keep the serving snapshot and the KEEP_SNAPSHOTS most recently recorded snapshots
    (rollback targets; a snapshot refreshed several times counts once)."""
    keep = set(list(dict.fromkeys(p.snapshot for p in reversed(history(db_path))))
               [:KEEP_SNAPSHOTS])
    serving = current_publication(db_path)
    if serving:
        keep.add(serving.snapshot)
    for path in publish_dir(db_path).glob("v*.duckdb"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
