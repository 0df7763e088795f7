"""`ragmart serve` benchmark: latency and throughput of a question answered in-process, over
loopback HTTP with 1, 8 and 32 concurrent clients, and by spawning `ragmart retrieve` per query,
in each search mode.

The serving set is bench/retrieval.py's synthetic one (imported, not copied: N chunks of 384
dimensions, clustered, documents of 10 chunks, every document readable by the group
`all-staff`), written without its HNSW index (a reader that keeps the vectors in memory never
uses it) and labelled with the hash provider's model, so that the service, the Python API and
the CLI embed the same questions the same way; each chunk's text is TEXT_WORDS words (one in
ten a word the questions use, the others from VOCABULARY synthetic terms) with the full-text
index a publish builds (cached under bench/out/serve-<N>.duckdb). Every query is a question of
six words, k = 10, for a key of the group `all-staff`:

  - in-process: one `ragmart.Retriever` (vectors in memory), sequential, per mode (vector,
    hybrid, lexical);
  - HTTP: a real `ragmart serve --db FILE` process on 127.0.0.1, answering C clients (C = 1,
    8, 32 for vector search; --mode-clients, 8, for hybrid and lexical), each with a keep-alive
    connection, after a warm-up, closed loop (the next question when the answer arrived), the
    latency measured around each request. By default each client is a process of its own
    speaking HTTP/1.1 with the standard library's http.client (`--client-kind processes`):
    clients that cost little CPU and do not share a GIL, since on a 2-core machine the bench's
    clients compete with the server for the cores. `--client-kind threads` measures as before
    (threads of this process, each with an httpx.Client), which costs the clients about as
    much CPU as the server. Each request's answer is checked (200, k results) either way;
  - CLI: `ragmart retrieve ... --db FILE --json` spawned per query (a few runs: each costs the
    interpreter's start-up, the imports and opening the file; its one-off search is exact here,
    without the HNSW index).

It prints one JSON line per measurement (p50 / p95 ms, queries per second, and the CPU a query
costs: the bench's own process in-process, the server's processes over HTTP, which stay
meaningful on a shared machine where wall-clock latency measures the neighbours; over HTTP also
the server's mean searches per matrix product, from its /metrics) and a last line
with the ratios: the CLI's p50 over HTTP's at 1 client (goal > 10x), HTTP p95 at 8 clients
(vector search) against the 50 ms goal, and HTTP's overhead over the in-process search.

    .venv/bin/python bench/serve.py --chunks 10000          # quick
    nice -n 10 .venv/bin/python bench/serve.py              # 100k chunks, every mode
    .venv/bin/python bench/serve.py --mode vector --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import CHUNKS_PER_DOCUMENT, OUT, SEED, build, percentile  # noqa: E402
from ragmart.duck import connect  # noqa: E402
from ragmart.embedding.providers.hashing import HashingProvider  # noqa: E402
from ragmart.serving.lexical_index import has_index, rebuild  # noqa: E402

K = 10
GROUPS = ["all-staff"]
SERVING = "fct_chunk_embeddings_v1"
MODES = ("vector", "hybrid", "lexical")
TEXT_WORDS = 40
VOCABULARY = 5000
WORDS = ("policy leave travel expense approval contract vendor security incident payroll "
         "remote onboarding referral bonus laptop access review budget invoice training "
         "holiday overtime pension benefits relocation equipment password audit").split()


def serving_database(n_chunks: int) -> Path:
    """bench/retrieval.py's synthetic serving set without HNSW, in the hash model's name, with
    texts of TEXT_WORDS words and their full-text index (lexical and hybrid search)."""
    path = OUT / f"serve-{n_chunks}.duckdb"
    model = HashingProvider().model
    if path.exists():
        conn = connect(path, read_only=True)
        try:
            rows, models = conn.execute(
                "select count(*), list(distinct embedding_model) from fct_chunk_embeddings_v1"
            ).fetchone()
            indexed = has_index(conn, SERVING)
        finally:
            conn.close()
        if rows == n_chunks and models == [model]:
            if not indexed:
                words_and_index(path)
            print(f"reusing {path.relative_to(ROOT)}", flush=True)
            return path
        path.unlink()
    print(f"writing {n_chunks:,} synthetic chunks to {path.relative_to(ROOT)}...", flush=True)
    build(path, n_chunks, HashingProvider().dimensions, hnsw=False)
    conn = connect(path)
    try:
        conn.execute("update fct_chunk_embeddings_v1 set embedding_model = $m", {"m": model})
        conn.execute("checkpoint")
    finally:
        conn.close()
    words_and_index(path)
    return path


def words_and_index(path: Path) -> None:
    """Give every chunk TEXT_WORDS words (one in ten a word of the questions, the others from a
    vocabulary of VOCABULARY synthetic terms, chosen by a hash of the chunk id: deterministic)
    and build the full-text index a publish builds (ragmart.serving.lexical_index)."""
    print(f"writing texts and the full-text index of {path.relative_to(ROOT)}...", flush=True)
    conn = connect(path)
    try:
        conn.execute(f"""
            update {SERVING} set chunk_text = (
                select string_agg(case when h % 10 = 0 then $words[1 + (h // 10) % $n]
                                       else 'term' || (h // 10) % {VOCABULARY} end, ' ')
                from (select cast(hash({SERVING}.chunk_id || '#' || i) % 1000000007 as bigint)
                          as h
                      from range({TEXT_WORDS}) as t(i))
            )""", {"words": list(WORDS), "n": len(WORDS)})
        rebuild(conn, SERVING)
        conn.execute("checkpoint")
    finally:
        conn.close()


def questions(n: int) -> list[str]:
    rng = np.random.default_rng(SEED + 2)
    return [" ".join(rng.choice(WORDS, size=6)) for _ in range(n)]


def figures(name: str, ms: list[float], wall: float | None = None, **extra: object) -> dict:
    out = {"measure": name, "queries": len(ms), "p50_ms": round(statistics.median(ms), 2),
           "p95_ms": round(percentile(ms, 0.95), 2),
           "qps": round(len(ms) / wall if wall else 1000 / statistics.mean(ms), 1), **extra}
    print(json.dumps(out), flush=True)
    return out


def in_process(path: Path, asked: list[str], modes: list[str]) -> dict[str, dict]:
    from ragmart.retrieval.api import Retriever

    started = time.perf_counter()
    out = {}
    with Retriever(db_path=path) as reader:
        load_s = round(time.perf_counter() - started, 2)
        reader.conn.execute("set threads = 1")  # as `ragmart serve` sets it
        for mode in modes:
            reader.retrieve(asked[0], k=K, groups=GROUPS, mode=mode)  # eligibility, once
            ms = []
            cpu = time.process_time()
            for question in asked:
                t = time.perf_counter()
                result = reader.retrieve(question, k=K, groups=GROUPS, mode=mode)
                ms.append((time.perf_counter() - t) * 1000)
                assert len(result) == K, result
            cpu_ms = (time.process_time() - cpu) * 1000 / len(asked)
            name = "in_process" if mode == "vector" else f"in_process_{mode}"
            out[mode] = figures(name, ms, mode=mode, load_s=load_s,
                                cpu_ms_per_query=round(cpu_ms, 2))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc), every thread counted."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the server's workers, Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def serve(path: Path, keys_file: Path, env: dict[str, str], workers: int | None = None
          ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragmart.cli.main", "serve", "--db", str(path), "--port",
         str(port), "--keys", str(keys_file),
         *(["--workers", str(workers)] if workers else [])], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ragmart serve exited: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("ragmart serve did not become healthy in 600 s")


def _light_client(base: str, key: str, asked: list[str], offset: int, clients: int,
                  per_client: int, mode: str, start, out) -> None:
    """One client process (--client-kind processes): a keep-alive http.client connection, a
    warm-up request, then `per_client` timed requests; (latencies ms, errors) on `out`."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def ask(question: str) -> tuple[int, bytes]:
        conn.request("POST", "/v1/retrieve", json.dumps(
            {"question": question, "k": K, "mode": mode}), headers)
        response = conn.getresponse()
        return response.status, response.read()

    ask(asked[offset % len(asked)])
    start.wait()
    ms, errors = [], []
    for i in range(per_client):
        question = asked[(offset + i * clients) % len(asked)]
        t = time.perf_counter()
        status, body = ask(question)
        ms.append((time.perf_counter() - t) * 1000)
        if status != 200 or len(json.loads(body)["results"]) != K:
            errors.append(body[:200].decode(errors="replace"))
    conn.close()
    out.put((ms, errors))


def _thread_clients(base: str, key: str, asked: list[str], clients: int, per_client: int,
                    mode: str, ms: list[float], errors: list[str]) -> float:
    """--client-kind threads: `clients` threads of this process, an httpx.Client each; the
    wall time of the timed requests."""
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            c.post("/v1/retrieve", json={"question": asked[offset % len(asked)], "k": K,
                                         "mode": mode})
            start.wait()
            for i in range(per_client):
                question = asked[(offset + i * clients) % len(asked)]
                t = time.perf_counter()
                r = c.post("/v1/retrieve", json={"question": question, "k": K, "mode": mode})
                elapsed = (time.perf_counter() - t) * 1000
                with lock:
                    ms.append(elapsed)
                    if r.status_code != 200 or len(r.json()["results"]) != K:
                        errors.append(r.text[:200])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def _process_clients(base: str, key: str, asked: list[str], clients: int, per_client: int,
                     mode: str, ms: list[float], errors: list[str]) -> float:
    context = multiprocessing.get_context("fork")  # the clients import nothing more
    start, out = context.Barrier(clients + 1), context.Queue()
    procs = [context.Process(target=_light_client, args=(base, key, asked, i, clients,
                                                         per_client, mode, start, out))
             for i in range(clients)]
    for proc in procs:
        proc.start()
    start.wait()
    started = time.perf_counter()
    for _ in procs:
        got, failed = out.get(timeout=600)
        ms.extend(got)
        errors.extend(failed)
    wall = time.perf_counter() - started
    for proc in procs:
        proc.join()
    return wall


def product_batches(base: str, key: str) -> dict[int, int]:
    """The server's matrix products by searches served (ragmart_search_products)."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    return {int(m[1]): int(float(m[2])) for m in
            re.finditer(r'^ragmart_search_products\{queries="(\d+)"\} (\S+)$', text, re.M)}


def over_http(base: str, key: str, asked: list[str], clients: int, pids: list[int],
              mode: str = "vector", kind: str = "processes") -> dict:
    per_client = max(10, len(asked) // clients)
    ms: list[float] = []
    errors: list[str] = []
    run = _process_clients if kind == "processes" else _thread_clients
    before, cpu = product_batches(base, key), sum(cpu_seconds(pid) for pid in pids)
    wall = run(base, key, asked, clients, per_client, mode, ms, errors)
    server_cpu_ms = (sum(cpu_seconds(pid) for pid in pids) - cpu) * 1000 / len(ms)
    after = product_batches(base, key)
    products = {n: after.get(n, 0) - before.get(n, 0) for n in after}
    served, made = sum(n * c for n, c in products.items()), sum(products.values())
    if errors:
        raise SystemExit(f"{len(errors)} failed requests at {clients} clients: {errors[:3]}")
    name = f"http_{clients}_clients" + ("" if mode == "vector" else f"_{mode}")
    return figures(name, ms, wall, clients=clients, mode=mode, client_kind=kind,
                   server_cpu_ms_per_query=round(server_cpu_ms, 2),
                   searches_per_product=round(served / made, 2) if made else None)


def cli_per_query(path: Path, asked: list[str], runs: int, env: dict[str, str]) -> dict:
    ms = []
    for question in asked[:runs]:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "ragmart.cli.main", "retrieve", question, "-k", str(K),
             "--groups", ",".join(GROUPS), "--db", str(path), "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        ms.append((time.perf_counter() - t) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"ragmart retrieve failed: {proc.stderr[-2000:]}")
    return figures("cli_per_query", ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400, help="per measurement")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--clients", type=int, action="append", default=[],
                        help="concurrent HTTP clients (repeatable; default 1, 8, 32)")
    parser.add_argument("--mode", dest="modes", action="append", choices=MODES, default=[],
                        help="search modes measured (repeatable; default all: vector at every "
                             "client count, hybrid and lexical at --mode-clients)")
    parser.add_argument("--mode-clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None,
                        help="the server's search threads (`ragmart serve --workers`; default "
                             "its own)")
    parser.add_argument("--client-kind", choices=("processes", "threads"), default="processes",
                        help="HTTP clients: processes with http.client (light, default) or "
                             "threads of the bench with httpx (as measured before)")
    args = parser.parse_args(argv)
    modes = args.modes or list(MODES)
    if args.chunks < 1_000 or args.chunks % CHUNKS_PER_DOCUMENT:
        parser.error("--chunks must be a multiple of 10, at least 1,000")
    path = serving_database(args.chunks)
    asked = questions(args.queries)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAGMART_SERVE_RATE": "1000000",
           "RAGMART_SERVE_BURST": "1000000", "RAGMART_SERVE_MAX_CONCURRENCY": "1000"}
    report: dict = {"chunks": args.chunks}
    for mode, figures_of_mode in in_process(path, asked, modes).items():
        report["in_process" if mode == "vector" else f"in_process_{mode}"] = figures_of_mode
    from ragmart.http.keys import KeyRing

    with tempfile.TemporaryDirectory() as tmp:
        ring, key = KeyRing(Path(tmp) / "keys.json").add("bench", GROUPS)
        ring.save()
        proc, base = serve(path, ring.path, env, args.workers)
        pids = [proc.pid, *children(proc.pid)]
        try:
            if "vector" in modes:
                for clients in args.clients or [1, 8, 32]:
                    report[f"http_{clients}"] = over_http(base, key, asked, clients, pids,
                                                          kind=args.client_kind)
            for mode in (m for m in modes if m != "vector"):
                report[f"http_{args.mode_clients}_{mode}"] = over_http(
                    base, key, asked, args.mode_clients, pids, mode, args.client_kind)
        finally:
            proc.terminate()
            proc.wait(60)
    if args.cli_runs > 0:  # --cli-runs 0: no CLI figures (and none of the ratios to them)
        report["cli"] = cli_per_query(path, asked, args.cli_runs, env)
    summary: dict[str, object] = {"chunks": args.chunks}
    summary["server_processes"] = len(pids)
    if "http_1" in report:
        if "cli" in report:
            summary["cli_p50_over_http_1_client_p50"] = round(
                report["cli"]["p50_ms"] / report["http_1"]["p50_ms"], 1)
        summary["http_1_client_p50_minus_in_process_p50_ms"] = round(
            report["http_1"]["p50_ms"] - report["in_process"]["p50_ms"], 2)
    if "http_8" in report:
        summary["http_8_clients_p95_ms"] = report["http_8"]["p95_ms"]
        summary["goal_p95_under_50_ms_at_8_clients"] = report["http_8"]["p95_ms"] < 50
        if "cli" in report:
            summary["cli_p50_over_http_8_clients_p95"] = round(
                report["cli"]["p50_ms"] / report["http_8"]["p95_ms"], 1)
    # what the figures above cost in CPU, whatever else the machine runs: the throughput the
    # server's CPU per query allows on every core of this machine
    summary["cores"] = os.cpu_count()
    if "http_8" in report:
        per_query = report["http_8"]["server_cpu_ms_per_query"]
        summary["http_qps_bound_by_server_cpu"] = round(
            1000 * (os.cpu_count() or 1) / per_query, 1) if per_query else None
    summary["load_average_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
