"""Embedding provider throughput, measured in one run (figures and ratios, no assertions).

    .venv/bin/python bench/providers.py [--repeats N] [--openai-texts N]

1. The embedded default (local all-MiniLM-L6-v2 int8) on the chunk texts of sample/documents
   (ragmart.chunking.chunkers): through the pipeline (ragmart.embedding.pipeline.embed_texts, its
   batching and
   Arrow output) against the model's raw speed (one LocalOnnxProvider.embed call on the same
   texts). Runs alternate and the best of each is compared; target: the pipeline adds < 10%.
2. The openai provider against the local OpenAI-compatible test server
   (tests/python/openai_server.py): requests/s and texts/s at 1 and 4 requests in flight.
   The server runs in this process (same GIL), so these are lower bounds for the client side.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def chunk_texts() -> list[str]:
    from ragmart.chunking import chunkers as chunking

    texts: list[str] = []
    for path in sorted((ROOT / "sample" / "documents").glob("*.md")):
        title = path.stem.replace("-", " ").title()
        texts.extend(c.text for c in chunking.chunk_document(title, path.read_text("utf-8")))
    return texts


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def load_test_server() -> ModuleType:
    path = ROOT / "tests" / "python" / "openai_server.py"
    spec = importlib.util.spec_from_file_location("openai_server", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import the test server from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["openai_server"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def bench_local(texts: list[str], repeats: int) -> None:
    from ragmart.embedding.pipeline import embed_texts
    from ragmart.embedding.providers.local import LocalOnnxProvider

    items = [(f"{i:06d}", text) for i, text in enumerate(texts)]
    provider = LocalOnnxProvider()
    provider.embed(texts[:8])  # load and verify the model outside the timings
    raw_runs: list[float] = []
    pipeline_runs: list[float] = []
    for _ in range(repeats):
        raw_runs.append(timed(lambda: provider.embed(texts)))
        pipeline_runs.append(timed(lambda: embed_texts(items, provider)))
    raw, pipe = min(raw_runs), min(pipeline_runs)
    print(f"local provider ({provider.model}, {provider.threads} onnx thread(s)), "
          f"{len(texts)} chunk texts, best of {repeats}:")
    print(f"  raw LocalOnnxProvider.embed, one call: {raw:7.2f}s  {len(texts) / raw:7.1f} texts/s"
          f"  (runs: {', '.join(f'{r:.2f}' for r in raw_runs)})")
    print(f"  pipeline embed_texts (batches of 256):  {pipe:7.2f}s  {len(texts) / pipe:7.1f} "
          f"texts/s  (runs: {', '.join(f'{r:.2f}' for r in pipeline_runs)})")
    print(f"  pipeline / raw: {pipe / raw:.3f} (best), "
          f"{statistics.median(pipeline_runs) / statistics.median(raw_runs):.3f} (median); "
          f"target < 1.10")


def bench_openai(texts: list[str], n_texts: int) -> None:
    server_module = load_test_server()
    from ragmart.embedding.pipeline import embed_texts
    from ragmart.embedding.providers.openai import OpenAIProvider

    corpus = [f"{texts[i % len(texts)]} [{i}]" for i in range(n_texts)]
    items = [(f"{i:06d}", text) for i, text in enumerate(corpus)]
    with server_module.EmbeddingServer() as server:
        os.environ["OPENAI_API_KEY"] = server.api_key
        print(f"openai provider against the local test server, {n_texts} texts:")
        for concurrency in (1, 4):
            for batch_size in (16, 128):
                server.reset()
                provider = OpenAIProvider(
                    base_url=server.base_url, batch_size=batch_size,
                    max_concurrency=concurrency,
                )
                seconds = timed(lambda p=provider: embed_texts(items, p))
                requests = len(server.requests)
                print(f"  {concurrency} in flight, {batch_size:3d} texts/request: "
                      f"{requests:4d} requests in {seconds:6.2f}s = {requests / seconds:7.1f} "
                      f"requests/s, {n_texts / seconds:8.1f} texts/s "
                      f"(max in flight seen: {server.max_in_flight}, retries: "
                      f"{provider.stats.retries})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each (3)")
    parser.add_argument("--openai-texts", type=int, default=4096)
    args = parser.parse_args(argv)
    texts = chunk_texts()
    print(f"{len(texts)} chunk texts from {ROOT / 'sample' / 'documents'}, "
          f"{sum(len(t.split()) for t in texts) / len(texts):.0f} words on average; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    bench_local(texts, max(1, args.repeats))
    bench_openai(texts, args.openai_texts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
