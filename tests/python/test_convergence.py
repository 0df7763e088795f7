"""Incremental builds converge: after every batch of landed CDC files, the state the incremental
`dbt build` left equals a from-scratch build (a fresh database) of the same landing zone.

Hypothesis generates CDC histories (inserts, edits, title/type/group changes, deletes,
re-inserts, empty documents) over a few documents, cuts them into files of every layout (DMS csv
with and without Op, DMS parquet, Debezium jsonl), lands the files in batches in any order (late
files carry older sequences), replays some (copied, converted to the other layout, or re-landed
unchanged under the same name) and adds an occasional quarantined record.

State is compared through the stable relations (dim_documents, int_document_versions, the live
chunk rows of fct_chunk_embeddings_v1 and their vectors in int_chunk_embeddings,
fct_quarantined_events); timestamps, invocation ids and created_at are left aside, vectors are
compared bit for bit.

Speed: dbt runs in this process (``dbtRunner``) from a manifest parsed once, so a build costs
about 2 s instead of 8 s for a `dbt build` subprocess. Reusing one process across databases
needs care:

* dbt-duckdb keeps its DuckDB environment in a class attribute of DuckDBConnectionManager and
  re-creates it only when the credentials change; with ``path: ":memory:"`` it is kept open, so
  the database file stays attached after the invocation (and a second DuckDB instance of this
  process could open the same file). It is closed after every invocation here.
* Partial parsing does not survive a change of database: the profile hash covers the ``attach``
  path (RAGMART_DB), so each new RAGMART_DB means a full parse (~4 s). The source paths are
  rendered from RAGMART_LANDING_DIR at parse time. So the manifest is parsed once, for one
  landing dir that every example reuses (emptied first), and passed to ``dbtRunner``;
  RAGMART_DB is only read when the profile is rendered, on each invocation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cdc_files import document, paragraph
from dbt_harness import ROOT
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ragmart.build.runner import close_duckdb, failed_nodes
from tools import cdc_files as cdc

SERVING = "fct_chunk_embeddings_v1"
# the dbt project under test (a copy can be tested by pointing this at it)
PROJECT = Path(os.environ.get("RAGMART_TEST_PROJECT_DIR") or ROOT)
BASE_TS = dt.datetime(2026, 11, 2, 9, 0, 0)

# --------------------------------------------------------------------------- dbt in-process


class DbtInProcess:
    """`dbt` invoked through ``dbtRunner`` in this process, one landing dir, any database.

    The manifest is parsed once (with the landing dir fixed) and handed to every invocation;
    RAGMART_DB is read when the profile is rendered, i.e. on each invocation.
    """

    def __init__(self, workdir: Path, *, provider: str = "hash", s3_server=None) -> None:
        from dbt.cli.main import dbtRunner

        self.workdir = workdir
        self.landing = workdir / "landing"
        self.store = None  # an S3 landing zone (ragmart.ingest.store.S3Store) when s3_server
        s3_env: dict[str, str] = {}
        if s3_server is not None:
            from s3_landing import new_bucket, s3_environment

            from ragmart.ingest.store import S3Store

            self.store = S3Store(new_bucket(s3_server), "landing", s3_server.client())
            self.store.put("", b"")  # the prefix's folder marker: an empty landing zone
            s3_env = {**s3_environment(s3_server), "RAGMART_LANDING_DIR": self.store.url}
        for layout in ("dms", "debezium"):
            (self.landing / layout).mkdir(parents=True, exist_ok=True)
        self.env = {
            "RAGMART_LANDING_DIR": str(self.landing),
            "RAGMART_EMBEDDING_PROVIDER": provider,
            "RAGMART_DB": str(workdir / "parse.duckdb"),
            "DO_NOT_TRACK": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            **s3_env,
        }
        self.flags = [
            "--project-dir", str(PROJECT),
            "--profiles-dir", str(PROJECT),
            "--target-path", str(workdir / "target"),
            "--log-path", str(workdir / "logs"),
            "--quiet", "--no-use-colors", "--no-write-json",
            "--log-level-file", "warn",
        ]
        with self._environ(self.env):
            result = dbtRunner().invoke(["parse", *self.flags])
        self._check("parse", result)
        self.runner = dbtRunner(manifest=result.result)

    @staticmethod
    @contextmanager
    def _environ(values: dict[str, str]) -> Iterator[None]:
        # RAGMART_KILL_AT must never reach an in-process build: it would SIGKILL pytest.
        drop = ("RAGMART_KILL_AT", "RAGMART_EMBEDDING_MODEL", "RAGMART_MAX_CONTENT_BYTES")
        saved = {k: os.environ.get(k) for k in (*values, *drop)}
        try:
            for k in drop:
                os.environ.pop(k, None)
            os.environ.update(values)
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @staticmethod
    def _check(what: str, result: Any) -> None:
        if result.success:
            return
        detail = "\n".join(failed_nodes(result.result)) or repr(result.exception)
        raise AssertionError(f"dbt {what} failed:\n{detail}")

    def invoke(self, db: Path, *args: str) -> None:
        with self._environ({**self.env, "RAGMART_DB": str(db)}):
            try:
                result = self.runner.invoke([*args, *self.flags])
            finally:
                close_duckdb()
        self._check(f"{' '.join(args)} on {db.name}", result)

    def clear_landing(self) -> None:
        if self.store is not None:
            for entry in self.store.list():
                self.store.delete(entry.key)
            return
        for layout in ("dms", "debezium"):
            shutil.rmtree(self.landing / layout, ignore_errors=True)
            (self.landing / layout).mkdir(parents=True)

    def land(self, relative_path: str, data: bytes) -> None:
        if self.store is not None:
            self.store.put(relative_path, data)
            return
        path = self.landing / relative_path
        path.write_bytes(data)


# --------------------------------------------------------------------------- CDC histories


@dataclass(frozen=True)
class Image:
    """The source row of a document at one point of its history."""

    document_type: str
    title: str
    content: str
    allowed_groups: tuple[str, ...] | None

    def __repr__(self) -> str:
        digest = hashlib.sha256(self.content.encode()).hexdigest()[:8]
        return (
            f"Image({self.document_type!r}, {self.title!r}, content={digest}, "
            f"groups={self.allowed_groups})"
        )


@dataclass(frozen=True)
class Event:
    seq: int
    op: str  # I, U, D
    document_id: str
    image: Image  # for D: the image that was deleted

    def __repr__(self) -> str:
        return f"{self.op}{self.seq}:{self.document_id}:{self.image!r}"


# layouts: dms_csv, dms_full_load (csv without Op: inserts only), dms_parquet, debezium
@dataclass(frozen=True)
class LandingFile:
    name: str  # without extension
    layout: str
    events: tuple[Event, ...]
    quarantined_record: bool = False

    @property
    def relative_path(self) -> str:
        if self.layout == "debezium":
            return f"debezium/{self.name}.jsonl"
        ext = "parquet" if self.layout == "dms_parquet" else "csv"
        return f"dms/{self.name}.{ext}"

    def render(self) -> bytes:
        if self.layout == "debezium":
            return _debezium(self.events, self.quarantined_record)
        if self.layout == "dms_parquet":
            return _dms_parquet(self.events, self.quarantined_record)
        return _dms_csv(
            self.events, self.quarantined_record, with_op=self.layout != "dms_full_load"
        )

    def __repr__(self) -> str:
        bad = " +quarantined" if self.quarantined_record else ""
        return f"{self.relative_path}{bad} {list(self.events)!r}"


@dataclass(frozen=True)
class History:
    batches: tuple[tuple[LandingFile, ...], ...]

    def __repr__(self) -> str:
        lines = ["History("]
        for i, batch in enumerate(self.batches):
            lines.append(f"  batch {i}:")
            lines += [f"    {f!r}" for f in batch] or ["    (nothing new)"]
        return "\n".join([*lines, ")"])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' reports
        printer.text(repr(self))


def _ts(seq: int) -> dt.datetime:
    return BASE_TS + dt.timedelta(minutes=seq)


def _encoded(events: tuple[Event, ...], quarantined: bool) -> list[cdc.Event]:
    """The events as the shared encoders take them; with `quarantined`, one more DMS record
    without a document_id (quarantined, never an event)."""
    encoded = []
    for e in events:
        doc = cdc.Document(e.document_id, e.image.document_type, e.image.title, e.image.content,
                           _ts(e.seq), e.image.allowed_groups, ())
        source_op = {"I": "c", "U": "u", "D": "d"}[e.op]
        encoded.append(cdc.Event(e.op, source_op, e.seq, _ts(e.seq), doc,
                                 None if e.op == "I" else doc))
    if quarantined:
        last = encoded[-1]
        encoded.append(cdc.Event("I", "c", last.change_seq, last.commit_ts,
                                 dataclasses.replace(last.document, document_id=""), None))
    return encoded


def _dms_csv(events: tuple[Event, ...], quarantined: bool, *, with_op: bool) -> bytes:
    return cdc.encode_dms_csv(_encoded(events, quarantined), with_op=with_op)


def _dms_parquet(events: tuple[Event, ...], quarantined: bool) -> bytes:
    return cdc.encode_dms_parquet(_encoded(events, quarantined))


def _debezium(events: tuple[Event, ...], quarantined: bool) -> bytes:
    # no events: one empty line (as a file of none), unless the record follows
    empty = b"" if quarantined else b"\n"
    text = cdc.encode_debezium(_encoded(events, False)) if events else empty
    if quarantined:  # an envelope whose row has no document_id
        seq = events[-1].seq if events else 1
        text += (json.dumps({"before": None, "after": {"document_id": None}, "op": "c",
                             "ts_ms": 0, "source": {"lsn": seq}}) + "\n").encode()
    return text


DOC_IDS = ("alpha", "bravo", "charlie", "delta")


@st.composite
def images(draw: st.DrawFn, doc_id: str) -> Image:
    if draw(st.integers(0, 9)) == 9:  # (not 0: hypothesis favours small draws)
        content = ""  # a live document without chunks
    else:
        policy = [
            paragraph(draw(st.sampled_from((doc_id, "shared"))), draw(st.integers(0, 5)))
            for _ in range(draw(st.integers(1, 4)))
        ]
        sections = {"Scope": [paragraph(f"{doc_id} scope", 99)], "Policy": policy}
        if draw(st.booleans()):
            sections["Exceptions"] = [paragraph("shared exceptions", draw(st.integers(0, 2)))]
        content = document(f"{doc_id.title()} Policy", sections)
    return Image(
        document_type=draw(st.sampled_from(("policy", "handbook"))),
        title=draw(st.sampled_from((f"{doc_id.title()} Policy", f"{doc_id.title()} (revised)"))),
        content=content,
        allowed_groups=draw(st.sampled_from((None, ("hr",), ("hr", "managers")))),
    )


@st.composite
def histories(
    draw: st.DrawFn, *, max_events: int = 10, min_batches: int = 2, max_batches: int = 3
) -> History:
    # 1. the source table's changes, in commit (sequence) order
    live: dict[str, Image] = {}
    events: list[Event] = []
    seq = 0
    for _ in range(draw(st.integers(2, max_events))):
        seq += draw(st.integers(1, 3))
        doc_id = draw(st.sampled_from(DOC_IDS))
        if doc_id in live and draw(st.integers(0, 2)) == 0:
            events.append(Event(seq, "D", doc_id, live.pop(doc_id)))
            continue
        op = "U" if doc_id in live else "I"
        if op == "U" and draw(st.booleans()):  # metadata-only change: same content
            old = live[doc_id]
            image = Image(draw(st.sampled_from(("policy", "handbook"))), old.title + " v2",
                          old.content, old.allowed_groups)
        else:
            image = draw(images(doc_id))
        live[doc_id] = image
        events.append(Event(seq, op, doc_id, image))

    # 2. cut into files (contiguous runs, as producers write them), names in random order
    runs: list[tuple[Event, ...]] = []
    rest = events
    while rest:
        size = draw(st.integers(1, min(4, len(rest))))
        runs.append(tuple(rest[:size]))
        rest = rest[size:]
    numbers = draw(st.permutations(range(2 * len(runs))))
    files = []
    for i, run in enumerate(runs):
        layout = draw(st.sampled_from(("dms_csv", "dms_parquet", "debezium")))
        if layout == "dms_csv" and all(e.op == "I" for e in run) and draw(st.booleans()):
            layout = "dms_full_load"
        bad = draw(st.integers(0, 7)) == 7
        files.append(LandingFile(f"{numbers[i]:04d}_{layout}", layout, run, bad))

    # 3. land in batches, in any order; replay some files
    n_batches = draw(st.integers(min_batches, max_batches))
    batches: list[list[LandingFile]] = [[] for _ in range(n_batches)]
    spare_numbers = iter(numbers[len(runs) :])
    for f in files:
        first = draw(st.integers(0, n_batches - 1))
        batches[first].append(f)
        replay = draw(st.sampled_from(("none", "none", "copy", "other_layout", "reland")))
        again = draw(st.integers(first, n_batches - 1))
        if replay == "reland" and again > first:  # same path, same bytes, new mtime
            batches[again].append(f)
        elif replay in ("copy", "other_layout"):
            layout = f.layout
            if replay == "other_layout":
                layout = "debezium" if f.layout.startswith("dms") else "dms_parquet"
            name = f"{next(spare_numbers):04d}_replay_{layout}"
            batches[again].append(LandingFile(name, layout, f.events, f.quarantined_record))
    return History(tuple(tuple(b) for b in batches))


def _sample_history() -> History:
    """A hand-written history with every case at least once (the @example)."""

    def img(doc: str, n: int, title: str = "", groups: tuple[str, ...] | None = None) -> Image:
        sections = {"Scope": [paragraph(f"{doc} scope", 99)],
                    "Policy": [paragraph(doc, i) for i in range(n)]}
        return Image("policy", title or f"{doc.title()} Policy", document(doc, sections), groups)

    alpha, bravo = img("alpha", 3), img("bravo", 2, groups=("hr",))
    load = LandingFile("0001_load", "dms_full_load", (
        Event(1, "I", "alpha", alpha),
        Event(2, "I", "bravo", bravo),
        Event(3, "I", "charlie", img("charlie", 2)),
    ))
    edit = LandingFile("0002_edit", "debezium", (
        Event(5, "U", "alpha", img("alpha", 4)),
        Event(6, "D", "bravo", bravo),
    ))
    late = LandingFile("0099_late", "dms_csv", (Event(4, "U", "alpha", img("alpha", 1)),), True)
    back = LandingFile("0003_back", "dms_parquet", (
        Event(7, "I", "bravo", bravo),  # re-insert, same text
        Event(8, "U", "charlie", img("charlie", 2, "Charlie v2")),  # title only
        Event(9, "I", "delta", img("delta", 0)),
    ))
    replay = LandingFile("0004_replay", "dms_parquet", edit.events)  # other layout
    # batch 2 re-lands two files unchanged under the same names
    return History(((load, edit), (late, replay, back), (edit, load)))


# --------------------------------------------------------------------------- state


def snapshot(db: Path) -> dict[str, Any]:
    """The comparable state of a ragmart database (nothing time- or invocation-dependent)."""
    from ragmart.duck import connect

    conn = connect(db, read_only=True)
    try:

        def rows(sql: str) -> list[tuple]:
            return conn.execute(f"select * from ({sql}) order by all").fetchall()

        state: dict[str, Any] = {}
        state["dim_documents"] = rows(
            "select document_id, document_version, document_checksum, document_type, title, "
            "allowed_groups, updated_at, valid_from, version_number, metadata, content_length "
            "from dim_documents"
        )
        state["int_document_versions"] = rows(
            "select document_id, document_version, is_deleted, is_current, is_latest, "
            "document_checksum, document_type, title, allowed_groups, updated_at, valid_from, "
            "valid_to, superseded_by_version, version_number, delivery_count "
            "from int_document_versions"
        )
        state["live_chunks"] = rows(
            "select chunk_id, document_id, document_version, chunk_index, chunker_version, "
            f"chunk_hash, section, section_type, chunk_text, embedding_model from {SERVING}"
        )
        # every version ever live, with its window (what --as-of searches)
        state["chunk_history"] = rows(
            "select chunk_id, document_id, document_version, chunk_hash, document_valid_from, "
            "document_valid_to, superseded_by_version, embedding_model, embedding::float[] "
            "from fct_chunk_history_v1"
        )
        # vectors of every live chunk, from the cache and as served (bit-exact)
        state["cached_vectors"] = rows(
            "select e.chunk_hash, e.embedding_model, e.embedding from int_chunk_embeddings e "
            f"semi join {SERVING} s using (chunk_hash, embedding_model)"
        )
        state["served_vectors"] = rows(
            f"select distinct chunk_hash, embedding_model, embedding::float[] from {SERVING}"
        )
        state["quarantine"] = rows(
            "select source_file, source_line, quarantine_code from fct_quarantined_events"
        )
        state["hnsw_indexes"] = rows(
            "select table_name, index_name from duckdb_indexes() "
            "where database_name = 'ragmart' and lower(sql) like '%using hnsw%'"
        )
        # keys that must be unique in any state (the incremental one included)
        state["duplicate_keys"] = rows(
            "select 'int_chunk_embeddings', chunk_hash || ' ' || embedding_model "
            "from int_chunk_embeddings group by all having count(*) > 1 "
            f"union all select '{SERVING}', chunk_id from {SERVING} "
            "group by all having count(*) > 1 "
            "union all select 'int_chunks', chunker_version || ' ' || chunk_id from int_chunks "
            "group by all having count(*) > 1 "
            "union all select 'stg_landing__document_events', "
            "file_sha256 || ' ' || source_file || ' ' || source_line "
            "from stg_landing__document_events where source_line is not null "
            "group by all having count(*) > 1"
        )
        # nothing lost: every chunk of every live version is served
        state["unserved_live_chunks"] = rows(
            "select c.chunk_id from int_chunks c join dim_documents d "
            "using (document_id, document_version) "
            f"where c.chunk_id not in (select chunk_id from {SERVING})"
        )
        state["unembedded_live_chunks"] = rows(
            "select c.chunk_id from int_chunks c join int_document_versions v "
            "using (document_id, document_version) where v.is_current "
            "and c.chunk_hash not in (select chunk_hash from int_chunk_embeddings)"
        )
        return state
    finally:
        conn.close()


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) < 300 else text[:300] + "..."


def state_differences(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Readable differences between two snapshots (empty when they are equal)."""
    problems = []
    for key in expected:
        if actual[key] == expected[key]:
            continue
        extra = [r for r in actual[key] if r not in expected[key]]
        missing = [r for r in expected[key] if r not in actual[key]]
        problems.append(
            f"{key}: {len(actual[key])} rows vs {len(expected[key])} expected; "
            f"{len(extra)} unexpected, e.g. {[_short(r) for r in extra[:3]]}; "
            f"{len(missing)} missing, e.g. {[_short(r) for r in missing[:3]]}"
        )
    return problems


def assert_sound(state: dict[str, Any], what: str) -> None:
    assert not state["duplicate_keys"], f"{what}: duplicated keys {state['duplicate_keys'][:5]}"
    assert not state["unserved_live_chunks"], (
        f"{what}: live chunks not served: {state['unserved_live_chunks'][:5]}"
    )
    assert not state["unembedded_live_chunks"], (
        f"{what}: live chunks without a vector: {state['unembedded_live_chunks'][:5]}"
    )
    served = {(row[1], row[2]) for row in state["live_chunks"]}
    live = {(row[0], row[1]) for row in state["dim_documents"]}
    assert served <= live, f"{what}: served versions that are not live: {served - live}"


def assert_same_state(actual: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    assert_sound(actual, what)
    assert_sound(expected, f"{what} (from scratch)")
    problems = state_differences(actual, expected)
    assert not problems, f"{what}: state differs from a from-scratch build:\n" + "\n".join(
        problems
    )


# --------------------------------------------------------------------------- the property

_counter = itertools.count()


# the property over a local landing folder and an S3 bucket; the generated histories run on S3
# in the slow suite (the sample history and the negative check run on both in the fast one)
@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def dbt_runner(tmp_path_factory: pytest.TempPathFactory, request) -> DbtInProcess:
    s3_server = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return DbtInProcess(tmp_path_factory.mktemp("convergence"), s3_server=s3_server)


@pytest.fixture(scope="module")
def s3_dbt_runner(tmp_path_factory: pytest.TempPathFactory, s3_server) -> DbtInProcess:
    return DbtInProcess(tmp_path_factory.mktemp("convergence_s3"), s3_server=s3_server)


@pytest.mark.slow  # ~8 builds
def test_the_sample_history_converges_from_an_s3_landing_zone(s3_dbt_runner) -> None:
    check_converges(s3_dbt_runner, SAMPLE_HISTORY, *NO_TESTS)


# data tests and unit tests read, never write: left out where only the state matters
NO_TESTS = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")


def check_converges(dbt: DbtInProcess, history: History, *build_args: str) -> None:
    """Land the batches one by one; after each, an incremental `dbt build BUILD_ARGS` must
    leave the state a from-scratch build of the landing zone leaves."""
    dbt.clear_landing()
    workdir = Path(tempfile.mkdtemp(prefix=f"ex{next(_counter)}_", dir=dbt.workdir))
    try:
        incremental = workdir / "incremental.duckdb"
        for i, batch in enumerate(history.batches):
            for f in batch:
                dbt.land(f.relative_path, f.render())
            dbt.invoke(incremental, "build", *build_args)
            scratch = workdir / f"scratch_{i}.duckdb"
            dbt.invoke(scratch, "build", *NO_TESTS)
            assert_same_state(snapshot(incremental), snapshot(scratch), f"after batch {i}")
            scratch.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


SAMPLE_HISTORY = _sample_history()
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    # a failing example costs ~10 s a run: report it as found, do not shrink it
    "phases": (Phase.explicit, Phase.generate),
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}


@settings(max_examples=4, derandomize=True, **_SETTINGS)
@example(history=SAMPLE_HISTORY)
@given(history=histories(max_events=10, min_batches=2, max_batches=3))
def test_incremental_build_equals_rebuild_after_every_batch(
    dbt_runner: DbtInProcess, history: History
) -> None:
    # without data and unit tests: ~2 s a build instead of ~3.5 s; the slow variant runs them
    check_converges(dbt_runner, history, *NO_TESTS)


@pytest.mark.slow
@settings(max_examples=40, derandomize=False, **_SETTINGS)
@given(history=histories(max_events=24, min_batches=2, max_batches=5))
def test_incremental_build_equals_rebuild_many_histories(
    dbt_runner: DbtInProcess, history: History
) -> None:
    check_converges(dbt_runner, history)


def test_state_comparison_can_fail(dbt_runner: DbtInProcess) -> None:
    """The comparison sees a difference: a build that missed the later files is not converged."""
    dbt_runner.clear_landing()
    workdir = Path(tempfile.mkdtemp(prefix="negative_", dir=dbt_runner.workdir))
    first, second = SAMPLE_HISTORY.batches[:2]
    for f in first:
        dbt_runner.land(f.relative_path, f.render())
    dbt_runner.invoke(workdir / "behind.duckdb", "build", *NO_TESTS)
    for f in second:
        dbt_runner.land(f.relative_path, f.render())
    dbt_runner.invoke(workdir / "scratch.duckdb", "build", *NO_TESTS)
    expected = snapshot(workdir / "scratch.duckdb")
    assert expected["live_chunks"] and expected["hnsw_indexes"] and expected["quarantine"]
    problems = state_differences(snapshot(workdir / "behind.duckdb"), expected)
    for key in ("dim_documents", "int_document_versions", "live_chunks", "quarantine"):
        assert any(p.startswith(f"{key}:") for p in problems), (key, problems)
