"""Lexical and hybrid search: DuckDB serving vs PostgreSQL, side by side in one run.

On the serving bench's data (bench/serving.py: the retrieval bench's synthetic 384-d chunks,
cached under bench/out/), it publishes v1 once to each engine (DuckDB: `ragmart publish`'s
snapshot, which gets its own full-text index; PostgreSQL: the same publish with
RAGMART_SERVING_URL set, the BM25 statistics included, timed by table), then searches every
query vector in each mode (vector, lexical, hybrid) on both engines, top-10, every chunk
eligible, in-process: DuckDB through a long-lived reader's path (the serving vectors in memory,
as ragmart.Retriever), PostgreSQL through ragmart.retrieval.postgres.PostgresReader. Two kinds
of question over the synthetic text ("synthetic chunk doc-000123@1#0004"):

  - rare: a document number ("000123"): its 10 chunks hold the term;
  - common: "synthetic chunk 000123": every chunk holds a term (the worst case for BM25: every
    eligible chunk is scored).

It prints p50 / p95 per engine, mode and kind, and how many answers were the same on both
engines (chunk ids in order). Results: a table on stdout and target/bench/serving-lexical-<n>.json.

    .venv/bin/python bench/serving_lexical.py --chunks 100000 --queries 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from retrieval import cached_database, percentile, sample_queries  # noqa: E402
from serving import OUT, no_evaluation, no_gate  # noqa: E402
from serving_data import VERSION, build_database, edit  # noqa: E402
from serving_postgres import PostgresServing, Server  # noqa: E402

from ragmart.duck import connect  # noqa: E402

MODES = ("vector", "lexical", "hybrid")
KINDS = {"rare": "{doc:06d}", "common": "synthetic chunk {doc:06d}"}


def duckdb_publish(build_db: Path) -> dict:
    """`ragmart publish`'s function (the gate left out, as bench/serving.py does): seconds and
    the snapshot's path."""
    from ragmart.serving.pointer import publish_dir
    from ragmart.serving.publish import publish

    started = time.monotonic()
    publication = publish(build_db, VERSION, evaluate=no_evaluation, gate=no_gate)
    return {"seconds": round(time.monotonic() - started, 2),
            "snapshot": str(publish_dir(build_db) / publication.snapshot)}


def timed_terms() -> list[dict]:
    """Time ragmart.serving.postgres.lexical.publish_terms inside each PostgreSQL publish (it
    runs in publish_version's transaction): one entry per call, seconds and rows by table."""
    import ragmart.serving.postgres.publish as pg_publish

    calls: list[dict] = []
    original = pg_publish.publish_terms

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        tables = original(*args, **kwargs)
        calls.append({"seconds": round(time.perf_counter() - started, 2), "tables": tables})
        return tables
    pg_publish.publish_terms = wrapper
    return calls


def lexical_bytes(url: str) -> dict:
    import psycopg

    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select c.relname, pg_total_relation_size(c.oid) from pg_class as c where "
            "c.relnamespace = 'ragmart'::regnamespace and c.relkind = 'r' and "
            "c.relname like 'lexical%' order by 1").fetchall())


def _questions(conn, n: int) -> list[int]:
    """`n` document numbers of the set (seeded)."""
    (documents,) = conn.execute("select count(distinct document_id) from "
                                f"fct_chunk_embeddings_{VERSION}").fetchone()
    return [(i * 7919) % documents for i in range(n)]


def measure(snapshot: Path, url: str, queries, k: int) -> dict:
    from ragmart.retrieval.contracts import Contract
    from ragmart.retrieval.fusion import search_mode
    from ragmart.retrieval.memory import ServingVectors
    from ragmart.retrieval.postgres import PostgresReader
    from ragmart.retrieval.sql import Tables

    conn = connect(snapshot, read_only=True)
    tables = Tables.for_version(VERSION)
    vectors = ServingVectors.load(conn, tables.serving)
    reader = PostgresReader(url)
    contract = Contract(name="bench", missing_allowed_groups="allow")
    common = {"k": k, "contract": contract, "groups": ["all-staff"]}
    docs = _questions(conn, len(queries))
    report: dict = {}
    try:
        for kind, template in KINDS.items():
            for mode in MODES:
                ms: dict[str, list[float]] = {"duckdb": [], "postgres": []}
                same = 0
                for q, doc in zip(queries, docs, strict=True):
                    question = template.format(doc=doc)
                    started = time.perf_counter()
                    duck = search_mode(conn, question, q, mode=mode, tables=tables,
                                       vectors=vectors, **common)
                    ms["duckdb"].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    pg = reader.search(q, mode=mode, question=question, **common)
                    ms["postgres"].append((time.perf_counter() - started) * 1000)
                    same += [c.chunk_id for c in duck] == [c.chunk_id for c in pg]
                row = {engine: {"p50_ms": round(statistics.median(v), 1),
                                "p95_ms": round(percentile(v, 0.95), 1)}
                       for engine, v in ms.items()}
                row["same_answers"] = f"{same}/{len(queries)}"
                report[f"{kind}/{mode}"] = row
                print(kind, mode, json.dumps(row), flush=True)
    finally:
        reader.close()
        conn.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("-k", "--k", type=int, default=10)
    args = parser.parse_args(argv)
    cached = cached_database(args.chunks)
    work = Path(tempfile.mkdtemp(prefix="ragmart-bench-lexical-"))
    server = Server()
    try:
        build_db = build_database(cached, work / "build.duckdb")
        postgres = PostgresServing(server.database("bench_lexical"), work / "published-pg")
        print(f"== {args.chunks:,} chunks: publish", flush=True)
        terms = timed_terms()
        duck = duckdb_publish(build_db)
        started = time.monotonic()
        pg = postgres.publish(build_db, no_evaluation, no_gate)
        figures = {"chunks": args.chunks, "queries": args.queries,
                   "publish": {"duckdb_seconds": duck["seconds"], "postgres": pg,
                               "postgres_wall_seconds": round(time.monotonic() - started, 1)}}
        figures["publish"]["postgres_terms"] = terms[-1]
        figures["publish"]["postgres_terms_bytes"] = lexical_bytes(postgres.url)
        print(json.dumps(figures["publish"]), flush=True)
        snapshot = Path(duck["snapshot"])
        conn = connect(snapshot, read_only=True)
        queries = sample_queries(conn, args.queries)
        conn.close()
        figures["search"] = measure(snapshot, postgres.url, queries, args.k)
        print(f"== {args.chunks:,} chunks: incremental publish after 1% edited", flush=True)
        figures["edit"] = edit(build_db, 0.01)
        figures["incremental_publish"] = {"postgres": postgres.publish(
            build_db, no_evaluation, no_gate), "postgres_terms": terms[-1]}
        print(json.dumps(figures["incremental_publish"]), flush=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"serving-lexical-{args.chunks}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"\n| {args.chunks:,} chunks, top-{args.k} | DuckDB p50 / p95 ms | "
          "PostgreSQL p50 / p95 ms | same answers |\n|---|---|---|---|")
    for name, row in figures["search"].items():
        d, p = row["duckdb"], row["postgres"]
        print(f"| {name} | {d['p50_ms']} / {d['p95_ms']} | {p['p50_ms']} / {p['p95_ms']} | "
              f"{row['same_answers']} |")
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
