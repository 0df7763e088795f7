"""Recall@k and latency of PostgreSQL's HNSW path at 100% eligible, for the settings that trade
one for the other: hnsw.ef_search, hnsw.iterative_scan, and the index's build parameters
(m, ef_construction), side by side in one run on one published corpus.

On bench/serving.py's data (the retrieval bench's cached set, bench/serving_data.py), at
`--chunks` (default 100,000): one full publish of v1 (ragmart.serving.postgres.publish.
publish_version), `--queries` query vectors and their exact top-k (DuckDB's exact scan of the
same rows), then for each index build (`--build m,ef_construction`, repeatable; the first is
the one the publish built, by schema.hnsw_build's rule for the size, the others rebuilt and
timed), each iterative scan order and each `--ef` value: every query through
ragmart.retrieval.postgres.PostgresReader (the plan users get, the settings patched into
ragmart.retrieval.postgres_sql), its p50 / p95, recall@k and the share answered with k rows;
also at each `--eligible` share and each plan threshold `--exact-max` (at most that many
eligible rows are scored exactly), and with `--readers-seconds` bench/serving.py's 8
concurrent readers at 10% eligible.
A warm-up pass runs first. Prints one line per setting and writes
target/bench/serving-recall-<chunks>.json.

    flock /tmp/ragmart-bench.lock .venv/bin/python bench/serving_recall.py \
        --ef 400 --ef 800 --build 16,64 --build 24,128
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from retrieval import (  # noqa: E402
    SELECTIVITIES,
    cached_database,
    exact_ids,
    percentile,
    sample_queries,
)
from serving import concurrent, postgres_readers  # noqa: E402
from serving_data import VERSION, build_database  # noqa: E402
from serving_postgres import Searcher, Server  # noqa: E402

from ragmart.duck import connect  # noqa: E402

OUT = ROOT / "target" / "bench"


def measure(url: str, queries, truths, k: int, types: list[str] | None = None) -> dict:
    reader = Searcher(url)
    runs = []
    try:
        for q, truth in zip(queries, truths, strict=True):
            started = time.perf_counter()
            ids = reader.search(q, types, k)
            runs.append(((time.perf_counter() - started) * 1000, ids, truth))
    finally:
        reader.close()
    ms = [r[0] for r in runs]
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "recall_at_k": round(sum(len(set(i) & set(t)) / len(t) for _, i, t in runs)
                                 / len(runs), 4),
            "k_rows_share": round(sum(len(i) == k for _, i, _ in runs) / len(runs), 4),
            "strategies": reader.strategies}


def rebuild(url: str, m: int, ef_construction: int) -> float:
    """Drop and rebuild v1's HNSW index with these parameters: seconds."""
    import psycopg

    from ragmart.serving.postgres.schema import raise_build_memory

    table = "ragmart.fct_chunk_embeddings_v1"
    with psycopg.connect(url, autocommit=True) as conn:
        raise_build_memory(conn, transaction_only=False, tables=[table.split(".")[1]], m=m)
        conn.execute("drop index if exists ragmart.fct_chunk_embeddings_v1_embedding_hnsw")
        started = time.perf_counter()
        conn.execute(f"create index fct_chunk_embeddings_v1_embedding_hnsw on {table} using "
                     f"hnsw (embedding vector_cosine_ops) with (m = {m}, "
                     f"ef_construction = {ef_construction})")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--ef", type=int, action="append", default=[],
                        help="pin hnsw.ef_search (default: the shipped rule, by the chunks)")
    parser.add_argument("--order", action="append", default=[],
                        choices=["strict_order", "relaxed_order"])
    parser.add_argument("--build", action="append", default=[], metavar="M,EF_CONSTRUCTION",
                        help="index builds to compare (the first: the publish's own)")
    parser.add_argument("--eligible", type=float, action="append", default=[],
                        choices=sorted(SELECTIVITIES), help="share eligible (default 1.0)")
    parser.add_argument("--exact-max", type=int, action="append", default=[],
                        help="the plan's threshold postgres_sql.EXACT_MAX_ELIGIBLE to try")
    parser.add_argument("--readers-seconds", type=float, default=0,
                        help="also run bench/serving.py's 8 concurrent PostgreSQL readers (10%% "
                        "eligible) this long at each setting")
    args = parser.parse_args(argv)
    from ragmart.retrieval import postgres_sql
    from ragmart.serving.postgres.publish import publish_version
    from ragmart.serving.postgres.schema import hnsw_build

    EXACT_MAX = postgres_sql.EXACT_MAX_ELIGIBLE  # noqa: N806 - the planner's, as shipped
    EF_SEARCH, EF_SEARCH_MAX = postgres_sql.EF_SEARCH, postgres_sql.EF_SEARCH_MAX  # noqa: N806

    work = Path(tempfile.mkdtemp(prefix="ragmart-bench-recall-"))
    server = Server(chunks=args.chunks)  # shared_buffers that hold the graph
    results: dict = {"chunks": args.chunks, "queries": args.queries, "settings": []}
    try:
        # exact answers come from DuckDB's scan: vss's index is never read here
        build_db = build_database(cached_database(args.chunks, hnsw=False),
                                  work / "build.duckdb")
        url = server.database("recall")
        started = time.perf_counter()
        publish_version(build_db, VERSION, url)
        results["full_publish_s"] = round(time.perf_counter() - started, 1)
        print(f"full publish {results['full_publish_s']} s", flush=True)
        conn = connect(build_db, read_only=True)
        queries = sample_queries(conn, args.queries)
        truths = {s: [exact_ids(conn, q.tolist(), SELECTIVITIES[s], args.k) for q in queries]
                  for s in args.eligible or [1.0]}
        conn.close()
        measure(url, queries[:20], next(iter(truths.values()))[:20], args.k)  # warm-up
        builds = [tuple(int(x) for x in b.split(",")) for b in args.build] or [
            hnsw_build(args.chunks)]
        for i, (m, efc) in enumerate(builds):
            built = None if i == 0 else round(rebuild(url, m, efc), 1)
            for order in args.order or ["strict_order"]:
                for ef, most in itertools.product(args.ef or [None],
                                                  args.exact_max or [EXACT_MAX]):
                    # --ef pins ef_search; without it, the shipped rule (by the chunks)
                    postgres_sql.EF_SEARCH, postgres_sql.EF_SEARCH_MAX = (
                        (ef, ef) if ef is not None else (EF_SEARCH, EF_SEARCH_MAX))
                    postgres_sql.ITERATIVE_SCAN = order
                    postgres_sql.EXACT_MAX_ELIGIBLE = most
                    setting = {"m": m, "ef_construction": efc, "index_build_s": built,
                               "iterative_scan": order, "ef_search": ef or "by chunks",
                               "exact_max_eligible": most}
                    for share, truth in truths.items():
                        figures = {**setting, "eligible": share, **measure(
                            url, queries, truth, args.k, SELECTIVITIES[share])}
                        results["settings"].append(figures)
                        print(json.dumps(figures), flush=True)
                    if args.readers_seconds:
                        readers = SimpleNamespace(searcher=lambda: Searcher(url))
                        figures = {**setting, "readers": concurrent(
                            postgres_readers(readers), queries, args.k, args.readers_seconds)}
                        results["settings"].append(figures)
                        print(json.dumps(figures), flush=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"serving-recall-{args.chunks}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
