"""The serving pointer: which published snapshot serves, and its history.

`<publish dir>/serving.json` names the snapshot that serves; every change of it is one atomic
rename (`record`), so a reader sees the old or the new pointer, never half of one, and
`history.jsonl` keeps every publication. Readers resolve the pointer once per request
(`resolve_target`). Publishing, rolling back and purging (ragmart.serving.publish, .rollback,
.purge) change the pointer only through `record` and `replace_snapshot`; this module is what
they and every reader share, and it imports none of them (nor retrieval or quality).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragmart.config import Settings
from ragmart.relations import DEFAULT_VERSION, Relations, check_version


class ServingError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServingTarget:
    """Where a reader goes: a database file and the version's two relations."""

    database: Path
    version: str
    published: bool

    @property
    def table(self) -> str:
        return Relations(self.version).serving

    @property
    def index_table(self) -> str:
        return Relations(self.version).index


@dataclass
class Publication:
    version: str
    snapshot: str  # file name inside the publish dir
    published_at: str
    embedding_model: str | None = None
    chunker_version: str | None = None
    chunks: int = 0
    metrics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    forced: bool = False
    gate_failures: list[str] = field(default_factory=list)
    action: str = "publish"  # publish, rollback, or refresh (re-evaluated after a purge)
    evaluated_at: str | None = None  # when `report` was measured on the snapshot
    # freshness marks of the snapshot (ragmart.serving.lag): when its version was last built,
    # the newest ingested_at of the landed files it holds, and the build database's
    # modification time just after the publish (ragmart.serving.build_db.mtime_ns: a later one
    # means something wrote it since)
    built_at: str | None = None
    ingested_through: str | None = None
    build_db_mtime_ns: int | None = None
    # with RAGMART_SERVING_URL: what the publish wrote to PostgreSQL (publication_id, whether
    # incremental, rows written and removed: ragmart.serving.postgres.publish)
    postgres: dict | None = None


def publish_dir(db_path: Path) -> Path:
    configured = os.environ.get("RAGMART_PUBLISH_DIR")
    return Path(configured) if configured else Path(db_path).resolve().parent / "published"


def pointer_path(db_path: Path) -> Path:
    return publish_dir(db_path) / "serving.json"


def history_path(db_path: Path) -> Path:
    return publish_dir(db_path) / "history.jsonl"


def current_publication(db_path: Path) -> Publication | None:
    path = pointer_path(db_path)
    if not path.exists():
        return None
    return Publication(**json.loads(path.read_text()))


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of `path`, None when absent: a reader that keeps a file open
    compares stamps to know, with one stat, whether the file was replaced or rewritten."""
    try:
        st = os.stat(path)  # not Path(path).stat(): per request in `ragmart serve`
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def history(db_path: Path) -> list[Publication]:
    path = history_path(db_path)
    if not path.exists():
        return []
    return [Publication(**json.loads(line)) for line in path.read_text().splitlines() if line]


def resolve_target(db_path: Path | None = None, version: str | None = None) -> ServingTarget:
    """The published snapshot when one serves (and no other version is asked for), else the
    build database with `version` (default: RAGMART_INDEX_VERSION or v1)."""
    db_path = Path(db_path) if db_path is not None else Settings.from_env().db_path
    pub = current_publication(db_path)
    if pub is not None and (version is None or version == pub.version):
        return ServingTarget(publish_dir(db_path) / pub.snapshot, pub.version, True)
    version = check_version(version or os.environ.get("RAGMART_INDEX_VERSION", DEFAULT_VERSION))
    return ServingTarget(db_path, version, False)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record(db_path: Path, publication: Publication) -> None:
    line = json.dumps(asdict(publication), sort_keys=True)
    with open(history_path(db_path), "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    # the switch: one rename, readers see the old or the new pointer, never half of one
    write_atomic(pointer_path(db_path), json.dumps(asdict(publication), indent=2))


def replace_snapshot(db_path: Path, old_name: str, new_name: str) -> bool:
    """Serve `new_name` wherever `old_name` served or may be rolled back to (a purged copy of a
    snapshot, ragmart.serving.purge): the history is rewritten with the new name, then
    serving.json is switched with one atomic rename, the same switch as a publish. A reader that
    opened the old file keeps reading it until it reopens; the next reader opens the new one.
    Returns whether serving.json was switched. Idempotent."""
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
