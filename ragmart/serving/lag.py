"""How far what readers see is behind what landed and what was built.

`ragmart freshness` measures the build database; readers see the published snapshot. Two gaps
separate them, and this module measures both, for the CLI (`ragmart freshness`, `retrieve`):

* the serving snapshot is behind the newest build (`serving_state`): a build finished after the
  snapshot was taken (index_versions.built_at of the serving version, in the build database,
  against the snapshot's own). Without `ragmart build --watch --publish` this is the normal state
  of a watch loop, and readers must be told. The check stays cheap and never waits for a build:
  when the build database was not modified since the publish (its mtime,
  ragmart.serving.build_db.mtime_ns, recorded at publish time) nothing is opened; otherwise it
  is opened read-only once, and a build holding it makes the answer "unknown", not an error.
* the serving lag (`serving_lag`): for each landed file reading (a CDC batch) of the recent
  past, per layout, the time from its landing (the file's modification time) to the first
  publication whose snapshot holds it (the publication's `ingested_through` covers the file's
  ingestion), or to now while no publication does yet; files in the landing zone that no
  build ingested yet count as landed and not visible. Percentiles over those changes, the
  current lag (the age of the oldest change landed and not visible yet; with nothing
  published, readers read the build database, where a change is visible once ingested), and
  an SLA on the current lag, like a consumer-lag alert: it fires while a change waits too long
  and clears once it is visible (a past slow change stays in the percentiles, not in the
  alert). (The SLA on the build's own lag, commit to vectors, is
  ragmart.quality.embedding_lag.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragmart.catalog import table_exists
from ragmart.relations import INDEX_VERSIONS_TABLE, LANDED_TABLE
from ragmart.serving.build_db import mtime_ns, open_build_db_if_free
from ragmart.serving.pointer import Publication, current_publication, history
from ragmart.serving.publish import auto_publish_status

UNKNOWN = "unknown"
SLA_ENV = "RAGMART_SERVING_SLA_SECONDS"
RECENT_CHANGES = 100  # landed file readings per layout the percentiles are taken over


class ServingLagError(ValueError):
    pass


def _naive(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


@dataclass(frozen=True)
class ServingState:
    """The serving snapshot against the newest build of its version."""

    version: str
    snapshot: str
    published_at: str
    serving_built_at: str | None
    build_built_at: str | None  # UNKNOWN while a build holds the database
    serving_behind_build: bool | None  # None: unknown

    def to_dict(self) -> dict:
        return asdict(self)

    def warning(self) -> str | None:
        if self.serving_behind_build:
            return (f"serving snapshot {self.snapshot} ({self.version}, built "
                    f"{self.serving_built_at}) is older than the newest build "
                    f"({self.build_built_at}): answers miss the changes built since; run "
                    f"`ragmart publish {self.version}` or `ragmart build --watch --publish`")
        return None


def serving_state(db_path: str | Path) -> ServingState | None:
    """The serving publication against the build database's newest build of its version;
    None when nothing is published (readers then read the build database itself)."""
    db_path = Path(db_path)
    pub = current_publication(db_path)
    if pub is None:
        return None
    built = _build_built_at(db_path, pub)
    behind = None
    if built != UNKNOWN:
        serving, newest = _naive(pub.built_at), _naive(built)
        behind = bool(newest and (serving is None or newest > serving))
    return ServingState(pub.version, pub.snapshot, pub.published_at, pub.built_at, built, behind)


def _build_built_at(db_path: Path, pub: Publication) -> str | None:
    if pub.build_db_mtime_ns is not None and mtime_ns(db_path) == pub.build_db_mtime_ns:
        return pub.built_at  # nothing wrote the build database since the publish
    if not db_path.exists():
        return None
    conn = open_build_db_if_free(db_path)
    if conn is None:
        return UNKNOWN
    try:
        if not table_exists(conn, INDEX_VERSIONS_TABLE):
            return None
        row = conn.execute(f"select built_at from {INDEX_VERSIONS_TABLE} "
                           "where index_version = $v", {"v": pub.version}).fetchone()
        return row[0].isoformat() if row and row[0] else None
    finally:
        conn.close()


def sla_seconds_default() -> float | None:
    from ragmart.config import seconds_from_env

    try:
        return seconds_from_env(SLA_ENV, strictly_positive=True)
    except ValueError as exc:
        raise ServingLagError(f"{exc}; write e.g. 60, or unset it") from None


@dataclass(frozen=True)
class LayoutLag:
    layout: str
    changes: int  # landed file readings measured (the most recent, per layout)
    pending: int  # of them, landed and not visible to readers yet
    newest_landed_at: str | None
    newest_visible_landed_at: str | None  # the newest landed change the serving snapshot holds
    current_lag_seconds: float  # age of the oldest landed change not visible (0: none)
    lag_seconds: dict[str, float | None] = field(default_factory=dict)  # p50, p95, max


@dataclass(frozen=True)
class ServingLag:
    checked_at: str
    build_database: str  # "unknown" when a build held it
    sla_seconds: float | None
    layouts: list[LayoutLag]

    @property
    def over_sla(self) -> bool:
        if self.sla_seconds is None:
            return False
        return any(lay.current_lag_seconds > self.sla_seconds for lay in self.layouts)

    def to_dict(self) -> dict:
        return asdict(self) | {"over_sla": self.over_sla}


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile of `values` by linear interpolation (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _readings(db_path: Path, limit: int) -> list[tuple] | None:
    """(layout, source_file, file_size, landed_at, first ingested_at) of the most recent landed
    file readings per layout in the build database; None while a build holds it."""
    if not db_path.exists():
        return []
    conn = open_build_db_if_free(db_path)
    if conn is None:
        return None
    try:
        if not table_exists(conn, LANDED_TABLE):
            return []
        return conn.execute(f"""
            with readings as (
                select source_layout, source_file, file_size, file_sha256,
                    min(file_modified_at) as landed_at, min(ingested_at) as ingested_at
                from {LANDED_TABLE}
                group by all
            )
            select source_layout, source_file, file_size, landed_at, ingested_at
            from readings
            qualify row_number() over (
                partition by source_layout order by landed_at desc, source_file desc) <= $n
        """, {"n": limit}).fetchall()
    finally:
        conn.close()


def _landed_not_ingested(landing_dir: Path | str, readings: list[tuple]) -> list[tuple]:
    """(layout, relative path, landed_at) of landing-zone files no build read yet (as they are
    now: a file rewritten since its reading counts again). The zone is a folder or an s3://
    bucket/prefix (the times are the store's: mtime, S3 LastModified)."""
    from ragmart.ingest.landing import LAYOUTS
    from ragmart.ingest.store import LandingZoneError, open_store

    known: dict[tuple[str, int], list[dt.datetime]] = {}
    for _, source_file, size, landed_at, _ in readings:
        known.setdefault((source_file, size), []).append(landed_at)
    try:
        entries = open_store(landing_dir).list()
    except LandingZoneError:
        return []  # no landing zone: nothing landed (the build reports it)
    out = []
    for entry in entries:
        layout, _, name = entry.key.partition("/")
        if layout not in LAYOUTS or "/" in name or name.startswith("."):
            continue
        if entry.size == 0:
            continue  # an empty file carries no change (and no build records a reading)
        seen = known.get((entry.key, entry.size), [])
        # read_blob's modification times may be whole seconds
        if not any(abs((entry.last_modified - t).total_seconds()) < 1.0 for t in seen):
            out.append((layout, entry.key, entry.last_modified))
    return out


def serving_lag(db_path: str | Path, landing_dir: str | Path, *,
                sla_seconds: float | None = None, recent: int = RECENT_CHANGES,
                now: dt.datetime | None = None) -> ServingLag:
    """The landed-to-visible lag per layout over the `recent` newest landed file readings (see
    the module docstring); the build database is read without waiting for a build."""
    db_path = Path(db_path)
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sla = sla_seconds if sla_seconds is not None else sla_seconds_default()
    if sla is not None and not sla > 0:
        raise ServingLagError(f"--serving-sla-seconds must be positive, got {sla:g}")
    readings = _readings(db_path, recent)
    serving = current_publication(db_path)
    through = _naive(serving.ingested_through) if serving else None
    # when each ingestion became visible: the first publication whose snapshot covers it
    published = sorted(((_naive(p.published_at), _naive(p.ingested_through))
                        for p in history(db_path)
                        if p.action == "publish" and p.ingested_through),
                       key=lambda pair: pair[0])
    by_layout: dict[str, list[tuple[dt.datetime, dt.datetime | None]]] = {}
    for layout, _, _, landed_at, ingested_at in readings or []:
        if layout is None:
            continue  # a file outside the layouts carries no change (freshness lists it unread)
        visible_at = None
        if serving is None:
            visible_at = ingested_at  # nothing published: readers read the build database
        elif through is not None and ingested_at <= through:
            visible_at = next((at for at, covered in published if covered >= ingested_at),
                              None) or _naive(serving.published_at)
        by_layout.setdefault(layout, []).append((landed_at, visible_at))
    for layout, _, landed_at in _landed_not_ingested(landing_dir, readings or []):
        by_layout.setdefault(layout, []).append((landed_at, None))
    layouts = []
    for layout in sorted(by_layout):
        changes = sorted(by_layout[layout], key=lambda c: c[0], reverse=True)[:recent]
        lags = [max(((visible or now) - landed).total_seconds(), 0.0)
                for landed, visible in changes]
        pending = [landed for landed, visible in changes if visible is None]
        visible = [landed for landed, seen in changes if seen is not None]
        layouts.append(LayoutLag(
            layout=layout,
            changes=len(changes),
            pending=len(pending),
            newest_landed_at=changes[0][0].isoformat() if changes else None,
            newest_visible_landed_at=max(visible).isoformat() if visible else None,
            current_lag_seconds=max(((now - t).total_seconds() for t in pending), default=0.0),
            lag_seconds={"p50": quantile(lags, 0.5), "p95": quantile(lags, 0.95),
                         "max": max(lags, default=None)},
        ))
    return ServingLag(now.isoformat(), UNKNOWN if readings is None else str(db_path), sla,
                      layouts)


def render(state: ServingState | None, lag: ServingLag, db_path: Path) -> str:
    """The serving part of `ragmart freshness` for a person."""
    lines = ["serving (what readers see):"]
    if state is None:
        lines.append("  nothing published: readers read the build database")
    else:
        lines.append(f"  snapshot {state.snapshot} ({state.version}), published "
                     f"{state.published_at}, built {state.serving_built_at or 'unknown'}")
        newest = state.build_built_at or "unknown"
        lines.append(
            "  newest build: " + newest + (
                " (a build holds the database)" if newest == UNKNOWN else
                ": the snapshot is BEHIND it" if state.serving_behind_build else
                ": the snapshot is current"))
    attempt = auto_publish_status(db_path)
    if attempt is not None:
        lines.append(f"  last automatic publish ({attempt.attempted_at}): {attempt.summary()}")
    if lag.build_database == UNKNOWN:
        lines.append("  serving lag: unknown (a build holds the build database)")
    for lay in lag.layouts:
        pct = lay.lag_seconds
        lines.append(
            f"  serving lag {lay.layout}: now {lay.current_lag_seconds:.1f} s "
            f"({lay.pending} of {lay.changes} recent changes not visible); landed -> visible "
            f"p50 {_seconds(pct['p50'])}, p95 {_seconds(pct['p95'])}, max {_seconds(pct['max'])}"
            f"; newest landed {lay.newest_landed_at}, newest visible "
            f"{lay.newest_visible_landed_at or 'none'}")
    if lag.sla_seconds is not None:
        lines.append(f"  serving SLA {lag.sla_seconds:g} s: "
                     + ("OVER: a landed change waits longer" if lag.over_sla else "met"))
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"
