"""Compliance purge: remove a document's text and vectors from every file of a deployment.

What belongs to the document is decided by the readers ingestion uses, never by a second
parser: a landing record is the document's when ``ragmart.ingest.cdc`` reads its
``document_id`` as the id (however the file spells it: JSON escapes, CSV quoting, a header in
another case, a byte-order mark, a JSON array, parquet), or when it is a quarantined record
that has no readable id and whose raw text names the id (:func:`belongs`). A landing file is
rewritten only when it holds such a record, by ``ragmart.ingest.cdc.without_records`` (every other
byte
kept), so `dbt source freshness` sees no other file change. In a database the document's rows
are those keyed by its ``document_id``, quarantined raw records by the same rule, the chunk ids
of its chunks (vector index and delta tables) and the embedding-cache rows of texts no other
document uses; each database file is then copied into a fresh file, because DuckDB reuses
freed blocks without erasing them.

A purge is journaled, so it is never left half done. Before any change the id goes into the
journal (``purge_journal.json``) and into the registry of purged ids (``purged_documents.json``,
which ingestion honours: a replayed file cannot bring the document back). Then come the steps,
each idempotent and marked done in the journal when it completes:

1. ``artifacts``: lines of dbt logs and reports (``$DBT_LOG_PATH``, ``$DBT_TARGET_PATH``, eval
   reports under it) that carry the id or a sentence of the document are removed; any other
   artifact file carrying them (run_results.json, manifest.json, ...) is deleted, dbt writes it
   anew. This step comes first because the sentences to look for are read from the document's
   records, which the later steps remove.
2. ``landing``: the document's records leave every landing file ingestion reads.
3. ``snapshots``: each published snapshot holding the document is replaced by a purged copy
   under a new name, and serving.json and the history are switched to it atomically
   (``ragmart.serving.publish.replace_snapshot``); a reader that has the old file open is never
   written
   under, it keeps its file until it reopens. The old file is then removed.
4. ``database``: the build database is purged in place and rewritten.
5. ``unreadable``: a landing file that ingestion cannot read as records (a corrupt parquet file,
   a broken CSV header, a name it does not accept) but whose bytes name the id stops the purge
   here with an error naming it: only the operator can delete or re-land it. The purge stays
   journaled and the next run finishes it.

An interrupted purge (a locked database, a kill at any point) stays in the journal and the
next ``ragmart purge`` completes it, as does the start of the next dbt invocation
(``ragmart.build.dbt_plugin``). Temporary files of a purge carry ``.purge-`` in their names and are
removed by the next run. One purge runs at a time per deployment (``purge_journal.lock``).

Logs, reports and the unreadable files of step 5 are not records, so there the document is
recognised by bytes: its id as a whole word (``hr-relocation`` does not match inside
``hr-relocation-assistance``) or one of its distinctive sentences (:func:`sentences`), each in
UTF-8, UTF-16 and JSON-escaped form.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import fcntl
import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ragmart.build.faults import fault_point
from ragmart.config import Settings
from ragmart.duck import configure_connection, connect
from ragmart.ingest.cdc import LandingRecord, landing_records, without_records
from ragmart.serving.pointer import ServingError, publish_dir, replace_snapshot

REGISTRY_NAME = "purged_documents.json"
JOURNAL_NAME = "purge_journal.json"
STEPS = ("artifacts", "landing", "snapshots", "database", "unreadable")
TEMP_MARK = ".purge-"
# artifacts read line by line: a line carrying the document is removed, the rest kept
LINE_ARTIFACTS = (".log", ".md", ".txt", ".jsonl", ".csv", ".out")
# a sentence shorter than this is not distinctive enough to remove a line of a log for
MIN_SENTENCE = 30
SENTENCE_PREFIX = 60
# the columns holding the document's own words (not ids, hashes or invocation ids)
TEXT_COLUMNS = ("content", "title", "chunk_text", "section", "metadata", "raw_record")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class PurgeError(ServingError):
    pass


# --------------------------------------------------------------------------- where things are


@dataclass(frozen=True)
class Deployment:
    """The files a purge covers: the build database, its snapshots, the landing zone, and the
    dbt target and log directories (eval reports live under the target dir)."""

    db_path: Path
    landing_dir: Path | None
    artifact_dirs: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls) -> Deployment:
        settings = Settings.from_env()
        base = Path(os.environ.get("DBT_PROJECT_DIR", "."))
        dirs = tuple(
            path if path.is_absolute() else base / path
            for path in (Path(os.environ.get("DBT_TARGET_PATH", "target")),
                         Path(os.environ.get("DBT_LOG_PATH", "logs")))
        )
        return cls(settings.db_path, settings.landing_dir, dirs)

    @property
    def publish_dir(self) -> Path:
        return publish_dir(self.db_path)

    def landing_files(self) -> list[tuple[str, Path]]:
        """(relative path as ingestion names it, file) of every file under the landing zone, as
        ingestion lists it (ragmart.ingest.landing.list_landing_files): the files it reads, the
        ones it
        reports as unsupported, and the hidden ones it skips (a partial upload may hold the text
        too)."""
        if self.landing_dir is None or not Path(self.landing_dir).is_dir():
            return []
        from ragmart.ingest.landing import LandingZoneError, list_landing_files

        try:
            listed = list_landing_files(self.landing_dir)
        except LandingZoneError:  # no layout folder: nothing ingestion would read
            return []
        return [(f.relative_path, Path(f.path)) for f in listed]

    def snapshots(self) -> list[Path]:
        folder = self.publish_dir
        return sorted(folder.glob("v*.duckdb")) if folder.is_dir() else []


def registry_path(db_path: Path) -> Path:
    configured = os.environ.get("RAGMART_PURGE_REGISTRY")
    return Path(configured) if configured else Path(db_path).resolve().parent / REGISTRY_NAME


def journal_path(db_path: Path) -> Path:
    return registry_path(db_path).with_name(JOURNAL_NAME)


def load_registry(path: Path) -> dict[str, int]:
    """document_id -> highest change_seq purged (events at or below it are never ingested)."""
    if not path.exists():
        return {}
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}


def load_journal(db_path: Path) -> dict[str, dict]:
    """Purges begun and not completed: document_id -> {"max_change_seq", "started_at",
    "done": [steps]}."""
    path = journal_path(db_path)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- what belongs to it


def _text_forms(document_id: str) -> set[str]:
    """The id as a raw record may spell it: plainly, JSON-escaped, CSV-quoted."""
    return {document_id, json.dumps(document_id)[1:-1],
            json.dumps(document_id, ensure_ascii=False)[1:-1], document_id.replace('"', '""')}


@functools.lru_cache(maxsize=64)
def _id_pattern(document_id: str) -> re.Pattern[str]:
    """The id as a whole word in any of its spellings: "hr-relocation" is not found inside
    "hr-relocation-assistance", nor a short id inside every longer word."""
    forms = sorted(_text_forms(document_id), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, forms)) + r")(?![\w-])")


def belongs(row: dict, document_id: str) -> bool:
    """Whether a row read by ragmart.ingest.cdc is a record of the document: its document_id is
    the id,
    or it is quarantined without a readable id and its raw text names the id (a whole word)."""
    if row.get("document_id") is not None:
        return row["document_id"] == document_id
    raw = row.get("raw_record")
    return (row.get("quarantine_reason") is not None and raw is not None
            and _id_pattern(document_id).search(raw) is not None)


def is_purged(row: dict, registry: dict[str, int]) -> bool:
    """Whether ingestion drops a row read by ragmart.ingest.cdc because of a purge (`registry` as
    load_registry returns it): a record of a purged document at or below the highest change_seq
    purged (a later event of the same id is a new document and is ingested)."""
    if not registry:
        return False
    document_id = row.get("document_id")
    if document_id is not None:
        if document_id not in registry:
            return False
        return row.get("change_seq") is None or row["change_seq"] <= registry[document_id]
    return any(belongs(row, purged) for purged in registry)


def _byte_forms(text: str) -> set[bytes]:
    forms = set()
    for form in _text_forms(text):
        forms |= {form.encode("utf-8"), form.encode("utf-16-le"), form.encode("utf-16-be")}
    return forms


def sentences(texts: Iterable[str | None]) -> set[str]:
    """Distinctive sentences of the document's texts, as searched for in logs and reports: every
    sentence or line of at least MIN_SENTENCE characters, cut to its first SENTENCE_PREFIX."""
    out = set()
    for text in texts:
        for part in _SENTENCE_END.split(text or ""):
            part = part.strip()
            if len(part) >= MIN_SENTENCE:
                out.add(part[:SENTENCE_PREFIX])
    return out


# --------------------------------------------------------------------------- databases


def _tables_with(conn: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """Base tables (views derive from them) of this database having `column`."""
    return [r[0] for r in conn.execute(
        "select c.table_name from information_schema.columns as c "
        "inner join information_schema.tables as t "
        "on t.table_catalog = c.table_catalog and t.table_schema = c.table_schema "
        "and t.table_name = c.table_name "
        "where c.column_name = $c and c.table_catalog = current_database() "
        "and t.table_type = 'BASE TABLE' order by c.table_name", {"c": column}).fetchall()]


def _hnsw_indexes(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "select index_name, table_name from duckdb_indexes() "
        "where database_name = current_database() and sql ilike '%using hnsw%'").fetchall()]


def _quarantined_rowids(conn: duckdb.DuckDBPyConnection, table: str,
                        document_id: str) -> list[int]:
    """Quarantined rows of `table` without a document id whose raw record names the id."""
    return [rowid for rowid, reason, raw in conn.execute(
        f'select rowid, quarantine_reason, raw_record from "{table}" '
        "where document_id is null and quarantine_reason is not null").fetchall()
        if belongs({"document_id": None, "quarantine_reason": reason, "raw_record": raw},
                   document_id)]


@dataclass
class _DatabaseRows:
    """The document's rows in one database: table -> row count, with what deleting needs."""

    counts: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, list[int]] = field(default_factory=dict)
    chunk_ids: set[str] = field(default_factory=set)
    orphaned_hashes: set[str] = field(default_factory=set)
    max_change_seq: int | None = None
    texts: list[str] = field(default_factory=list)


def _database_rows(conn: duckdb.DuckDBPyConnection, document_id: str, *,
                   with_texts: bool = False) -> _DatabaseRows:
    found = _DatabaseRows()
    keyed = set(_tables_with(conn, "document_id"))
    for table in sorted(keyed):
        n = conn.execute(f'select count(*) from "{table}" where document_id = $d',
                         {"d": document_id}).fetchone()[0]
        if n:
            found.counts[table] = n
    for table in sorted(keyed & set(_tables_with(conn, "raw_record"))
                        & set(_tables_with(conn, "quarantine_reason"))):
        rowids = _quarantined_rowids(conn, table, document_id)
        if rowids:
            found.quarantined[table] = rowids
            found.counts[table] = found.counts.get(table, 0) + len(rowids)
    chunk_tables = [t for t in _tables_with(conn, "chunk_hash") if t in keyed]
    hashes: set[str] = set()
    for table in chunk_tables:
        for chunk_hash, chunk_id in conn.execute(
            f'select chunk_hash, chunk_id from "{table}" where document_id = $d',
            {"d": document_id},
        ).fetchall():
            hashes.add(chunk_hash)
            found.chunk_ids.add(chunk_id)
    if hashes:
        # texts of this document that no chunk of another document uses
        still_used: set[str] = set()
        for table in chunk_tables:
            still_used |= {r[0] for r in conn.execute(
                f'select distinct chunk_hash from "{table}" where document_id <> $d '
                "and chunk_hash in (select unnest($h::varchar[]))",
                {"d": document_id, "h": sorted(hashes)}).fetchall()}
        found.orphaned_hashes = hashes - still_used
    for table in _tables_with(conn, "chunk_hash"):
        if table not in keyed and found.orphaned_hashes:
            n = conn.execute(
                f'select count(*) from "{table}" where chunk_hash in '
                "(select unnest($h::varchar[]))", {"h": sorted(found.orphaned_hashes)},
            ).fetchone()[0]
            if n:
                found.counts[table] = n
    for table in _tables_with(conn, "chunk_id"):
        if table not in keyed and found.chunk_ids:
            n = conn.execute(
                f'select count(*) from "{table}" where chunk_id in (select unnest($c::varchar[]))',
                {"c": sorted(found.chunk_ids)},
            ).fetchone()[0]
            if n:
                found.counts[table] = n
    seqs = [r[0] for t in sorted(keyed & set(_tables_with(conn, "change_seq")))
            for r in conn.execute(f'select max(change_seq) from "{t}" where document_id = $d',
                                  {"d": document_id}).fetchall() if r[0] is not None]
    found.max_change_seq = max(seqs) if seqs else None
    if with_texts and found.counts:
        for table in sorted(keyed):
            columns = [r[0] for r in conn.execute(
                "select column_name from information_schema.columns where table_name = $t "
                "and table_catalog = current_database()", {"t": table}).fetchall()
                if r[0] in TEXT_COLUMNS]
            for column in columns:
                found.texts += [r[0] for r in conn.execute(
                    f'select distinct "{column}" from "{table}" where document_id = $d '
                    f'and "{column}" is not null', {"d": document_id}).fetchall()]
        for table, rowids in found.quarantined.items():
            found.texts += [r[0] for r in conn.execute(
                f'select raw_record from "{table}" where rowid in (select unnest($r::bigint[]))',
                {"r": rowids}).fetchall() if r[0]]
    return found


def _open(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not Path(path).exists():
        raise PurgeError(f"database {path} does not exist; set RAGMART_DB to the deployment's "
                         "database")
    try:
        return connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        raise PurgeError(
            f"{path} is locked by another process (a dbt build, or a reader of the build "
            "database); the purge is journaled: run `ragmart purge` again when it is free, or the "
            f"next dbt build completes it ({str(exc).splitlines()[0]})"
        ) from exc


def _inspect_database(path: Path, document_id: str, *, with_texts: bool = False) -> _DatabaseRows:
    conn = _open(path, read_only=True)
    try:
        return _database_rows(conn, document_id, with_texts=with_texts)
    finally:
        conn.close()


def _delete_from_database(path: Path, document_id: str) -> dict[str, int]:
    """Delete the document's rows in place (HNSW indexes re-created around the delete)."""
    conn = _open(path, read_only=False)
    try:
        found = _database_rows(conn, document_id)
        if not found.counts:
            return {}
        indexes = _hnsw_indexes(conn)
        # an HNSW index must never live through a delete (vss defect): drop, delete, re-create
        for index_name, _table in indexes:
            conn.execute(f'drop index "{index_name}"')
        for table in _tables_with(conn, "document_id"):
            conn.execute(f'delete from "{table}" where document_id = $d', {"d": document_id})
        for table, rowids in found.quarantined.items():
            conn.execute(f'delete from "{table}" where rowid in (select unnest($r::bigint[]))',
                         {"r": rowids})
        keyed = set(_tables_with(conn, "document_id"))
        for table in _tables_with(conn, "chunk_hash"):
            if table not in keyed and found.orphaned_hashes:
                conn.execute(f'delete from "{table}" where chunk_hash in '
                             "(select unnest($h::varchar[]))", {"h": sorted(found.orphaned_hashes)})
        for table in _tables_with(conn, "chunk_id"):
            if table not in keyed and found.chunk_ids:
                conn.execute(f'delete from "{table}" where chunk_id in '
                             "(select unnest($c::varchar[]))", {"c": sorted(found.chunk_ids)})
        for index_name, table in indexes:
            conn.execute(f'create index "{index_name}" on "{table}" using hnsw (embedding) '
                         "with (metric = 'cosine')")
        conn.execute("checkpoint")
        return found.counts
    finally:
        conn.close()


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _rewrite_database(path: Path) -> None:
    """Copy every table into a fresh file and swap it in: freed blocks of the old file, which
    still hold the purged bytes, are gone. HNSW indexes are re-created with their metric
    (COPY FROM DATABASE would lose metric='cosine'); other indexes are copied."""
    fresh = path.with_name(f".{path.name}{TEMP_MARK}fresh")
    fresh.unlink(missing_ok=True)
    conn = duckdb.connect(":memory:")
    try:
        configure_connection(conn)
        try:
            conn.execute(f"attach '{_quote(path)}' as old (read_only)")
        except duckdb.IOException as exc:
            raise PurgeError(f"{path} is locked by another process; run `ragmart purge` again "
                             f"when it is free ({str(exc).splitlines()[0]})") from exc
        conn.execute(f"attach '{_quote(fresh)}' as fresh")
        conn.execute("copy from database old to fresh")
        conn.execute("use fresh")
        for index_name, table in _hnsw_indexes(conn):
            conn.execute(f'drop index "{index_name}"')
            conn.execute(f'create index "{index_name}" on "{table}" using hnsw (embedding) '
                         "with (metric = 'cosine')")
        conn.execute("checkpoint")
        conn.execute("use memory")
        conn.execute("detach fresh")
        conn.execute("detach old")
    finally:
        conn.close()
    os.replace(fresh, path)
    Path(f"{path}.wal").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the plan


@dataclass
class PurgePlan:
    """Every file and row a purge of one document changes (what --dry-run prints)."""

    document_id: str
    landing: dict[str, list[int | None]] = field(default_factory=dict)  # file -> record lines
    databases: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> table -> rows
    snapshots: dict[str, str] = field(default_factory=dict)  # snapshot -> its purged copy
    artifacts: dict[str, str] = field(default_factory=dict)  # file -> what happens to it
    unreadable: list[str] = field(default_factory=list)  # landing files to delete by hand
    max_change_seq: int | None = None

    @property
    def found(self) -> bool:
        """Whether any record of the document exists (artifacts alone do not make one)."""
        return bool(self.landing or self.databases or self.snapshots or self.unreadable)

    def to_dict(self) -> dict:
        return {"document_id": self.document_id, "landing": self.landing,
                "databases": self.databases, "snapshots": self.snapshots,
                "artifacts": self.artifacts, "unreadable": self.unreadable,
                "max_change_seq": self.max_change_seq}


def _landing_hits(dep: Deployment, document_id: str) -> list[tuple[Path, str, bytes,
                                                                    list[LandingRecord], bool]]:
    """(file, relative path, bytes, the document's records, whether they are every record of
    the file) of each landing file holding a record of the document."""
    hits = []
    for rel, path in dep.landing_files():
        data = path.read_bytes()
        every = landing_records(rel, data)
        records = [r for r in every if belongs(r.row, document_id)]
        if records:
            spans = {r.span for r in every}
            only = None not in spans and spans <= {r.span for r in records}
            hits.append((path, rel, data, records, only))
    return hits


def _purged_name(name: str) -> str:
    """v1-<stamp>.duckdb -> v1-<stamp>-purged1.duckdb -> v1-<stamp>-purged2.duckdb ..."""
    stem = name.removesuffix(".duckdb")
    match = re.fullmatch(r"(.*)-purged(\d+)", stem)
    base, n = (match[1], int(match[2])) if match else (stem, 0)
    return f"{base}-purged{n + 1}.duckdb"


def _artifact_files(dep: Deployment) -> list[Path]:
    files: set[Path] = set()
    for folder in dep.artifact_dirs:
        if folder.is_dir():
            files |= {p for p in folder.rglob("*") if p.is_file()}
    return sorted(files)


@dataclass(frozen=True)
class _Needles:
    """What marks an artifact as carrying the document: its id as a whole word (in any of its
    spellings) or one of its distinctive sentences, in UTF-8, UTF-16 or JSON-escaped form."""

    document_id: str
    sentences: frozenset[str]

    @functools.cached_property
    def _bytes(self) -> tuple[bytes, ...]:
        utf16 = {f for f in _byte_forms(self.document_id) if b"\x00" in f}
        return tuple({f for s in self.sentences for f in _byte_forms(s)} | utf16)

    @functools.cached_property
    def _texts(self) -> tuple[str, ...]:
        return tuple({f for s in self.sentences for f in _text_forms(s)})

    def in_bytes(self, data: bytes) -> bool:
        return any(form in data for form in self._bytes) or self.in_text(
            data.decode("utf-8", "replace"))

    def in_text(self, text: str) -> bool:
        return (any(form in text for form in self._texts)
                or _id_pattern(self.document_id).search(text) is not None)


def _artifact_actions(dep: Deployment, needles: _Needles) -> dict[str, str]:
    """file -> "remove lines a, b" or "delete", for every artifact carrying the document."""
    actions = {}
    for path in _artifact_files(dep):
        data = path.read_bytes()
        if not needles.in_bytes(data):
            continue
        action = "delete"
        if path.suffix.lower() in LINE_ARTIFACTS:
            try:
                lines = data.decode("utf-8").splitlines(keepends=True)
            except UnicodeDecodeError:
                lines = None
            if lines is not None:
                drop = [i + 1 for i, line in enumerate(lines) if needles.in_text(line)]
                rest = "".join(line for i, line in enumerate(lines) if i + 1 not in drop)
                if drop and not needles.in_bytes(rest.encode()):
                    action = "remove lines " + ", ".join(map(str, drop))
        actions[str(path)] = action
    return actions


def _apply_artifact_action(path: Path, action: str) -> None:
    if action == "delete":
        path.unlink(missing_ok=True)
        return
    drop = {int(n) for n in action.removeprefix("remove lines ").split(", ")}
    lines = path.read_bytes().decode("utf-8").splitlines(keepends=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}tmp")
    tmp.write_text("".join(line for i, line in enumerate(lines) if i + 1 not in drop))
    os.replace(tmp, path)


def plan_purge(dep: Deployment, document_id: str, *, artifacts: bool = True) -> PurgePlan:
    """What a purge of `document_id` would change; reads only."""
    plan = PurgePlan(document_id)
    texts: list[str] = [document_id]
    seqs: list[int] = []
    for path, _rel, _data, records, _only in _landing_hits(dep, document_id):
        plan.landing[str(path)] = [r.row["source_line"] for r in records]
        for r in records:
            texts += [r.row["content"], r.row["title"], r.row["raw_record"]]
            if r.row["change_seq"] is not None:
                seqs.append(r.row["change_seq"])
    for database in [dep.db_path, *dep.snapshots()]:
        if not database.exists():
            continue
        found = _inspect_database(database, document_id, with_texts=artifacts)
        if not found.counts:
            continue
        plan.databases[str(database)] = found.counts
        texts += found.texts
        if found.max_change_seq is not None:
            seqs.append(found.max_change_seq)
        if database != dep.db_path:
            plan.snapshots[str(database)] = _purged_name(database.name)
    plan.max_change_seq = max(seqs) if seqs else None
    plan.unreadable = _unreadable_mentions(dep, document_id)
    if artifacts:
        plan.artifacts = _artifact_actions(dep, _Needles(document_id, frozenset(sentences(texts))))
    return plan


# --------------------------------------------------------------------------- the steps


@dataclass
class PurgeReport:
    document_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_rewritten: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    snapshots_replaced: dict[str, str] = field(default_factory=dict)
    max_change_seq: int | None = None
    completed_interrupted_purge: bool = False


def _step_artifacts(dep: Deployment, plan: PurgePlan, report: PurgeReport) -> None:
    for name, action in plan.artifacts.items():
        _apply_artifact_action(Path(name), action)
        (report.files_deleted if action == "delete" else report.files_rewritten).append(name)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace a landing file's bytes in one rename, keeping its mode."""
    tmp = path.with_name(f".{path.name}{TEMP_MARK}tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    shutil.copymode(path, tmp)
    os.replace(tmp, path)


def _step_landing(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    for path, rel, data, records, only in _landing_hits(dep, document_id):
        if only:
            # nothing of another document is left: the file goes (an emptied JSONL would be
            # read as an empty, unreadable file and quarantined on the next build)
            path.unlink(missing_ok=True)
            report.files_deleted.append(str(path))
        else:
            _write_bytes_atomic(path, without_records(rel, data, records))
            report.files_rewritten.append(str(path))
        fault_point("purge_landing_file")


def _step_snapshots(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    for old in dep.snapshots():
        new = old.with_name(_purged_name(old.name))
        if new.exists() and _inspect_database(new, document_id).counts:
            new.unlink()  # an interrupted purge of another document made it: make it anew
        if new.exists():
            pass  # a purged copy made by an interrupted run: switch to it
        elif _inspect_database(old, document_id).counts:
            # never write a file a reader may hold: purge a copy, then switch to it
            work = old.with_name(f".{new.name}{TEMP_MARK}copy")
            shutil.copyfile(old, work)
            for table, n in _delete_from_database(work, document_id).items():
                report.rows_deleted[f"{old.name}:{table}"] = n
            _rewrite_database(work)
            os.replace(work, new)
            fault_point("purge_snapshot_copied")
        else:
            continue
        replace_snapshot(dep.db_path, old.name, new.name)
        fault_point("purge_snapshot_switched")
        old.unlink(missing_ok=True)
        report.snapshots_replaced[old.name] = new.name


def _step_database(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    if not dep.db_path.exists():
        return
    for table, n in _delete_from_database(dep.db_path, document_id).items():
        report.rows_deleted[f"{dep.db_path.name}:{table}"] = n
    fault_point("purge_database_deleted")
    # rewritten even when nothing was left to delete: an interrupted run may have deleted
    # the rows and been stopped before the rewrite, and the freed blocks still hold the bytes
    _rewrite_database(dep.db_path)
    report.files_rewritten.append(str(dep.db_path))


def _unreadable_mentions(dep: Deployment, document_id: str) -> list[str]:
    """Landing files ingestion cannot read as records (an unsupported name, a corrupt parquet
    file, a broken CSV header) whose bytes name the id: no record of them can be removed."""
    names = _Needles(document_id, frozenset())
    found = []
    for rel, path in dep.landing_files():
        data = path.read_bytes()
        if names.in_bytes(data) and any(
                r.span is None for r in landing_records(rel, data)):
            found.append(str(path))
    return found


def _step_unreadable(dep: Deployment, document_id: str) -> None:
    unreadable = _unreadable_mentions(dep, document_id)
    if unreadable:
        raise PurgeError(
            f"purge of {document_id!r} done except in {', '.join(unreadable)}: ingestion cannot "
            "read it (see fct_quarantined_events), so no record of it can be removed, but it "
            "names the document; delete it or re-land a readable copy, then run `ragmart purge` "
            "to finish (the purge stays journaled)")


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
            _step_artifacts(dep, plan_purge(dep, document_id), report)
        elif step == "landing":
            _step_landing(dep, document_id, report)
        elif step == "snapshots":
            _step_snapshots(dep, document_id, report)
        elif step == "database":
            _step_database(dep, document_id, report)
        else:
            _step_unreadable(dep, document_id)
        entry["done"].append(step)
        _write_json(journal_path(dep.db_path), journal)
        fault_point(f"purge_step_{step}")
    # What serves changed: the gate's baseline is measured again (ragmart.serving.publish). Before
    # the
    # journal entry goes, so a failed measurement (a locked database, a provider not
    # configured) leaves the purge pending and the next purge or build measures again.
    from ragmart.serving.baseline import refresh_baseline

    refresh_baseline(dep.db_path)
    del journal[document_id]
    _write_json(journal_path(dep.db_path), journal)


def _begin(dep: Deployment, plan: PurgePlan) -> None:
    """Record the id first: in the journal (so an interrupted purge is completed) and in the
    registry ingestion honours (so nothing brings the document back meanwhile)."""
    journal = load_journal(dep.db_path)
    entry = journal.setdefault(plan.document_id, {
        "started_at": dt.datetime.now(dt.UTC).isoformat(), "done": [],
        "max_change_seq": plan.max_change_seq})
    entry["max_change_seq"] = max(entry["max_change_seq"] or 0, plan.max_change_seq or 0)
    _write_json(journal_path(dep.db_path), journal)
    registry = registry_path(dep.db_path)
    entries = load_registry(registry)
    entries[plan.document_id] = max(entries.get(plan.document_id, 0), entry["max_change_seq"])
    _write_json(registry, entries)
    fault_point("purge_journaled")


def known_document_ids(dep: Deployment) -> set[str]:
    """Every document id the deployment holds (the build database and the landing zone)."""
    ids: set[str] = set()
    if dep.db_path.exists():
        conn = _open(dep.db_path, read_only=True)
        try:
            for table in _tables_with(conn, "document_id"):
                ids |= {r[0] for r in conn.execute(
                    f'select distinct document_id from "{table}" where document_id is not null'
                ).fetchall()}
        finally:
            conn.close()
    for rel, path in dep.landing_files():
        ids |= {r.row["document_id"] for r in landing_records(rel, path.read_bytes())
                if r.row["document_id"] is not None}
    return ids


@contextlib.contextmanager
def _exclusive(dep: Deployment) -> Iterator[None]:
    """One purge at a time per deployment (the CLI, the dbt plugin): steps of two purges must
    not interleave."""
    path = journal_path(dep.db_path).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PurgeError(f"another purge is running ({path} is locked); wait for it to "
                             "finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    with _exclusive(dep):
        _begin(dep, plan)
        _run(dep, document_id, report)
    return report


def complete_pending(dep: Deployment) -> list[PurgeReport]:
    """Complete every purge the journal holds (interrupted by a lock, an error or a kill)."""
    reports: list[PurgeReport] = []
    if not load_journal(dep.db_path):
        return reports
    with _exclusive(dep):
        for document_id in list(load_journal(dep.db_path)):
            report = PurgeReport(document_id, completed_interrupted_purge=True)
            _run(dep, document_id, report)
            reports.append(report)
    return reports
