"""Filtered retrieval benchmark: contract search vs the plain vss pattern.

Builds (once, cached under bench/out/) a synthetic serving set with the schema of
fct_chunk_embeddings_v1 / fct_chunk_vector_index_v1 / dim_documents: N chunks of 384 dimensions
(and of each `--dims` size, beside it in the same run) in documents of 10 chunks, clustered like
real embeddings, with an HNSW (cosine) index. Document types are assigned so that a
`document_types` clause admits 100%, 50%, 10%, 1% or 0.1% of the chunks. For each selectivity it
runs Q queries (vectors near the data) and prints,
measured in this run:

  - contract search (ragmart.retrieval.execution.search_contract), one query on an open
    connection (as `ragmart retrieve` runs it: plan, HNSW or exact): p50 / p95 latency,
    recall@10 against the exact filtered search, the share of queries answered with k rows,
    the strategy used;
  - the same search from a long-lived reader (ragmart.Retriever: the serving vectors kept in
    memory, candidates scored with numpy, the answer re-ranked exactly in DuckDB), with the
    one-off load time and memory, and its first query under each contract (which also runs
    the eligibility SQL it then remembers);
  - the plain vss pattern (`WHERE document_type IN (...) ORDER BY array_cosine_distance(...)
    LIMIT k` on the HNSW-indexed table): the same figures;
  - the exact filtered scan itself (the SQL table macro's plan): p50 / p95.

Building the HNSW index takes minutes at 100k here (NOTES: 614 s); the file is reused while
its parameters match, and the build time is kept in it. With `--dims 1536` (or 3072, or
several) the same figures are measured at those sizes too, and a last line compares the sizes:
HNSW build time, the long-lived reader's memory and load time, filtered p50/p95. Timings are
in-process (no embedding, no process start).

    .venv/bin/python bench/retrieval.py [--chunks 100000] [--queries 200] [--k 10]
    .venv/bin/python bench/retrieval.py --chunks 20000        # quick run
    .venv/bin/python bench/retrieval.py --chunks 10000 --dims 1536 --dims 3072
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragmart.duck import connect  # noqa: E402
from ragmart.serving.snapshots import add_lookup_indexes  # noqa: E402

OUT = ROOT / "bench" / "out"
DIMS = 384  # the embedded default model's size: always measured, the others beside it
CHUNKS_PER_DOCUMENT = 10
CLUSTERS = 200
SEED = 20261125
LAYOUT_VERSION = 2  # bump when the synthetic data changes: the cached file is rebuilt
CHUNKER = "md-sections-v1"
# document type -> share of documents; a selectivity admits a prefix of these types
TYPE_SHARES = [("t_0001", 0.001), ("t_0009", 0.009), ("t_0090", 0.09), ("t_0400", 0.4),
               ("t_0500", 0.5)]
SELECTIVITIES = {1.0: None, 0.5: ["t_0001", "t_0009", "t_0090", "t_0400"],
                 0.1: ["t_0001", "t_0009", "t_0090"], 0.01: ["t_0001", "t_0009"],
                 0.001: ["t_0001"]}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def synthetic_vectors(n_chunks: int, rng: np.random.Generator, dims: int) -> np.ndarray:
    """Clustered unit vectors: cluster centre + document offset + chunk noise."""
    n_docs = n_chunks // CHUNKS_PER_DOCUMENT
    centres = unit(rng.normal(size=(CLUSTERS, dims)))
    doc_cluster = rng.integers(0, CLUSTERS, size=n_docs)
    docs = unit(centres[doc_cluster] + 0.6 * unit(rng.normal(size=(n_docs, dims))))
    chunks = np.repeat(docs, CHUNKS_PER_DOCUMENT, axis=0)
    return unit(chunks + 0.7 * unit(rng.normal(size=(n_chunks, dims))))


def document_types(n_docs: int) -> list[str]:
    """Exact shares, spread over the documents (golden-ratio sequence, deterministic)."""
    out = []
    bounds = np.cumsum([share for _, share in TYPE_SHARES])
    for i in range(n_docs):
        u = (i * 0.6180339887498949) % 1.0
        out.append(TYPE_SHARES[int(np.searchsorted(bounds, u, side="right"))][0])
    return out


def fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()),
                                             matrix.shape[1])


def build(path: Path, n_chunks: int, dims: int, *, hnsw: bool = True) -> None:
    """Write the synthetic serving set, documents and HNSW-indexed vectors to `path` (without
    the HNSW index when `hnsw` is false: minutes at 100k that an in-memory reader never uses)."""
    rng = np.random.default_rng(SEED)
    vectors = synthetic_vectors(n_chunks, rng, dims)
    n_docs = n_chunks // CHUNKS_PER_DOCUMENT
    types = document_types(n_docs)
    doc_ids = [f"doc-{i:06d}" for i in range(n_docs)]
    base = dt.datetime(2026, 1, 1)
    valid_from = [base + dt.timedelta(minutes=i) for i in range(n_docs)]
    rows = np.arange(n_chunks)
    doc_of = rows // CHUNKS_PER_DOCUMENT
    serving = pa.table({
        "chunk_id": [f"{doc_ids[d]}@{d + 1}#{c % CHUNKS_PER_DOCUMENT:04d}"
                     for c, d in zip(rows, doc_of, strict=True)],
        "document_id": [doc_ids[d] for d in doc_of],
        "document_version": pa.array(doc_of + 1, pa.int64()),
        "document_type": [types[d] for d in doc_of],
        "embedding": fixed_list(vectors),
        "section_chunk_index": pa.array(rows % 2, pa.int32()),
        "section_chunk_count": pa.array(np.full(n_chunks, 2), pa.int32()),
        "document_valid_from": [valid_from[d] for d in doc_of],
    })
    documents = pa.table({
        "document_id": doc_ids,
        "document_version": pa.array(np.arange(n_docs) + 1, pa.int64()),
        "document_type": types,
        "valid_from": valid_from,
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        conn.register("serving_arrow", serving)
        conn.register("documents_arrow", documents)
        conn.execute(f"""
            create table fct_chunk_embeddings_v1 as
            select
                chunk_id, document_id, document_version,
                sha256(document_id) as document_checksum,
                cast(section_chunk_index as integer) as chunk_index,
                '{CHUNKER}' as chunker_version,
                sha256(chunk_id) as chunk_hash,
                'Policy' as section, 'other' as section_type,
                'synthetic chunk ' || chunk_id as chunk_text,
                cast(60 as integer) as word_count,
                section_chunk_index, section_chunk_count,
                false as is_split_paragraph,
                document_type,
                'Document ' || document_id as title,
                ['all-staff'] as allowed_groups,
                document_valid_from as document_updated_at,
                document_valid_from,
                'bench-synthetic-{dims}' as embedding_model,
                cast(embedding as float[{dims}]) as embedding,
                document_valid_from + interval 1 minute as created_at,
                'bench' as embedding_invocation_id,
                document_valid_from + interval 1 minute as chunk_created_at,
                'bench' as chunk_invocation_id,
                'bench' as dbt_invocation_id
            from serving_arrow
        """)
        conn.execute("""
            create table dim_documents as
            select
                document_id, document_version, sha256(document_id) as document_checksum,
                document_type, 'Document ' || document_id as title,
                ['all-staff'] as allowed_groups, valid_from as updated_at, valid_from,
                cast(1 as bigint) as version_number, '{}' as metadata,
                cast(1000 as bigint) as content_length
            from documents_arrow
        """)
        # the bench-only document_type column lets the plain vss pattern filter the indexed
        # table itself (WHERE ... ORDER BY distance LIMIT k)
        # what a published snapshot has: the chunk_id lookup index ragmart publish adds, and
        # dim_documents' primary key (its contract declares it)
        add_lookup_indexes(conn, "v1")
        conn.execute("alter table dim_documents add primary key (document_id)")
        conn.execute(f"""
            create table fct_chunk_vector_index_v1 as
            select chunk_id, cast(embedding as float[{dims}]) as embedding,
                timestamp '2026-01-01' as indexed_at, 'bench' as dbt_invocation_id,
                document_type
            from fct_chunk_embeddings_v1 order by chunk_id
        """)
        conn.execute("create table bench_meta as select $meta as meta",
                     {"meta": json.dumps(meta(n_chunks, dims))})
        conn.execute("create table bench_build as select cast(null as double) as hnsw_build_s")
        if hnsw:
            _add_hnsw(conn, n_chunks, dims)
        conn.execute("checkpoint")
    finally:
        conn.close()
    tmp.rename(path)


HNSW_INDEX = "fct_chunk_vector_index_v1_hnsw"


def _add_hnsw(conn, n_chunks: int, dims: int) -> None:
    """vss's HNSW index on the vectors, its build seconds kept in bench_build."""
    started = time.monotonic()
    print(f"building the HNSW index on {n_chunks:,} x {dims} (minutes at 100k)...", flush=True)
    conn.execute(f"create index {HNSW_INDEX} on fct_chunk_vector_index_v1 "
                 "using hnsw (embedding) with (metric = 'cosine')")
    seconds = time.monotonic() - started
    conn.execute("update bench_build set hnsw_build_s = $s", {"s": seconds})
    print(f"index built in {seconds:.0f}s", flush=True)


def _upgrade_from_layout_1(path: Path, n_chunks: int) -> None:
    conn = connect(path)
    try:
        conn.execute("alter table fct_chunk_embeddings_v1 add primary key (chunk_id)")
        conn.execute("alter table dim_documents add primary key (document_id)")
        conn.execute("update bench_meta set meta = $meta",
                     {"meta": json.dumps(meta(n_chunks, DIMS))})
        conn.execute("checkpoint")
    finally:
        conn.close()


def meta(n_chunks: int, dims: int) -> dict:
    return {"chunks": n_chunks, "seed": SEED, "layout": LAYOUT_VERSION, "dims": dims}


def cached_database(n_chunks: int, dims: int = DIMS, *, hnsw: bool = True) -> Path:
    """The cached synthetic set of `n_chunks` x `dims`, written first if missing. `hnsw`: with
    vss's HNSW index (a file written without it gets it now); a caller that never searches
    through vss (PostgreSQL's recall, in-memory readers) passes False and spares the build
    (the larger part of writing the file: ~10 minutes at 100k, hours at 1M)."""
    suffix = "" if dims == DIMS else f"-{dims}"  # the 384 file keeps its older name
    path = OUT / f"retrieval-{n_chunks}{suffix}.duckdb"
    if path.exists():
        conn = connect(path, read_only=True)
        try:
            stored = json.loads(conn.execute("select meta from bench_meta").fetchone()[0])
            indexed = conn.execute("select count(*) from duckdb_indexes() where index_name = $n",
                                   {"n": HNSW_INDEX}).fetchone()[0] > 0
        except Exception:  # noqa: BLE001 - any damage means rebuild
            stored = None
        finally:
            conn.close()
        if stored == meta(n_chunks, dims):
            if hnsw and not indexed:
                conn = connect(path)
                try:
                    _add_hnsw(conn, n_chunks, dims)
                    conn.execute("checkpoint")
                finally:
                    conn.close()
            print(f"reusing {path.relative_to(ROOT)}", flush=True)
            return path
        if stored and {**stored, "layout": LAYOUT_VERSION} == meta(n_chunks, dims) \
                and stored["layout"] == 1:
            _upgrade_from_layout_1(path, n_chunks)  # the index is kept (minutes at 100k)
            return path
        path.unlink()
    build(path, n_chunks, dims, hnsw=hnsw)
    return path


def hnsw_build_seconds(path: Path) -> float | None:
    """The HNSW build time kept in the bench file (None for a file built before it was kept)."""
    conn = connect(path, read_only=True)
    try:
        return round(conn.execute("select hnsw_build_s from bench_build").fetchone()[0], 1)
    except Exception:  # noqa: BLE001 - an older file: not measured
        return None
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _types_filter(types: list[str] | None) -> str:
    # bench-owned literals (never user input): the plain pattern as people write it
    return ("where document_type in (" + ", ".join(f"'{t}'" for t in types) + ")") if types else ""


def _vector_text(vector: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in vector) + "]"


def exact_ids(conn, vector: list[float], types: list[str] | None, k: int) -> list[str]:
    """Exact filtered search: the truth recall is measured against."""
    rows = conn.execute(
        f"select chunk_id from fct_chunk_embeddings_v1 {_types_filter(types)} "
        f"order by array_cosine_distance(embedding, cast($q as float[{len(vector)}])), chunk_id "
        f"limit {k}",
        {"q": _vector_text(vector)},
    ).fetchall()
    return [r[0] for r in rows]


def plain_vss(conn, vector: list[float], types: list[str] | None, k: int) -> list[str]:
    """The plain vss pattern: WHERE on the HNSW-indexed table, ORDER BY distance LIMIT k."""
    rows = conn.execute(
        f"select chunk_id from fct_chunk_vector_index_v1 {_types_filter(types)} "
        f"order by array_cosine_distance(embedding, cast($q as float[{len(vector)}])) "
        f"limit {k}",
        {"q": _vector_text(vector)},
    ).fetchall()
    return [r[0] for r in rows]


def sample_queries(conn, n_queries: int) -> np.ndarray:
    """`n_queries` query vectors near the data: served vectors (a seeded sample) plus noise."""
    rng = np.random.default_rng(SEED + 1)
    sample = conn.execute(
        "select embedding from fct_chunk_embeddings_v1 using sample reservoir("
        f"{n_queries} rows) repeatable ({SEED % 1000})"
    ).fetchall()
    matrix = np.array([r[0] for r in sample], np.float32)
    return unit(matrix + 0.5 * unit(rng.normal(size=matrix.shape)))


def run(path: Path, n_queries: int, k: int) -> tuple[dict, list[dict]]:
    """The reader's load figures and one report per selectivity."""
    from ragmart.retrieval.contracts import Contract
    from ragmart.retrieval.execution import search_contract
    from ragmart.retrieval.memory import ServingVectors

    conn = connect(path, read_only=True)
    started = time.perf_counter()
    vectors = ServingVectors.load(conn, "fct_chunk_embeddings_v1")
    dims = vectors.matrix.shape[1]
    loaded = {"dims": dims, "retriever_load_s": round(time.perf_counter() - started, 2),
              "retriever_memory_mb": round(vectors.nbytes / 2**20, 1)}
    print(json.dumps(loaded), flush=True)
    queries = sample_queries(conn, n_queries)
    report = []
    try:
        for selectivity, types in SELECTIVITIES.items():
            contract = Contract(name=f"bench_{round(selectivity * 1000):04d}",
                                document_types=types, missing_allowed_groups="allow")
            measured: dict[str, dict] = {name: {"ms": [], "recall": [], "full": 0,
                                                "strategies": {}}
                                         for name in ("contract", "retriever", "plain_vss",
                                                      "exact")}
            for q in queries:
                vector = q.tolist()
                started = time.perf_counter()
                truth = exact_ids(conn, vector, types, k)  # the exact filtered search
                runs = {"exact": ((time.perf_counter() - started) * 1000, truth)}
                started = time.perf_counter()
                result = search_contract(conn, q, k=k, contract=contract, groups=["all-staff"])
                runs["contract"] = ((time.perf_counter() - started) * 1000,
                                    [c.chunk_id for c in result.chunks])
                strategies = measured["contract"]["strategies"]
                strategies[result.strategy] = strategies.get(result.strategy, 0) + 1
                started = time.perf_counter()
                held = search_contract(conn, q, k=k, contract=contract, groups=["all-staff"],
                                       vectors=vectors)
                runs["retriever"] = ((time.perf_counter() - started) * 1000,
                                     [c.chunk_id for c in held.chunks])
                strategies = measured["retriever"]["strategies"]
                strategies[held.strategy] = strategies.get(held.strategy, 0) + 1
                started = time.perf_counter()
                ids = plain_vss(conn, vector, types, k)
                runs["plain_vss"] = ((time.perf_counter() - started) * 1000, ids)
                for name, (ms, ids) in runs.items():
                    measured[name]["ms"].append(ms)
                    measured[name]["recall"].append(
                        len(set(ids) & set(truth)) / max(1, len(truth)))
                    measured[name]["full"] += len(ids) == k
            figures: dict = {"dims": dims, "selectivity": selectivity}
            for name, m in measured.items():
                figures[name] = {
                    "p50_ms": round(statistics.median(m["ms"]), 1),
                    "p95_ms": round(percentile(m["ms"], 0.95), 1),
                    "recall_at_k": round(sum(m["recall"]) / len(m["recall"]), 4),
                    "k_rows_share": round(m["full"] / len(queries), 4),
                }
                if m["strategies"]:
                    figures[name]["strategies"] = m["strategies"]
            # the reader's first search under this contract also ran the eligibility SQL
            figures["retriever"]["first_query_ms"] = round(measured["retriever"]["ms"][0], 1)
            report.append(figures)
            print(json.dumps(figures), flush=True)
    finally:
        conn.close()
    return loaded, report


def comparison(n_chunks: int, measured: dict[int, tuple[Path, dict, list[dict]]]) -> list[dict]:
    """Per size: HNSW build time, the long-lived reader's memory and load time, and the
    filtered p50/p95 of a search from it and of `ragmart retrieve`'s one-off search, at 10%
    and 1% selectivity (what a contract filter usually admits)."""
    rows = []
    for dims, (path, loaded, report) in sorted(measured.items()):
        row: dict = {"dims": dims, "chunks": n_chunks, "hnsw_build_s": hnsw_build_seconds(path),
                     "retriever_memory_mb": loaded["retriever_memory_mb"],
                     "retriever_load_s": loaded["retriever_load_s"]}
        for figures in report:
            if figures["selectivity"] in (0.1, 0.01):
                tag = f"{figures['selectivity']:g}"
                for name in ("retriever", "contract"):
                    row[f"{name}_{tag}_p50_ms"] = figures[name]["p50_ms"]
                    row[f"{name}_{tag}_p95_ms"] = figures[name]["p95_ms"]
                    row[f"{name}_{tag}_recall"] = figures[name]["recall_at_k"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--dims", type=int, action="append", default=[], metavar="N",
                        help=f"also measure vectors of N dimensions, beside {DIMS} (repeatable: "
                        "--dims 1536 --dims 3072)")
    parser.add_argument("--build-only", action="store_true",
                        help="build (or check) the cached databases and stop")
    args = parser.parse_args(argv)
    if args.chunks < 10_000 or args.chunks % CHUNKS_PER_DOCUMENT:
        parser.error("--chunks must be a multiple of 10, at least 10,000")
    if any(d < 2 or d > 16_384 for d in args.dims):
        parser.error("--dims must be between 2 and 16384 (an embedding model's vector size)")
    sizes = sorted({DIMS, *args.dims})
    paths = {dims: cached_database(args.chunks, dims) for dims in sizes}
    if args.build_only:
        return 0
    measured = {}
    for dims, path in paths.items():
        loaded, report = run(path, args.queries, args.k)
        measured[dims] = (path, loaded, report)
    if len(sizes) > 1:
        for row in comparison(args.chunks, measured):
            print(json.dumps({"comparison": row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
