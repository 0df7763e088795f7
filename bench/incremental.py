"""Incremental re-embedding benchmark (issue: cost scales with the change, not the corpus).

Generates a corpus of N documents (~10 chunks each) as one DMS parquet file, builds it from
scratch with the hash provider, then lands a batch editing 1% of the documents by one paragraph
and builds again. Prints, measured in this run:
  - provider texts sent vs chunk texts truly changed (target ratio 1.00),
  - what re-embedding whole changed documents would have sent,
  - incremental build wall time vs a full rebuild (target <= 10%), and vs a no-change build
    (dbt's fixed start-up),
  - the same builds in a warm process (`ragmart build --watch`: dbt imported and the project
    parsed once, ragmart.build.runner.WarmDbt), where a build costs its nodes and not dbt's
    start-up,
for each corpus size (default 2,000 and 10,000 documents). Every build is the production build
(`make build`: unit tests excluded). Then the full-text (BM25) index of lexical search
(ragmart.serving.lexical_index): whether the incremental build rebuilt it (it should not: the
edits stay under the lexical_delta_* thresholds), what a rebuild of the whole corpus costs (what
a build past the thresholds, a slim publish and a purge pay), and a lexical and a hybrid query
with the edits in the delta (scored by tokenizing them) against the same after a rebuild.

    .venv/bin/python bench/incremental.py [--docs 2000 10000] [--edit-share 0.01]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragmart.build.runner import PRODUCTION_BUILD_ARGS, WarmDbt, split_seconds  # noqa: E402
from ragmart.chunking.chunkers import chunk_document  # noqa: E402
from ragmart.duck import connect  # noqa: E402
from ragmart.embedding.runs import recent_runs  # noqa: E402

WORDS = (
    "employee manager approval request days policy company budget travel leave security access "
    "review incident report data customer refund vendor contract training equipment office "
    "remote schedule payroll benefits exception deadline retention audit invoice purchase "
    "laptop password device network backup recovery region holiday overtime relocation"
).split()
SECTIONS = ["Purpose", "Scope", "Definitions", "Policy", "Procedure", "Exceptions",
            "Effective date"]


def paragraph(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_document(rng: random.Random, n_paragraphs: int = 10) -> list[tuple[str, list[str]]]:
    sections: list[tuple[str, list[str]]] = []
    for i in range(n_paragraphs):
        heading = SECTIONS[min(i * len(SECTIONS) // n_paragraphs, len(SECTIONS) - 1)]
        if not sections or sections[-1][0] != heading:
            sections.append((heading, []))
        sections[-1][1].append(paragraph(rng))
    return sections


def render(title: str, sections: list[tuple[str, list[str]]]) -> str:
    out = [f"# {title}", ""]
    for heading, paragraphs in sections:
        out += [f"## {heading}", ""]
        for p in paragraphs:
            out += [p, ""]
    return "\n".join(out)


def write_batch(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def event(op: str, seq: int, doc_id: str, title: str, content: str) -> dict:
    ts = dt.datetime(2026, 11, 2) + dt.timedelta(seconds=seq)
    return {"Op": op, "commit_ts": ts, "change_seq": seq, "document_id": doc_id,
            "document_type": "policy", "title": title, "content": content, "updated_at": ts}


def build_env(workdir: Path, db: Path, landing: Path) -> dict[str, str]:
    return {
        "RAGMART_DB": str(db), "RAGMART_LANDING_DIR": str(landing),
        "RAGMART_EMBEDDING_PROVIDER": "hash", "DBT_PROFILES_DIR": str(ROOT),
        "DBT_PROJECT_DIR": str(ROOT), "DBT_TARGET_PATH": str(workdir / "target"),
        "DBT_LOG_PATH": str(workdir / "logs"), "DO_NOT_TRACK": "1",
    }


def dbt_build(workdir: Path, db: Path, landing: Path) -> float:
    """One `dbt build` in a fresh process (what a scheduler running the CLI pays)."""
    env = {**os.environ, **build_env(workdir, db, landing)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dbt.cli.main", "build", "-x",
                           *PRODUCTION_BUILD_ARGS], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dbt build failed:\n{proc.stdout[-4000:]}")
    return elapsed


def slowest_nodes(workdir: Path, n: int = 5) -> list[tuple[str, float]]:
    import json

    results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
    timed = sorted(((r["unique_id"].split(".")[-1], r["execution_time"]) for r in results),
                   key=lambda x: -x[1])
    return timed[:n]


def node_seconds(workdir: Path) -> dict[str, float]:
    """Seconds the last build spent in models (and seeds) and in tests, from run_results.json;
    the rest of its wall time is dbt's start-up, parsing and bookkeeping."""
    import json

    results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
    return split_seconds((r["unique_id"], r["execution_time"]) for r in results)


def last_run(db: Path) -> dict:
    conn = connect(db, read_only=True)
    try:
        return recent_runs(conn, 1)[0]
    finally:
        conn.close()


def bench(n_docs: int, edit_share: float, seed: int = 42) -> dict:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix=f"ragmart-bench-{n_docs}-"))
    landing, db = work / "landing", work / "incremental.duckdb"
    docs = {f"doc-{i:05d}": make_document(rng) for i in range(n_docs)}
    write_batch(landing / "dms" / "0001_load.parquet",
                [event("I", i + 1, d, d.title(), render(d.title(), s))
                 for i, (d, s) in enumerate(docs.items())])
    t_first = dbt_build(work, db, landing)
    first = last_run(db)
    t_noop = dbt_build(work, db, landing)
    noop_split = node_seconds(work)
    # the same state for the warm process, measured after the cold builds
    warm_db, warm_landing = work / "warm.duckdb", work / "warm-landing"
    shutil.copyfile(db, warm_db)
    shutil.copytree(landing, warm_landing)

    # Edit one paragraph in edit_share of the documents.
    edited = rng.sample(sorted(docs), max(1, int(n_docs * edit_share)))
    rows, truly_changed, whole_docs = [], 0, 0
    for j, doc_id in enumerate(edited):
        before = {c.chunk_hash for c in chunk_document(doc_id.title(),
                                                       render(doc_id.title(), docs[doc_id]))}
        sections = [(h, list(ps)) for h, ps in docs[doc_id]]
        h = rng.randrange(len(sections))
        p = rng.randrange(len(sections[h][1]))
        sections[h][1][p] = paragraph(rng)
        docs[doc_id] = sections
        after = chunk_document(doc_id.title(), render(doc_id.title(), sections))
        truly_changed += len({c.chunk_hash for c in after} - before)
        whole_docs += len(after)
        rows.append(event("U", n_docs + 1 + j, doc_id, doc_id.title(),
                          render(doc_id.title(), sections)))
    write_batch(landing / "dms" / "0002_edits.parquet", rows)
    t_incremental = dbt_build(work, db, landing)
    incremental = last_run(db)
    slowest = slowest_nodes(work)
    incremental_split = node_seconds(work)
    lexical = lexical_costs(work, db)

    # Full rebuild of the same landing zone into a fresh database.
    t_full = dbt_build(work, work / "full.duckdb", landing)

    # Warm: one process, dbt imported and parsed once; a no-change build, then the same edits.
    warm = warm_builds(work / "warm", warm_db, warm_landing,
                       landing / "dms" / "0002_edits.parquet")
    assert last_run(warm_db)["texts_sent"] == incremental["texts_sent"]
    chunks = first["chunks_in_serving_set"]
    shutil.rmtree(work, ignore_errors=True)
    return {
        "docs": n_docs, "chunks": chunks, "edited_docs": len(edited),
        "texts_sent": incremental["texts_sent"], "truly_changed": truly_changed,
        "whole_doc_cost": whole_docs, "t_first": t_first, "t_noop": t_noop,
        "t_incremental": t_incremental, "t_full": t_full,
        "embed_seconds_incremental": incremental["seconds"], "slowest": slowest,
        "noop_split": noop_split, "incremental_split": incremental_split, **warm, **lexical,
    }


def _median_query_ms(db: Path, mode: str, questions: list[str]) -> float:
    import statistics

    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    with Retriever(db_path=db) as reader:
        reader.retrieve(questions[0], mode=mode, groups=ALL_GROUPS)  # warm the caches
        times = []
        for question in questions:
            started = time.perf_counter()
            reader.retrieve(question, mode=mode, groups=ALL_GROUPS)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def lexical_costs(work: Path, db: Path) -> dict:
    """The full-text index after the incremental build, on a copy of its database."""
    from ragmart.relations import Relations
    from ragmart.serving.lexical_index import rebuild, schema_of

    copy = work / "lexical.duckdb"
    shutil.copyfile(db, copy)
    serving = Relations("v1").serving
    conn = connect(copy)
    try:
        indexed, delta = conn.execute(
            f"select (select count(*) from {schema_of(serving)}.docs), (select count(*) from "
            f"{serving} where chunk_id not in (select name from {schema_of(serving)}.docs))"
        ).fetchone()
    finally:
        conn.close()
    questions = [f"{a} {b} approval" for a, b in zip(WORDS[::3], WORDS[1::3], strict=False)]
    with_delta = {m: _median_query_ms(copy, m, questions) for m in ("lexical", "hybrid")}
    conn = connect(copy)
    try:
        started = time.perf_counter()
        rebuild(conn, serving)
        conn.execute("checkpoint")
        t_rebuild = time.perf_counter() - started
    finally:
        conn.close()
    rebuilt = {m: _median_query_ms(copy, m, questions) for m in ("lexical", "hybrid")}
    vector = _median_query_ms(copy, "vector", questions)
    return {"fts_indexed": indexed, "fts_delta": delta, "t_fts_rebuild": t_rebuild,
            "ms_lexical_delta": with_delta["lexical"], "ms_hybrid_delta": with_delta["hybrid"],
            "ms_lexical_rebuilt": rebuilt["lexical"], "ms_hybrid_rebuilt": rebuilt["hybrid"],
            "ms_vector": vector}


def warm_builds(workdir: Path, db: Path, landing: Path, edits: Path) -> dict:
    saved = dict(os.environ)
    os.environ.update(build_env(workdir, db, landing))
    try:
        runner = WarmDbt(ROOT, dbt_args=["--quiet"], build_args=["-x", *PRODUCTION_BUILD_ARGS])
        timed = {}
        for label in ("warm_start", "warm_noop", "warm_incremental"):
            if label == "warm_incremental":
                shutil.copy2(edits, landing / "dms" / edits.name)
            started = time.perf_counter()
            outcome = runner.build()
            timed[f"t_{label}"] = time.perf_counter() - started
            if not outcome.success:
                raise SystemExit(f"warm build failed: {outcome.failures}")
            timed[f"{label}_split"] = {"models": outcome.model_seconds,
                                       "tests": outcome.test_seconds}
        return timed
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--edit-share", type=float, default=0.01)
    args = parser.parse_args()
    results = []
    for n in args.docs:
        r = bench(n, args.edit_share)
        results.append(r)
        print(f"\n== {r['docs']:,} documents, {r['chunks']:,} chunks; "
              f"{r['edited_docs']} documents edited by one paragraph")
        print(f"provider texts sent          {r['texts_sent']:>8}")
        print(f"chunk texts truly changed    {r['truly_changed']:>8}   "
              f"ratio {r['texts_sent'] / max(r['truly_changed'], 1):.2f} (target 1.00)")
        print(f"re-embedding whole documents {r['whole_doc_cost']:>8}   "
              f"({r['whole_doc_cost'] / max(r['texts_sent'], 1):.1f}x what was sent)")
        print(f"first build (from scratch)   {r['t_first']:8.1f} s")
        print(f"full rebuild, fresh db       {r['t_full']:8.1f} s")
        print(f"no-change build (fixed cost) {r['t_noop']:8.1f} s")
        print(f"incremental build            {r['t_incremental']:8.1f} s   "
              f"{r['t_incremental'] / r['t_full']:.1%} of a full rebuild (target <= 10%); "
              f"{r['t_incremental'] - r['t_noop']:+.1f} s over the no-change build")
        for label, key, wall in (("no-change", "noop_split", r["t_noop"]),
                                 ("incremental", "incremental_split", r["t_incremental"])):
            split = r[key]
            print(f"  {label + ' build:':<25}models {split['models']:5.1f} s, data tests "
                  f"{split['tests']:5.1f} s, dbt start-up and the rest "
                  f"{wall - split['models'] - split['tests']:5.1f} s")
        start_up = r["t_noop"] - r["t_warm_noop"]
        print(f"warm process, first build (parses)  {r['t_warm_start']:6.1f} s")
        print(f"warm no-change build         {r['t_warm_noop']:8.1f} s   "
              f"(dbt's start-up the cold build pays: {start_up:.1f} s)")
        print(f"warm incremental build       {r['t_warm_incremental']:8.1f} s   "
              f"{r['t_warm_incremental'] / r['t_full']:.1%} of a full rebuild (target <= 10%); "
              f"{r['t_warm_incremental'] / (r['t_full'] - start_up):.1%} of a full rebuild "
              "without that start-up")
        split = r["warm_incremental_split"]
        print(f"  {'warm incremental build:':<25}models {split['models']:5.1f} s, data tests "
              f"{split['tests']:5.1f} s, the rest "
              f"{r['t_warm_incremental'] - split['models'] - split['tests']:5.1f} s")
        print("slowest nodes of the incremental build: "
              + ", ".join(f"{name} {secs:.1f}s" for name, secs in r["slowest"]))
        print(f"full-text index after it     {r['fts_indexed']:>8} chunks indexed, "
              f"{r['fts_delta']} in the delta"
              + (" (the incremental build kept the index)" if r["fts_delta"] else ""))
        print(f"full-text index rebuild      {r['t_fts_rebuild']:8.1f} s   "
              f"({r['t_fts_rebuild'] / r['t_full']:.1%} of a full rebuild; what a build past "
              "the lexical_delta_* thresholds, a slim publish or a purge pays)")
        print(f"lexical query (median)       {r['ms_lexical_delta']:8.1f} ms with the delta, "
              f"{r['ms_lexical_rebuilt']:.1f} ms after a rebuild "
              f"({r['ms_lexical_delta'] / r['ms_lexical_rebuilt']:.2f}x)")
        print(f"hybrid query (median)        {r['ms_hybrid_delta']:8.1f} ms with the delta, "
              f"{r['ms_hybrid_rebuilt']:.1f} ms after a rebuild; vector {r['ms_vector']:.1f} ms")
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"\ncorpus x{b['docs'] / a['docs']:.0f}: incremental over no-change build "
              f"{a['t_incremental'] - a['t_noop']:+.1f} s -> "
              f"{b['t_incremental'] - b['t_noop']:+.1f} s; "
              f"warm incremental {a['t_warm_incremental']:.1f} s -> "
              f"{b['t_warm_incremental']:.1f} s; "
              f"full rebuild {a['t_full']:.0f} s -> {b['t_full']:.0f} s")


if __name__ == "__main__":
    main()
