"""Landed-to-servable lag: how long after a change lands can a reader retrieve it?

Generates a corpus of N documents (~10 chunks each, one DMS parquet file), builds and publishes
it (not measured), then measures two ways to serve a change, in the same run:

  - automatic: `ragmart build --watch --publish` runs; every `--every` seconds a one-paragraph
    edit of a random document lands (a parquet file, renamed into the landing zone), and a
    reader (a long-lived `ragmart.Retriever`, following publishes) polls for each new sentence.
    Lag = first answer holding the sentence - landed. The loop's own lines give each build's
    and publish's seconds: the publish share is the publish's seconds over the lag;
  - manual, cold commands: land an edit, then `dbt build`, `ragmart publish v1` and
    `ragmart retrieve` each in a fresh process; lag = the retrieve that finds it - landed.

Prints p50/p95 for both. The hash provider embeds (as bench/incremental.py): the lag measured is
the pipeline's, not an embedding model's.

    .venv/bin/python bench/freshness.py [--docs 2000] [--edits 8] [--every 15] [--manual 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from incremental import (  # noqa: E402
    build_env,
    dbt_build,
    event,
    make_document,
    render,
    write_batch,
)

LINE = re.compile(r"ragmart build #(\d+): (\w+) in ([0-9.]+)s.*?(?:; (published|publish) .*? in "
                  r"([0-9.]+)s)?$")


def pct(values: list[float], q: float) -> float | None:
    from ragmart.serving.lag import quantile

    return quantile(values, q)


class Corpus:
    def __init__(self, n_docs: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.docs = {f"doc-{i:06d}": make_document(self.rng) for i in range(n_docs)}
        self.seq = 1

    def initial(self, landing: Path) -> None:
        rows = [event("I", self.next_seq(), doc_id, f"Policy {doc_id}", render(
            f"Policy {doc_id}", sections)) for doc_id, sections in self.docs.items()]
        write_batch(landing / "dms" / "0001_initial.parquet", rows)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def land_edit(self, landing: Path, n: int) -> tuple[str, float]:
        """Add one paragraph with a unique sentence to a random document; (sentence, landed)."""
        doc_id = self.rng.choice(sorted(self.docs))
        sentence = (f"Freshness probe {n} {self.rng.randrange(10**9)} says quokka "
                    f"{self.rng.randrange(10**9)} marmalade.")
        self.docs[doc_id][-1][1].append(sentence)
        row = event("U", self.next_seq(), doc_id, f"Policy {doc_id}",
                    render(f"Policy {doc_id}", self.docs[doc_id]))
        tmp = landing / "dms" / f".{n:04d}_edit.parquet.tmp"
        write_batch(tmp, [row])
        os.replace(tmp, landing / "dms" / f"1{n:04d}_edit.parquet")  # lands at once, whole
        return sentence, time.time()


class Reader(threading.Thread):
    """Polls a Retriever (following publishes) for each pending sentence: every 0.1 s while
    the Retriever has not switched to the snapshot serving.json names, not again once it
    serves that snapshot without the sentence, until serving.json or the sentences change
    (a query that could not answer otherwise would only take CPU from the build: on 2 cores,
    ten searches of 100k vectors a second slowed the watch loop's builds)."""

    def __init__(self, recheck: float) -> None:
        super().__init__(daemon=True)
        from ragmart.retrieval.api import Retriever

        self.retriever = Retriever(recheck_seconds=recheck)
        self.pending: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def watch_for(self, sentence: str) -> None:
        with self.lock:
            self.pending[sentence] = time.time()

    def run(self) -> None:
        from ragmart.retrieval.api import ALL_GROUPS

        pointer = Path(os.environ["RAGMART_PUBLISH_DIR"]) / "serving.json"
        asked = None  # what was asked last without an answer: sentences, snapshot served
        while not self.stop.is_set():
            with self.lock:
                sentences = list(self.pending)
            try:
                serving = json.loads(pointer.read_text())["snapshot"]
            except (OSError, ValueError, KeyError):
                serving = None
            if not sentences or asked == (sentences, serving):
                time.sleep(0.1)
                continue
            for sentence in sentences:
                try:
                    result = self.retriever.retrieve(sentence, k=3, groups=ALL_GROUPS)
                except Exception as exc:  # a failed query is a finding, not a crash
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if any(sentence in chunk.chunk_text for chunk in result):
                    with self.lock:
                        self.seen[sentence] = time.time()
                        self.pending.pop(sentence, None)
            current = Path(self.retriever.path).name if self.retriever.path else None
            with self.lock:  # the Retriever serves what serving.json names: ask again on change
                asked = (list(self.pending), serving) if current == serving else None
            time.sleep(0.1)
        self.retriever.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragmart.cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def build_facts(workdir: Path, env: dict[str, str]) -> dict:
    """What may accumulate from build to build, read as a build's line is printed: the load
    average, the build database's, its WAL's and the publish dir's sizes, dbt's slowest
    models (run_results.json) and the publish's steps (auto_publish.json)."""
    def mb(path: Path) -> float:
        return path.stat().st_size / 1e6 if path.exists() else 0.0

    db, published = Path(env["RAGMART_DB"]), Path(env["RAGMART_PUBLISH_DIR"])
    out = {"load1": os.getloadavg()[0], "db_mb": mb(db), "wal_mb": mb(Path(f"{db}.wal")),
           "published_mb": sum(mb(p) for p in published.glob("*.duckdb")),
           "target_mb": sum(mb(p) for p in (workdir / "target").rglob("*") if p.is_file())}
    try:
        results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
        slowest = sorted(results, key=lambda r: -r["execution_time"])[:6]
        out["slowest"] = {r["unique_id"].split(".")[-1]: round(r["execution_time"], 2)
                          for r in slowest}
    except (OSError, ValueError, KeyError):
        out["slowest"] = {}
    try:
        out["publish"] = {k: round(v, 2) for k, v in json.loads(
            (published / "auto_publish.json").read_text()).get("phases", {}).items()}
    except (OSError, ValueError):
        out["publish"] = {}
    return out


def automatic(corpus: Corpus, env: dict[str, str], landing: Path, edits: int, every: float,
              recheck: float, timeout: float, workdir: Path) -> dict:
    loop = subprocess.Popen(
        [sys.executable, "-m", "ragmart.cli.main", "build", "--watch", "--publish",
         "--interval", "1",
         "--", "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines: list[tuple[float, str]] = []

    facts: dict[int, dict] = {}  # per build line: the load, the files' sizes, dbt's slowest

    def pump() -> None:
        for line in loop.stdout:
            lines.append((time.time(), line.rstrip()))
            if LINE.search(line):
                facts[len(lines) - 1] = build_facts(workdir, env)
            print(line.rstrip(), file=sys.stderr, flush=True)  # kept should the run fail

    threading.Thread(target=pump, daemon=True).start()
    while not any("ragmart build #1" in line for _, line in lines):  # its first (no-op) build
        if loop.poll() is not None:
            raise SystemExit("the watch loop ended:\n" + "\n".join(line for _, line in lines))
        time.sleep(0.2)
    reader = Reader(recheck)
    reader.start()
    landed: dict[str, float] = {}
    try:
        for n in range(edits):
            sentence, at = corpus.land_edit(landing, n)
            landed[sentence] = at
            reader.watch_for(sentence)
            deadline = at + timeout
            while sentence not in reader.seen and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(max(0.0, at + every - time.time()))
    finally:
        reader.stop.set()
        reader.join(timeout=30)
        loop.send_signal(signal.SIGINT)
        try:  # a SIGINT that dbt catches mid-build only fails that build: stop it then
            loop.wait(timeout=60)
        except subprocess.TimeoutExpired:
            loop.kill()
            loop.wait()
    builds = []
    for n, (at, line) in enumerate(lines):
        match = LINE.search(line)
        if match:
            builds.append({"at": at, "build_s": float(match.group(3)),
                           "publish_s": float(match.group(5) or 0), "line": line,
                           **facts.get(n, {})})
    lags, shares, publishes = [], [], []
    for sentence, at in landed.items():
        if sentence not in reader.seen:
            continue
        lag = reader.seen[sentence] - at
        lags.append(lag)
        # the build that published it: the last line printed before the reader saw it
        covering = [b for b in builds if at < b["at"] <= reader.seen[sentence]]
        if covering:
            publishes.append(covering[-1]["publish_s"])
            shares.append(covering[-1]["publish_s"] / lag if lag > 0 else 0.0)
    return {
        "edits": edits, "servable": len(lags), "errors": reader.errors[:5],
        "failed_queries": len(reader.errors),
        "lag_p50": pct(lags, 0.5), "lag_p95": pct(lags, 0.95), "lag_max": max(lags or [0]),
        "publish_s_p50": pct(publishes, 0.5), "publish_share_p50": pct(shares, 0.5),
        "build_s_p50": pct([b["build_s"] for b in builds[1:]], 0.5),
        "lines": [b["line"] for b in builds][-3:], "builds": builds,
    }


def manual(corpus: Corpus, env: dict[str, str], workdir: Path, db: Path, landing: Path,
           edits: int) -> dict:
    from ragmart.build.runner import split_seconds

    lags, steps = [], {"dbt build": [], "ragmart publish": [], "ragmart retrieve": [],
                       "dbt nodes": []}
    for n in range(edits):
        sentence, at = corpus.land_edit(landing, 1000 + n)
        steps["dbt build"].append(dbt_build(workdir, db, landing))
        results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
        steps["dbt nodes"].append(sum(split_seconds(
            (r["unique_id"], r["execution_time"]) for r in results).values()))
        started = time.perf_counter()
        proc = cli(env, "publish", "v1")
        if proc.returncode != 0:
            raise SystemExit(f"publish failed: {proc.stderr}")
        steps["ragmart publish"].append(time.perf_counter() - started)
        started = time.perf_counter()
        proc = cli(env, "retrieve", sentence, "--all-groups", "-k", "3", "--json")
        steps["ragmart retrieve"].append(time.perf_counter() - started)
        if not any(sentence in r["chunk_text"] for r in json.loads(proc.stdout)["results"]):
            raise SystemExit(f"the manual path did not serve {sentence!r}")
        lags.append(time.time() - at)
    return {"edits": edits, "lag_p50": pct(lags, 0.5), "lag_p95": pct(lags, 0.95),
            **{f"{name}_s_p50": pct(values, 0.5) for name, values in steps.items()}}


LAYOUT_VERSION = 1  # bump when the corpus or its first build changes: the cache is rebuilt


def prepared(n_docs: int, seed: int) -> tuple[Path, dict]:
    """The corpus of `n_docs` documents built and published once, cached under bench/out/
    (the initial build, with its HNSW index above 25,000 chunks, takes minutes: prepare it
    outside the benchmark lock with --prepare); returns (its directory, what it measured)."""
    cache = ROOT / "bench" / "out" / f"freshness-{n_docs}-s{seed}-l{LAYOUT_VERSION}"
    if (cache / "prepared.json").exists():
        return cache, json.loads((cache / "prepared.json").read_text())
    cache.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"ragmart-fresh-{n_docs}-", dir=cache.parent))
    db, landing = workdir / "ragmart.duckdb", workdir / "landing"
    env = {**os.environ, **build_env(workdir, db, landing),
           "RAGMART_PUBLISH_DIR": str(workdir / "published")}
    Corpus(n_docs, seed).initial(landing)
    started = time.perf_counter()
    dbt_build(workdir, db, landing)
    initial_build = time.perf_counter() - started
    proc = cli(env, "publish", "v1")
    if proc.returncode != 0:
        raise SystemExit(f"publish failed: {proc.stderr}")
    out = json.loads(proc.stdout)
    facts = {"chunks": out["chunks"], "initial_build_s": initial_build,
             "snapshot_mb": (workdir / "published" / out["snapshot"]).stat().st_size / 1e6}
    (workdir / "prepared.json").write_text(json.dumps(facts))
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(workdir, cache)
    return cache, facts


def bench(n_docs: int, edits: int, every: float, manual_edits: int, recheck: float,
          timeout: float, seed: int = 7) -> dict:
    cache, facts = prepared(n_docs, seed)
    workdir = Path(tempfile.mkdtemp(prefix=f"ragmart-fresh-{n_docs}-"))
    shutil.copytree(cache, workdir, dirs_exist_ok=True)  # copy2: landed files keep their times
    db, landing = workdir / "ragmart.duckdb", workdir / "landing"
    env = {**os.environ, **build_env(workdir, db, landing),
           "RAGMART_PUBLISH_DIR": str(workdir / "published")}
    os.environ.update(env)  # the reader (in this process) resolves what serves from it
    corpus = Corpus(n_docs, seed)  # the same documents as the cached build's
    corpus.seq = n_docs + 1  # and its change sequence, as initial() left it
    try:
        return {
            "docs": n_docs, **facts, "db_mb": db.stat().st_size / 1e6,
            "automatic": automatic(corpus, env, landing, edits, every, recheck, timeout,
                                   workdir),
            "manual": manual(corpus, env, workdir, db, landing, manual_edits),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[2000])
    parser.add_argument("--edits", type=int, default=8, help="edits on the automatic path")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between edits")
    parser.add_argument("--manual", type=int, default=3, help="edits on the manual path")
    parser.add_argument("--recheck", type=float, default=0.5,
                        help="the reader's RAGMART_SERVING_RECHECK_SECONDS")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="give up on an edit not servable after this many seconds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--per-build", action="store_true",
                        help="print each build's load, file sizes, slowest models, publish steps")
    parser.add_argument("--prepare", action="store_true",
                        help="build (or check) the cached corpus and its first publish, and stop")
    args = parser.parse_args()
    if args.prepare:
        for n_docs in args.docs:
            print(n_docs, *prepared(n_docs, 7))
        return
    for n_docs in args.docs:
        result = bench(n_docs, args.edits, args.every, args.manual, args.recheck, args.timeout)
        if args.json:
            print(json.dumps(result, indent=2))
            continue
        auto, hand = result["automatic"], result["manual"]
        print(f"{n_docs} documents, {result['chunks']} chunks (initial build "
              f"{result['initial_build_s']:.0f} s; build db {result['db_mb']:.0f} MB, "
              f"snapshot {result['snapshot_mb']:.0f} MB)")
        nodes = [sum(map(float, re.findall(r"(?:models|data tests) ([0-9.]+)s", b["line"])))
                 for b in auto["builds"][1:]]  # the edits' builds: dbt's node seconds
        print(f"  warm builds' dbt nodes p50 {_s(pct(nodes, 0.5))}")
        print(f"  build --watch --publish: {auto['servable']}/{auto['edits']} servable, lag p50 "
              f"{_s(auto['lag_p50'])} p95 {_s(auto['lag_p95'])} max {_s(auto['lag_max'])}; "
              f"build p50 {_s(auto['build_s_p50'])}, publish p50 {_s(auto['publish_s_p50'])} "
              f"(share of the lag p50 {auto['publish_share_p50'] or 0:.0%}); failed reader "
              f"queries {auto['failed_queries']}")
        for n, b in enumerate(auto["builds"]):
            if args.per_build:
                print(f"  build {n}: load {b.get('load1', 0):.1f}, build {b['build_s']:.1f} s, "
                      f"publish {b['publish_s']:.1f} s; db {b.get('db_mb', 0):.0f} MB, wal "
                      f"{b.get('wal_mb', 0):.0f} MB, published {b.get('published_mb', 0):.0f} "
                      f"MB, target {b.get('target_mb', 0):.0f} MB\n    dbt {b.get('slowest')}"
                      f"\n    publish {b.get('publish')}")
        print(f"  cold commands: lag p50 {_s(hand['lag_p50'])} p95 {_s(hand['lag_p95'])} "
              f"(dbt build {_s(hand['dbt build_s_p50'])}, its nodes "
              f"{_s(hand['dbt nodes_s_p50'])}, publish "
              f"{_s(hand['ragmart publish_s_p50'])}, retrieve "
              f"{_s(hand['ragmart retrieve_s_p50'])})")


if __name__ == "__main__":
    main()
