"""Serving freshness for a person: `ragmart freshness`.

Reads the same facts the dbt tests check (the table int_document_versions_served_<v>, see
tests/dbt/assert_*), for one index version: stale live versions (not fully served with the
version's chunker and model), orphans (served rows of a deleted or superseded version), the lag
from each live version's commit_ts to its vectors being ready (percentiles, and how many exceed
the SLA), and the last change and build of that version (table index_versions). Every figure is
the version's own: building v2 changes none of v1's.
And what did not become an event (fct_quarantined_events):
the landing files not read (outside the layouts, wrong extension, empty or corrupt) and the
quarantined records by code, so nothing landed is passed over in silence.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from ragmart.catalog import table_exists
from ragmart.chunking import chunkers as chunking
from ragmart.duck import connect
from ragmart.quality import embedding_lag
from ragmart.relations import (
    DOCUMENT_VERSIONS_TABLE,
    INDEX_VERSIONS_TABLE,
    QUARANTINE_TABLE,
    RUNS_TABLE,
    InvalidVersionError,
    Relations,
)
from ragmart.serving.pointer import resolve_target

DEFAULT_CHUNKER = chunking.CHUNKER_VERSION  # the dbt var chunker_version's default
SLA_ENV = "RAGMART_EMBEDDING_LAG_SLA_MINUTES"
DEFAULT_SLA_MINUTES = 1440  # the dbt var embedding_lag_sla_minutes
LISTED = 20  # documents listed per problem (all are counted)


class FreshnessError(RuntimeError):
    pass


@dataclass(frozen=True)
class FreshnessReport:
    database: str
    index_version: str
    # what the version is bound to (None for a database built before index_versions existed)
    chunker_version: str | None
    embedding_model: str | None
    checked_at: str
    live_versions: int
    fully_served_versions: int
    stale_count: int
    orphan_count: int
    over_sla_count: int
    sla_minutes: float
    lag_seconds: dict[str, float | None]
    last_change_applied: dict | None
    last_build_at: str | None
    stale: list[dict] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)
    over_sla: list[dict] = field(default_factory=list)
    unread_file_count: int = 0
    unread_files: list[dict] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)  # records by quarantine code

    @property
    def healthy(self) -> bool:
        return not (self.stale_count or self.orphan_count or self.over_sla_count)

    def to_dict(self) -> dict:
        return asdict(self) | {"healthy": self.healthy}


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


def _records(cursor: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [{n: _iso(v) for n, v in zip(names, row, strict=True)} for row in cursor.fetchall()]


def sla_minutes_default() -> float:
    value = os.environ.get(SLA_ENV)
    if not value:
        return float(DEFAULT_SLA_MINUTES)
    try:
        minutes = float(value)
    except ValueError:
        raise FreshnessError(f"{SLA_ENV}={value!r} is not a number of minutes") from None
    if minutes <= 0:
        raise FreshnessError(f"{SLA_ENV} must be a positive number of minutes, got {value!r}")
    return minutes


def default_version(db_path: str | Path) -> str:
    """The version `ragmart retrieve` reads: the published one, else $RAGMART_INDEX_VERSION
    or v1."""
    return resolve_target(Path(db_path)).version


def report(
    conn: duckdb.DuckDBPyConnection,
    *,
    index_version: str = "v1",
    database: str = "",
    sla_minutes: float | None = None,
    now: dt.datetime | None = None,
) -> FreshnessReport:
    """The freshness facts of index version `index_version` in the database `conn` has open
    (current catalog)."""
    try:
        facts = Relations(index_version).served_versions
    except InvalidVersionError as exc:
        raise FreshnessError(str(exc)) from None
    binding = None
    if table_exists(conn, INDEX_VERSIONS_TABLE):
        binding = conn.execute(
            f"select chunker_version, embedding_model, built_at, last_change_seq "
            f"from {INDEX_VERSIONS_TABLE} where index_version = $v", {"v": index_version},
        ).fetchone()
    build_vars = ([f"index_version: {index_version}"] if index_version != "v1" else []) + (
        [f"chunker_version: {binding[0]}"] if binding and binding[0] != DEFAULT_CHUNKER else [])
    build = "dbt build" + (f" --vars '{{{', '.join(build_vars)}}}'" if build_vars else "")
    for name in (facts, DOCUMENT_VERSIONS_TABLE):
        if not table_exists(conn, name):
            raise FreshnessError(
                f"{name} is missing from {database or 'the database'}; run `{build}` first"
            )
    sla = float(sla_minutes) if sla_minutes is not None else sla_minutes_default()
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    params = {"sla": sla * 60, "now": now}
    embedding_lag.register(conn)  # the SLA's rule, as the dbt test applies it
    lag_sql = (f"{embedding_lag.FUNCTION}(is_live, expected_chunks, lag_seconds, committed_at, "
               "cast($now as timestamp))")
    summary = conn.execute(
        f"""
        select
            count(*) filter (where is_live),
            count(*) filter (where is_live and not is_stale),
            count(*) filter (where is_stale),
            count(*) filter (where is_orphan),
            count(*) filter (where {lag_sql} > $sla),
            quantile_cont(lag_seconds, 0.5) filter (where is_live and lag_seconds is not null),
            quantile_cont(lag_seconds, 0.9) filter (where is_live and lag_seconds is not null),
            quantile_cont(lag_seconds, 0.99) filter (where is_live and lag_seconds is not null),
            max(lag_seconds) filter (where is_live and lag_seconds is not null)
        from {facts}
        """,
        params,
    ).fetchone()
    stale = _records(conn.execute(
        f"""
        select document_id, document_version, committed_at, expected_chunks, served_chunks
        from {facts} where is_stale
        order by committed_at, document_id limit {LISTED}
        """
    ))
    orphans = _records(conn.execute(
        f"""
        select document_id, document_version, version_state, superseded_by_version, served_rows
        from {facts} where is_orphan
        order by document_id, document_version limit {LISTED}
        """
    ))
    over_sla = _records(conn.execute(
        f"""
        select document_id, document_version, committed_at, embedded_at,
            {lag_sql} as lag_seconds
        from {facts}
        where {lag_sql} > $sla
        order by lag_seconds desc, document_id limit {LISTED}
        """,
        params,
    ))
    # the last change and build of this version (a database built before index_versions
    # existed: of the database)
    last_seq = binding[3] if binding and binding[3] is not None else None
    last = _records(conn.execute(
        f"""
        select document_id, document_version as change_seq,
            case when is_deleted then 'D' when version_number = 1 then 'I' else 'U' end as op,
            valid_from as commit_ts
        from {DOCUMENT_VERSIONS_TABLE}
        where $last_seq is null or document_version <= $last_seq
        order by document_version desc, document_id desc limit 1
        """,
        {"last_seq": last_seq},
    ))
    unread_count, unread, quarantined = 0, [], {}
    if table_exists(conn, QUARANTINE_TABLE):
        unread_count = conn.execute(
            f"select count(distinct source_file) from {QUARANTINE_TABLE} where source_line is null"
        ).fetchone()[0]
        unread = _records(conn.execute(
            f"""
            select source_file, quarantine_code, quarantine_reason
            from {QUARANTINE_TABLE} where source_line is null
            order by source_file limit {LISTED}
            """
        ))
        quarantined = dict(conn.execute(
            f"select quarantine_code, count(*) from {QUARANTINE_TABLE} group by 1 order by 1"
        ).fetchall())
    last_build = binding[2] if binding else None
    if last_build is None and table_exists(conn, RUNS_TABLE):
        last_build = conn.execute(f"select max(finished_at) from {RUNS_TABLE}").fetchone()[0]
    return FreshnessReport(
        database=database,
        index_version=index_version,
        chunker_version=binding[0] if binding else None,
        embedding_model=binding[1] if binding else None,
        checked_at=now.isoformat(),
        live_versions=int(summary[0]),
        fully_served_versions=int(summary[1]),
        stale_count=int(summary[2]),
        orphan_count=int(summary[3]),
        over_sla_count=int(summary[4]),
        sla_minutes=sla,
        lag_seconds={
            "p50": summary[5], "p90": summary[6], "p99": summary[7], "max": summary[8],
        },
        last_change_applied=last[0] if last else None,
        last_build_at=_iso(last_build),
        stale=stale,
        orphans=orphans,
        over_sla=over_sla,
        unread_file_count=int(unread_count),
        unread_files=unread,
        quarantined=quarantined,
    )


def freshness(db_path: str | Path, *, index_version: str | None = None,
              sla_minutes: float | None = None, now: dt.datetime | None = None
              ) -> FreshnessReport:
    """Open `db_path` read-only and report the freshness of `index_version` (default: the
    version retrieval reads, see default_version)."""
    path = Path(db_path)
    if not path.exists():
        raise FreshnessError(f"database {path} does not exist; run `make run` or `dbt build`")
    version = index_version or default_version(path)
    conn = connect(path, read_only=True)
    try:
        return report(conn, index_version=version, database=str(path),
                      sla_minutes=sla_minutes, now=now)
    finally:
        conn.close()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def render(result: FreshnessReport) -> str:
    """The report as text for a person."""
    lag = result.lag_seconds
    lines = [
        f"freshness of index version {result.index_version} in {result.database} at "
        f"{result.checked_at} (UTC)",
        f"  built with chunker {result.chunker_version or 'unknown'}, embedding model "
        f"{result.embedding_model or 'unknown'}",
        f"  live document versions: {result.live_versions} "
        f"({result.fully_served_versions} fully served)",
        f"  lag commit -> vectors ready: p50 {_duration(lag['p50'])}, p90 "
        f"{_duration(lag['p90'])}, p99 {_duration(lag['p99'])}, max {_duration(lag['max'])}",
        f"  over the SLA ({result.sla_minutes:g} min): {result.over_sla_count}",
        f"  stale (live, not fully served): {result.stale_count}",
        f"  orphans (served, not live): {result.orphan_count}",
    ]
    change = result.last_change_applied
    if change:
        lines.append(
            f"  last change applied: {change['document_id']} change_seq {change['change_seq']} "
            f"({change['op']}) committed {change['commit_ts']}"
        )
    lines.append(f"  last build: {result.last_build_at or 'unknown'}")
    for title, rows, fmt in (
        ("stale", result.stale,
         "{document_id} v{document_version}: {served_chunks}/{expected_chunks} chunks served"),
        ("orphans", result.orphans,
         "{document_id} v{document_version}: {version_state}, {served_rows} rows served"),
        ("over the SLA", result.over_sla,
         "{document_id} v{document_version}: committed {committed_at}"),
    ):
        if rows:
            lines.append(f"  {title}:")
            lines += [f"    - {fmt.format(**row)}" for row in rows]
    if result.quarantined:
        counts = ", ".join(f"{code} {n}" for code, n in result.quarantined.items())
        lines.append(f"  quarantined (fct_quarantined_events): {counts}")
    if result.unread_file_count:
        lines.append(f"  landing files not read: {result.unread_file_count}")
        lines += [f"    - {row['source_file']}: {row['quarantine_reason']}"
                  for row in result.unread_files]
    lines.append("  healthy" if result.healthy else "  NOT healthy")
    return "\n".join(lines)
