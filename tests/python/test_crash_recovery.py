"""A `dbt build` killed with SIGKILL at any point leaves a database from which the next build
converges, with nothing lost or duplicated and no text embedded twice by a completed build.

Real `dbt build` processes are killed: at named fault points (``ragmart.build.faults``:
RAGMART_KILL_AT makes the process SIGKILL itself there), when a given line appears in dbt's
output (the embeddings model committed, the vector index model started), at the first commit
after such a line (the WAL file changes size: committed, not yet checkpointed), and at seeded
random offsets after the first node started. After each kill the database must open (vss is
loaded before the file is attached, so a WAL holding HNSW changes replays), a clean `dbt build`
must succeed, and its state must equal a from-scratch build of the same landing zone
(``test_convergence.snapshot``); every HNSW index must answer k-NN queries with k rows, exact
top-k and ``ragmart.Retriever.search`` must answer as from scratch; the recovery must send the
provider exactly the texts missing from the cache.

The killed builds are subprocesses (`python -m dbt.cli.main build`, data tests excluded so that
kills land in model work); the landing zone and the database path stay the same for all of them
(the database is restored from a copy), so dbt's partial parsing applies. The clean builds (the
first batch, the from-scratch reference, every recovery; data tests only in the slow variants)
run in this process (``test_convergence.DbtInProcess``), on the same files.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cdc_files import debezium_jsonl, document, paragraph
from dbt_harness import ROOT, SAMPLE_LANDING
from test_convergence import (
    NO_TESTS,
    PROJECT,
    DbtInProcess,
    assert_same_state,
    snapshot,
    state_differences,
)

from ragmart.build.faults import parse_spec

FIRST_BATCH = ("0001_initial_load.csv", "0002_initial_snapshot.jsonl", "0003_edits.csv")
QUESTIONS = (
    "can I expense a business class flight",
    "who approves a new vendor",
    "how many vacation days carry over",
)
K = 10


# --------------------------------------------------------------------------- harness


@dataclass
class BuildOutcome:
    returncode: int
    output: list[str]
    seconds: float
    killed_by_test: bool = False
    fault_log: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def texts_sent(self) -> int:
        """Texts the build reported as embedded (the provider saw them) before it ended."""
        done = [int(m.group(1)) for line in self.output
                if (m := re.search(r"embedded (\d+)/\d+ chunks", line))]
        return max(done, default=0)

    def tail(self, n: int = 60) -> str:
        return "".join(self.output[-n:])


class Deployment:
    """One landing zone, one database path; `dbt build` as a subprocess that can be killed."""

    def __init__(self, workdir: Path, name: str = "live") -> None:
        self.workdir = workdir
        self.landing = workdir / "landing"
        self.db_path = workdir / name / "ragmart.duckdb"
        self.target = workdir / f"target_{name}"
        self.db_path.parent.mkdir(parents=True, exist_ok=True)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGMART_", "DBT_"))}
        env.update(
            {
                "RAGMART_DB": str(self.db_path),
                "RAGMART_LANDING_DIR": str(self.landing),
                "RAGMART_EMBEDDING_PROVIDER": "hash",
                "DO_NOT_TRACK": "1",
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
                "PYTHONUNBUFFERED": "1",  # dbt's lines reach the trigger as they are written
            }
        )
        env.update(extra or {})
        return env

    def build(
        self,
        *args: str,
        kill_at: str | None = None,
        trigger: str | None = None,
        delay: float = 0.0,
        after_commit: float | None = None,
        timeout: float = 300.0,
    ) -> BuildOutcome:
        """`dbt build ARGS`, killed at fault point `kill_at`, or by SIGKILL from here `delay` s
        after a line matching `trigger` appears; with `after_commit`, that many seconds after
        the next commit instead (the first change of the WAL file's size after `delay`).
        Returns however the build ended."""
        fault_log = self.workdir / "fault.log"
        fault_log.unlink(missing_ok=True)
        extra = {"RAGMART_FAULT_LOG": str(fault_log)}
        if kill_at:
            extra["RAGMART_KILL_AT"] = kill_at
        cmd = [
            sys.executable, "-m", "dbt.cli.main", "build",
            "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT),
            "--target-path", str(self.target), "--log-path", str(self.workdir / "logs"),
            "--log-level-file", "none", "--no-write-json", "--no-use-colors", *args,
        ]
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env(extra), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        output: list[str] = []
        killed_by_test = threading.Event()

        def kill() -> None:
            if proc.poll() is None:
                killed_by_test.set()
                proc.send_signal(signal.SIGKILL)

        wal = Path(f"{self.db_path}.wal")

        def wal_size() -> int:
            try:
                return wal.stat().st_size
            except FileNotFoundError:
                return -1

        def kill_after_commit() -> None:
            armed = wal_size()
            while proc.poll() is None and wal_size() == armed:
                time.sleep(0.0002)
            time.sleep(after_commit or 0.0)
            kill()

        timers: list[threading.Timer] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if trigger and not timers and re.search(trigger, line):
                timer = threading.Timer(
                    delay, kill if after_commit is None else kill_after_commit
                )
                timer.start()
                timers.append(timer)
            if time.monotonic() - started > timeout:
                kill()
        proc.wait(timeout=timeout)
        for timer in timers:
            timer.cancel()
            timer.join()
        log = fault_log.read_text().splitlines() if fault_log.exists() else []
        return BuildOutcome(
            proc.returncode, output, time.monotonic() - started, killed_by_test.is_set(), log
        )

    def restore(self, source: Path | None) -> None:
        """Replace the database by a copy of `source` (None: no database at all)."""
        for path in (self.db_path, Path(f"{self.db_path}.wal")):
            path.unlink(missing_ok=True)
        if source is not None:
            shutil.copy(source, self.db_path)
            wal = Path(f"{source}.wal")
            if wal.exists():
                shutil.copy(wal, f"{self.db_path}.wal")


def land_first_batch(landing: Path) -> None:
    for layout in ("dms", "debezium"):
        (landing / layout).mkdir(parents=True, exist_ok=True)
        for src in sorted((SAMPLE_LANDING / layout).iterdir()):
            if src.name in FIRST_BATCH:
                shutil.copy(src, landing / layout / src.name)


def land_second_batch(landing: Path) -> None:
    """The rest of the sample (edits, inserts, a delete, a rename, replays, a late file) plus a
    churn file: 12 new long documents (> 256 new texts: several embedding batches) and deletes
    of 9 sample documents (over a fifth of the indexed rows: the vector index is compacted)."""
    for layout in ("dms", "debezium"):
        for src in sorted((SAMPLE_LANDING / layout).iterdir()):
            if src.name not in FIRST_BATCH:
                shutil.copy(src, landing / layout / src.name)
    expected = json.loads((SAMPLE_LANDING / "EXPECTED.json").read_text())["documents"]
    live = sorted(d for d, v in expected.items() if not v["deleted"])
    rows: list[dict[str, Any]] = []
    for i in range(12):
        name = f"handbook-{i:02d}"
        sections = {"Scope": [paragraph(f"{name} scope", 99)],
                    "Rules": [paragraph(f"{name} rules", n) for n in range(30)]}
        rows.append({"op": "c", "seq": 10_000 + i, "document_id": name,
                     "content": document(f"{name} handbook", sections)})
    for i, doc_id in enumerate(live[::4][:9]):
        rows.append({"op": "d", "seq": 20_000 + i, "document_id": doc_id, "content": ""})
    (landing / "debezium" / "0100_churn.jsonl").write_text(debezium_jsonl(rows))


def embedding_counts(db: Path) -> tuple[int, dict[str, int]]:
    """(vectors kept: in the cache or committed to embedding_cache_pending by a build that did
    not finish, texts_sent per embedding run invocation) of a database."""
    from ragmart.duck import connect

    conn = connect(db, read_only=True)
    try:
        tables = {t for (t,) in conn.execute(
            "select table_name from information_schema.tables where table_catalog = 'ragmart'"
        ).fetchall()}
        kept = [f"select chunk_hash, embedding_model from {t}"
                for t in ("int_chunk_embeddings", "embedding_cache_pending") if t in tables]
        cached = conn.execute(
            f"select count(*) from ({' union '.join(kept)})"
        ).fetchone()[0] if kept else 0
        runs: dict[str, int] = {}
        if "embedding_runs" in tables:
            for invocation, sent in conn.execute(
                "select invocation_id, texts_sent from embedding_runs"
            ).fetchall():
                runs[invocation] = runs.get(invocation, 0) + sent
        return cached, runs
    finally:
        conn.close()


def serving_answers(db: Path) -> dict[str, Any]:
    """What retrieval sees: every HNSW index answers k-NN with k rows; exact top-k per question."""
    from ragmart.duck import connect
    from ragmart.embedding.providers import HashingProvider
    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    vectors = HashingProvider().embed(list(QUESTIONS))
    conn = connect(db, read_only=True)
    try:
        out: dict[str, Any] = {"indexes": {}, "exact": [], "search": []}
        indexes = conn.execute(
            "select table_name, index_name, sql from duckdb_indexes() "
            "where database_name = 'ragmart' and lower(sql) like '%using hnsw%'"
        ).fetchall()
        for table, index, sql in indexes:
            column = re.search(r"\((\w+)\)", sql.split("USING", 1)[-1], re.I)
            col = column.group(1) if column else "embedding"
            n = conn.execute(f"select count(*) from {table}").fetchone()[0]
            for q in vectors:
                query = (f"select 1 from {table} order by "
                         f"array_cosine_distance({col}, $q::float[{len(q)}]) limit {K}")
                plan = "".join(str(r) for r in conn.execute(f"explain {query}",
                                                             {"q": q.tolist()}).fetchall())
                got = len(conn.execute(query, {"q": q.tolist()}).fetchall())
                out["indexes"].setdefault(f"{table}.{index}", []).append(
                    (got, min(K, n), "HNSW" in plan)
                )
        for q in vectors:
            out["exact"].append(conn.execute(
                "select chunk_id, array_cosine_distance(embedding, $q::float[384]) as d "
                "from fct_chunk_embeddings_v1 order by d, chunk_id limit 10",
                {"q": q.tolist()},
            ).fetchall())
            with Retriever(db_path=db, vectors_in_memory=False) as reader:
                hits = reader.search(q, k=K, groups=ALL_GROUPS)
            out["search"].append([(h.chunk_id, h.document_id) for h in hits])
        return out
    finally:
        conn.close()


# --------------------------------------------------------------------------- fixtures


@dataclass
class CrashBed:
    live: Deployment  # the deployment whose builds are killed (subprocesses)
    dbt: DbtInProcess  # clean builds of the same landing zone, in this process
    base: Path  # a database built from the first batch
    scratch: Path  # a database built from scratch from both batches
    reference: dict[str, Any]  # snapshot of a from-scratch build of both batches
    reference_serving: dict[str, Any]
    base_runs: dict[str, int]  # embedding_runs of the base database

    def clean_build(self, db: Path, *args: str) -> None:
        self.dbt.invoke(db, "build", *args)


@pytest.fixture(scope="module")
def crash_bed(tmp_path_factory: pytest.TempPathFactory) -> CrashBed:
    workdir = tmp_path_factory.mktemp("crash")
    dbt = DbtInProcess(workdir)
    live = Deployment(workdir)
    assert live.landing == dbt.landing
    land_first_batch(live.landing)
    base = workdir / "base.duckdb"
    dbt.invoke(base, "build", *NO_TESTS)
    assert not Path(f"{base}.wal").exists(), "a clean build left a WAL behind"
    land_second_batch(live.landing)
    scratch = workdir / "scratch.duckdb"
    dbt.invoke(scratch, "build", *NO_TESTS)
    return CrashBed(live, dbt, base, scratch, snapshot(scratch), serving_answers(scratch),
                    embedding_counts(base)[1])


# --------------------------------------------------------------------------- the check


def recover_and_check(
    bed: CrashBed,
    killed: BuildOutcome,
    what: str,
    *,
    texts_lost: int | None = None,
    data_tests: bool = False,
) -> None:
    """Check that the database opens after `killed`, that a clean build then succeeds and
    converges, serves, and pays for no text twice beyond the `texts_lost` by killed builds
    (default: what `killed` reported as embedded, or recorded in embedding_runs)."""
    db = bed.live.db_path
    context = f"--- killed build ({killed.returncode}), output tail:\n{killed.tail(25)}"
    # 1. the database opens after the crash (WAL replayed with vss loaded)
    if db.exists():
        try:
            cached_before, runs_before = embedding_counts(db)
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            pytest.fail(f"{what}: the database does not open after the kill: {exc!r}\n{context}")
    else:
        cached_before, runs_before = 0, {}
    recorded_by_killed = sum(n for i, n in runs_before.items() if i not in bed.base_runs)
    lost = max(killed.texts_sent if texts_lost is None else texts_lost, recorded_by_killed)
    # 2. the next (clean) build succeeds (data tests only if asked: step 3 checks more)
    try:
        bed.clean_build(db, *(() if data_tests else NO_TESTS))
    except AssertionError as exc:
        raise AssertionError(f"{what}: the build after the kill failed: {exc}\n{context}") from None
    # 3. it converged: same state as a from-scratch build, nothing lost or duplicated
    state = snapshot(db)
    assert_same_state(state, bed.reference, f"{what}: after the recovery build")
    # 4. serving answers: every HNSW index returns k rows; exact top-k as from scratch
    serving = serving_answers(db)
    assert set(serving["indexes"]) == set(bed.reference_serving["indexes"]), (
        f"{what}: HNSW indexes {sorted(serving['indexes'])}, "
        f"from scratch {sorted(bed.reference_serving['indexes'])}"
    )
    for name, answers in serving["indexes"].items():
        for got, want, uses_index in answers:
            assert uses_index, f"{what}: {name} is not used for k-NN after recovery"
            assert got == want, f"{what}: {name} returned {got} rows for k={K}, expected {want}"
    assert serving["exact"] == bed.reference_serving["exact"], f"{what}: exact top-k differs"
    live_docs = {row[0] for row in state["dim_documents"]}
    for hits in serving["search"]:
        assert len(hits) == K, f"{what}: search returned {len(hits)} rows, expected {K}"
        assert {doc for _, doc in hits} <= live_docs, f"{what}: search served a dead document"
    # 5. embedding spend: the recovery sent exactly the missing texts; over all builds, texts
    #    were sent twice at most as often as the killed build sent texts (and lost them)
    cached_after, runs_after = embedding_counts(db)
    recovery_sent = sum(n for i, n in runs_after.items() if i not in runs_before)
    assert recovery_sent == cached_after - cached_before, (
        f"{what}: the recovery build sent {recovery_sent} texts for "
        f"{cached_after - cached_before} new vectors ({cached_before} were cached)"
    )
    recorded = sum(runs_after.values())
    assert cached_after <= recorded <= cached_after + lost, (
        f"{what}: embedding_runs records {recorded} texts sent for {cached_after} vectors; "
        f"the killed build(s) sent {lost}"
    )


@dataclass(frozen=True)
class Scenario:
    what: str
    kill_at: str | None = None
    trigger: str | None = None
    delay: float = 0.0
    after_commit: float | None = None  # kill this long after the next commit
    fresh: bool = False  # kill the first build of an empty database
    must_kill: bool = True

    def __str__(self) -> str:
        return self.what


# dbt's progress lines: "12 of 40 START sql incremental model main.x ....... [RUN]",
# "12 of 40 OK created python incremental model main.x ... [OK in 0.2s]"
FIRST_NODE = r"\d+ of \d+ START "
EMBEDDINGS_DONE = r"OK created python \w+ model \S+\.int_chunk_embeddings\b"
INDEX_MODEL = r"START sql \w+ model \S*(index|vector)"

SCENARIOS = [
    Scenario("first build, staging: after the 3rd landing file", "ingest_file:3", fresh=True),
    Scenario("embedding: after the first provider call", "embedding_batch:1"),
    Scenario("embedding: run recorded, vectors not written", "embeddings_recorded"),
    Scenario("embeddings model committed", trigger=EMBEDDINGS_DONE),
    # the index model: compaction (drop index, delete), append, create index, commit, then a
    # checkpoint (~0.5 s); killed in between, the WAL holds the index changes
    Scenario("index maintenance: committed, before the checkpoint", trigger=INDEX_MODEL,
             after_commit=0.0),
]


def random_offsets(n: int, seed: int, window: float) -> list[Scenario]:
    rng = random.Random(seed)
    return [
        Scenario(f"random kill {x:.2f} s after the first node started", trigger=FIRST_NODE,
                 delay=x, must_kill=False)
        for x in sorted(rng.uniform(0.0, window) for _ in range(n))
    ]


def run_killed(bed: CrashBed, scenario: Scenario) -> BuildOutcome:
    """Restore the database, run `dbt build` (models and seeds) and kill it as `scenario` says."""
    bed.live.restore(None if scenario.fresh else bed.base)
    killed = bed.live.build(*NO_TESTS, kill_at=scenario.kill_at,
                            trigger=scenario.trigger, delay=scenario.delay,
                            after_commit=scenario.after_commit)
    if scenario.must_kill:
        assert killed.killed, (
            f"{scenario}: the build was not killed (exit {killed.returncode}); does the fault "
            f"point or trigger still exist?\n{killed.tail()}"
        )
        if scenario.kill_at:
            point, hit = parse_spec(scenario.kill_at)
            assert killed.fault_log == [f"{point} {hit}"], killed.fault_log
    elif killed.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{scenario}: the build failed:\n{killed.tail()}")
    return killed


def run_scenario(bed: CrashBed, scenario: Scenario, *, data_tests: bool = False) -> BuildOutcome:
    killed = run_killed(bed, scenario)
    recover_and_check(bed, killed, str(scenario), data_tests=data_tests)
    return killed


# --------------------------------------------------------------------------- tests


def test_fault_point_kills_the_process_at_the_nth_hit(tmp_path: Path) -> None:
    from ragmart.build import faults

    faults.fault_point("anything")  # no RAGMART_KILL_AT: a no-op in this very process
    code = ("from ragmart.build.faults import fault_point\n"
            "for i in range(3):\n"
            "    fault_point('other')\n"
            "    fault_point('here')\n"
            "    print('passed', i, flush=True)\n")
    log = tmp_path / "fault.log"
    env = {**os.environ, "RAGMART_KILL_AT": "here:2", "RAGMART_FAULT_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split("\n")[:-1] == ["passed 0"]
    assert log.read_text() == "here 2\n"
    env.pop("RAGMART_KILL_AT")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.count("passed") == 3
    with pytest.raises(faults.FaultSpecError):
        faults.parse_spec("here:0")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_killed_build_recovers(crash_bed: CrashBed, scenario: Scenario) -> None:
    run_scenario(crash_bed, scenario)


def test_build_killed_at_a_random_moment_recovers(crash_bed: CrashBed) -> None:
    (scenario,) = random_offsets(1, seed=20261125, window=2.0)
    run_scenario(crash_bed, scenario)


def test_vectors_obtained_before_a_kill_are_kept(crash_bed: CrashBed) -> None:
    """A build killed after a provider call keeps the vectors that call returned (committed per
    call to embedding_cache_pending), so the next build does not pay for them again."""
    killed = run_killed(crash_bed, Scenario("after the first call", "embedding_batch:1"))
    assert killed.texts_sent > 0
    cached_base, _ = embedding_counts(crash_bed.base)
    cached_after_kill, _ = embedding_counts(crash_bed.live.db_path)
    assert cached_after_kill - cached_base >= killed.texts_sent, (
        f"the killed build obtained {killed.texts_sent} vectors; "
        f"{cached_after_kill - cached_base} were kept"
    )
    # the recovery sends only what the killed build had not obtained (checked by
    # recover_and_check: texts sent == new vectors), and nothing lost counts as paid twice
    recover_and_check(crash_bed, killed, "after the first call", texts_lost=0)
    assert crash_bed_pending(crash_bed.live.db_path) == 0


def crash_bed_pending(db: Path) -> int:
    """Rows left in embedding_cache_pending (none once a build has finished)."""
    from ragmart.duck import connect

    conn = connect(db, read_only=True)
    try:
        return conn.execute("select count(*) from embedding_cache_pending").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_build_killed_at_many_random_moments_recovers(crash_bed: CrashBed) -> None:
    outcomes = [run_scenario(crash_bed, s) for s in random_offsets(16, seed=7, window=3.0)]
    assert sum(o.killed for o in outcomes) >= 8, [o.seconds for o in outcomes]


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario",
    [
        Scenario("first build, staging: all files parsed", "ingest_done", fresh=True),
        Scenario("first build, embedding: after 2 provider calls", "embedding_batch:2",
                 fresh=True),
        Scenario("first build: run recorded, vectors not written", "embeddings_recorded",
                 fresh=True),
        Scenario("first build: embeddings committed", trigger=EMBEDDINGS_DONE, fresh=True),
        Scenario("first build: index model started", trigger=INDEX_MODEL, fresh=True),
        Scenario("staging: after the 1st new file", "ingest_file:1"),
        Scenario("staging: new files parsed, nothing written", "ingest_done"),
        Scenario("embedding: after the 2nd provider call", "embedding_batch:2"),
        Scenario("index maintenance: model started +0.05 s", trigger=INDEX_MODEL, delay=0.05),
        Scenario("index maintenance: model started +0.15 s", trigger=INDEX_MODEL, delay=0.15),
        Scenario("index maintenance: model started +0.3 s", trigger=INDEX_MODEL, delay=0.3),
        Scenario("index maintenance: in the checkpoint (commit +0.1 s)", trigger=INDEX_MODEL,
                 after_commit=0.1),
        Scenario("index maintenance: in the checkpoint (commit +0.3 s)", trigger=INDEX_MODEL,
                 after_commit=0.3),
        Scenario("first build: index committed, before the checkpoint", trigger=INDEX_MODEL,
                 after_commit=0.0, fresh=True),
    ],
    ids=str,
)
def test_killed_build_recovers_more_points(crash_bed: CrashBed, scenario: Scenario) -> None:
    run_scenario(crash_bed, scenario, data_tests=True)


@pytest.mark.slow
def test_recovery_build_killed_too(crash_bed: CrashBed) -> None:
    """Two crashes in a row (the first recovery dies as well) still converge."""
    first = run_killed(crash_bed, Scenario("embedding", "embedding_batch:1"))
    second = crash_bed.live.build(trigger=INDEX_MODEL, delay=0.05)
    assert second.killed, second.tail()
    recover_and_check(crash_bed, second, "killed twice: embedding, then index maintenance",
                      texts_lost=first.texts_sent + second.texts_sent)


def test_recovery_check_can_fail(crash_bed: CrashBed) -> None:
    """The check reports a served chunk that went missing."""
    from ragmart.duck import connect

    db = crash_bed.live.db_path
    crash_bed.live.restore(crash_bed.scratch)
    assert_same_state(snapshot(db), crash_bed.reference, "a copy of the reference")
    conn = connect(db)
    try:
        conn.execute("delete from fct_chunk_embeddings_v1 where chunk_id in "
                     "(select min(chunk_id) from fct_chunk_embeddings_v1)")
    finally:
        conn.close()
    state = snapshot(db)
    with pytest.raises(AssertionError, match="live chunks not served"):
        assert_same_state(state, crash_bed.reference, "tampered")
    assert any(p.startswith("live_chunks:") for p in state_differences(state, crash_bed.reference))
