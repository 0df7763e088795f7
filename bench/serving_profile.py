"""Where an incremental publish to PostgreSQL spends its time, at one or more corpus sizes.

On bench/serving.py's data (the retrieval bench's cached set plus the history and access
tables a build writes, bench/serving_data.py), for each `--chunks` size: a full publish of v1
(ragmart.serving.postgres.publish.publish_version, timed), then `--rounds` times: 1% of the
documents edited as an incremental build writes them, and the incremental publish, with
every SQL statement and COPY it runs timed (the slowest listed) and its phases summed:
the DuckDB side, each statement kind, the prune and its VACUUM; then once more with nothing
changed (the publish's fixed cost). Prints one summary line per publish: seconds, rows
written, and the incremental/full ratio the issue's goal is stated in, with the connections
opened, each COPY's wall time against its server backend's CPU time, and what the server did
meanwhile (checkpoints and the buffers they wrote, full-page images in the WAL, blocks read
from outside shared_buffers, autovacuum workers seen).
A COPY's time runs from its statement to the server's answer: since DuckDB's side runs on a
thread of its own (ragmart.serving.postgres.pipeline), it includes any wait for the producer's
first rows, and the DuckDB work it overlaps is no longer on the publish's path.

    flock /tmp/ragmart-bench.lock .venv/bin/python bench/serving_profile.py --chunks 20000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from retrieval import cached_database  # noqa: E402
from serving_data import VERSION, build_database, edit  # noqa: E402
from serving_postgres import Server  # noqa: E402

OUT = ROOT / "target" / "bench"


class StatementTimer:
    """Times every psycopg statement and COPY (patched on the Cursor class while active), and
    counts the connections opened (psycopg.connect, what ragmart.serving.postgres.settings
    calls)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str]] = []
        self.connections = 0
        # (wall seconds, the server backend's CPU seconds, COPY target) of each COPY: wall
        # well above CPU is waiting (for the producer, a lock, the disk or a busy machine)
        self.copies: list[tuple[float, float, str]] = []
        # server backend pid -> its CPU seconds at its connection's last statement: with this
        # process's CPU time, the publish's CPU, a figure a loaded machine disturbs far less
        # than its seconds
        self.backend_cpu: dict[int, float] = {}

    def __enter__(self) -> StatementTimer:
        import psycopg

        self._execute, self._copy = psycopg.Cursor.execute, psycopg.Cursor.copy
        self._connect = psycopg.connect
        timer = self

        def connect(*a, **kw):
            timer.connections += 1
            return timer._connect(*a, **kw)

        psycopg.connect = connect

        def execute(cur, query, params=None, **kw):
            started = time.perf_counter()
            try:
                return timer._execute(cur, query, params, **kw)
            finally:
                timer.rows.append((time.perf_counter() - started, str(query)))
                with contextlib.suppress(Exception):  # a closed or broken connection
                    pid = cur.connection.info.backend_pid
                    timer.backend_cpu[pid] = _backend_cpu(pid)

        class TimedCopy:
            def __init__(self, cur, statement, *a, **kw):
                self.cur = cur
                self.inner = timer._copy(cur, statement, *a, **kw)
                self.statement = str(statement)

            def __enter__(self):
                self.pid = self.cur.connection.info.backend_pid
                self.cpu = _backend_cpu(self.pid)
                self.started = time.perf_counter()
                return self.inner.__enter__()

            def __exit__(self, *exc):
                try:
                    return self.inner.__exit__(*exc)
                finally:
                    seconds = time.perf_counter() - self.started
                    timer.rows.append((seconds, self.statement))
                    timer.backend_cpu[self.pid] = _backend_cpu(self.pid)
                    timer.copies.append((round(seconds, 3), round(
                        _backend_cpu(self.pid) - self.cpu, 2), self.statement.split(" (")[0]))

        psycopg.Cursor.execute = execute
        def copy(cur, statement, *a, **kw):
            return TimedCopy(cur, statement, *a, **kw)

        psycopg.Cursor.copy = copy
        return self

    def __exit__(self, *exc) -> None:
        import psycopg

        psycopg.Cursor.execute, psycopg.Cursor.copy = self._execute, self._copy
        psycopg.connect = self._connect

    def summary(self, top: int = 8) -> dict:
        kinds: dict[str, float] = defaultdict(float)
        for seconds, sql in self.rows:
            words = re.sub(r"\s+", " ", sql).strip().split(" ")
            kinds[" ".join(words[:2]).lower()] += seconds
        slowest = sorted(self.rows, reverse=True)[:top]
        return {"statements": len(self.rows), "connections": self.connections,
                "server_cpu": round(sum(self.backend_cpu.values()), 2),
                "copies": sorted(self.copies, reverse=True)[:3],
                "sql_seconds": round(sum(s for s, _ in self.rows), 3),
                "by_kind": {k: round(v, 3) for k, v in sorted(kinds.items(),
                                                              key=lambda kv: -kv[1])[:top]},
                "slowest": [(round(s, 3), re.sub(r"\s+", " ", q)[:140]) for s, q in slowest]}


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server backend `pid` has used (the bench's server runs
    on this machine: /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watcher:
    """Polls pg_stat_activity every 20 ms on a connection of its own while a publish runs:
    the autovacuum workers (and what they work on) and the checkpointer when it is writing a
    checkpoint (wait_event CheckpointWriteDelay) are what else the server did meanwhile; the
    publish's active backends, sampled, say whether they ran or what they waited for."""

    def __init__(self, url: str):
        import threading

        import psycopg

        # made before StatementTimer patches them: its statements are not the publish's
        self._connect, self._execute = psycopg.connect, psycopg.Cursor.execute
        self.url, self.seen = url, set()
        self.waits: dict[str, int] = {}  # samples of the publish's active backends, by wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        with self._connect(self.url, autocommit=True) as conn, conn.cursor() as cur:
            while not self._stop.wait(0.02):
                for kind, event, query in self._execute(cur,
                        "select backend_type, wait_event, left(query, 60) from pg_stat_activity "
                        "where backend_type = 'autovacuum worker' or (backend_type = "
                        "'checkpointer' and wait_event is distinct from 'CheckpointerMain')"):
                    self.seen.add(f"{kind}: {event}: {query}")
                # what the publish's backends were doing: on CPU (no wait event) or waiting
                for (event,) in self._execute(cur,
                        "select coalesce(wait_event_type || ':' || wait_event, 'CPU') "
                        "from pg_stat_activity where backend_type = 'client backend' "
                        "and datname = current_database() and pid <> pg_backend_pid() "
                        "and state = 'active'"):
                    self.waits[event] = self.waits.get(event, 0) + 1

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


SERVER_COUNTERS = """
    select (select num_done from pg_stat_checkpointer) as checkpoints,
        (select buffers_written from pg_stat_checkpointer) as checkpoint_buffers,
        (select blks_read from pg_stat_database where datname = current_database())
            as blocks_read,
        (select blks_hit from pg_stat_database where datname = current_database()) as blocks_hit,
        (select (blk_read_time * 1000)::bigint from pg_stat_database
         where datname = current_database()) as read_wait_us,
        (select coalesce(sum(autovacuum_count + autoanalyze_count), 0) from pg_stat_user_tables
         where schemaname = 'ragmart') as autovacuums,
        (select count(*) from pg_stat_activity where backend_type = 'autovacuum worker')
            as autovacuum_workers,
        pg_current_wal_lsn() - '0/0'::pg_lsn as wal_bytes,
        (select wal_fpi from pg_stat_wal) as wal_full_page_images"""
# blocks each relation of the schema read from outside shared_buffers (table, its indexes)
RELATION_READS = """
    select relname, heap_blks_read from pg_statio_all_tables where schemaname = 'ragmart'
    union all
    select indexrelname, idx_blks_read from pg_statio_all_indexes where schemaname = 'ragmart'"""


def server_counters(url: str) -> dict:
    """The server's cumulative counters a publish's time may depend on beyond its own
    statements: checkpoints done (and buffers they wrote), blocks read from outside
    shared_buffers vs found there, autovacuum/autoanalyze runs on the schema's tables, the
    autovacuum workers running now, WAL written. On a connection of its own (not counted)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        cur = conn.execute(SERVER_COUNTERS)
        found = {d.name: int(v) for d, v in zip(cur.description, cur.fetchone(), strict=True)}
        found["reads"] = {name: int(n or 0) for name, n in conn.execute(RELATION_READS)}
        return found


def _delta(before: dict, after: dict) -> dict:
    delta = {k: after[k] - before[k] if k != "autovacuum_workers" else (before[k], after[k])
             for k in before if k != "reads"}
    delta["reads"] = {name: n - before["reads"].get(name, 0)
                      for name, n in after["reads"].items() if n - before["reads"].get(name, 0)}
    return delta


def publish_once(build_db: Path, url: str, *, cprofile: bool = False) -> dict:
    import cProfile
    import pstats

    from ragmart.serving.postgres.publish import publish_version

    profiler = cProfile.Profile() if cprofile else None
    before = server_counters(url)
    with Watcher(url) as watcher, StatementTimer() as timer:
        cpu = time.process_time()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        pub = publish_version(build_db, VERSION, url)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    time.sleep(0.6)  # backends flush their statistics at most once a second
    server = _delta(before, server_counters(url))
    server["seen"] = sorted(watcher.seen)
    server["backend_samples"] = dict(sorted(watcher.waits.items(), key=lambda kv: -kv[1]))
    return {"seconds": round(seconds, 3), "client_cpu": round(cpu, 2),
            "incremental": pub.incremental, "server": server,
            "rows_written": pub.rows_written, "rows_removed": pub.rows_removed,
            "tables": pub.tables, **timer.summary()}


def checkpoint(url: str) -> None:
    """CHECKPOINT now (untimed): the next publish is the first since a checkpoint, as every
    publish is on a server whose checkpoint_timeout (5 min by default) is shorter than the time
    between publishes: each page it changes goes to the WAL whole once (full_page_writes)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")


def profile_size(n: int, server: Server, rounds: int, cprofile: bool = False,
                 checkpoints: bool = False) -> dict:
    cached = cached_database(n)
    work = Path(tempfile.mkdtemp(prefix=f"ragmart-bench-profile-{n}-"))
    try:
        build_db = build_database(cached, work / "build.duckdb")
        url = server.database(f"profile_{n}")
        figures = {"chunks": n, "full": publish_once(build_db, url), "incremental": []}
        print(f"{n:,} full: {figures['full']['seconds']:.2f} s, "
              f"{figures['full']['rows_written']:,} rows; server: "
              f"{json.dumps(figures['full']['server'])}", flush=True)
        for round_ in range(1, rounds + 1):
            edit(build_db, 0.01, round_=round_)
            if checkpoints:
                checkpoint(url)
            inc = publish_once(build_db, url, cprofile=cprofile and round_ == rounds)
            figures["incremental"].append(inc)
            ratio = inc["seconds"] / figures["full"]["seconds"]
            print(f"{n:,} incremental #{round_}: {inc['seconds']:.2f} s ({ratio:.1%} of full), "
                  f"{inc['rows_written']:,} written + {inc['rows_removed']:,} removed; "
                  f"SQL {inc['sql_seconds']:.2f} s in {inc['statements']} statements, "
                  f"{inc['connections']} connections: {json.dumps(inc['by_kind'])}", flush=True)
            print(f"    server: {json.dumps(inc['server'])}", flush=True)
            print(f"    CPU s: this process {inc['client_cpu']}, server backends "
                  f"{inc['server_cpu']}; COPY wall s, backend CPU s: "
                  f"{json.dumps(inc['copies'])}", flush=True)
            for seconds, sql in inc["slowest"][:5]:
                print(f"    {seconds:7.3f} s  {sql}", flush=True)
        # what every publish costs whatever it writes: the same source again, nothing changed
        if checkpoints:
            checkpoint(url)
        figures["unchanged"] = idle = publish_once(build_db, url)
        print(f"{n:,} unchanged: {idle['seconds']:.2f} s "
              f"({idle['seconds'] / figures['full']['seconds']:.1%} of full), "
              f"{idle['rows_written']} written; SQL {idle['sql_seconds']:.2f} s in "
              f"{idle['statements']} statements, {idle['connections']} connections, CPU s: "
              f"this process {idle['client_cpu']}, server backends {idle['server_cpu']}: "
              f"{json.dumps(idle['by_kind'])}", flush=True)
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, action="append", default=[], metavar="N")
    parser.add_argument("--rounds", type=int, default=4,
                        help="edits and incremental publishes per size (pruning starts at 4)")
    parser.add_argument("--cprofile", action="store_true",
                        help="print the Python profile of the last incremental publish")
    parser.add_argument("--ef-construction", type=int, metavar="N",
                        help="build the HNSW index with this ef_construction instead of "
                        "ragmart.serving.postgres.schema.HNSW_EF_CONSTRUCTION (inserts into the "
                        "graph cost more the higher it is)")
    parser.add_argument("--one-connection", action="store_true",
                        help="insert the new serving rows in one COPY on the publish's own "
                        "connection, as before ragmart.serving.postgres.parallel (an A/B of "
                        "the second connection in one checkout)")
    parser.add_argument("--checkpoint", action="store_true",
                        help="CHECKPOINT (untimed) before each incremental publish: each is "
                        "then the first since a checkpoint, as on a server where publishes "
                        "are further apart than checkpoint_timeout (full-page images)")
    args = parser.parse_args(argv)
    if args.one_connection:
        from ragmart.serving.postgres import pipeline

        pipeline.MIN_SPLIT_ROWS = sys.maxsize  # never cut: the second COPY gets no rows
    if args.ef_construction:
        from ragmart.serving.postgres import schema

        schema.HNSW_EF_CONSTRUCTION = args.ef_construction
    server = Server()
    try:
        results = [profile_size(n, server, args.rounds, args.cprofile, args.checkpoint)
                   for n in args.chunks or [20_000]]
    finally:
        server.close()
    OUT.mkdir(parents=True, exist_ok=True)
    efc = f"-efc{args.ef_construction}" if args.ef_construction else ""
    efc += "-one-connection" if args.one_connection else ""
    efc += "-checkpoint" if args.checkpoint else ""
    out = OUT / f"serving-profile-{'-'.join(str(r['chunks']) for r in results)}{efc}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
