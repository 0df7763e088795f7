"""What `ragmart serve` bounds, read from the environment, and the two mechanisms that need
state: a per-key token bucket and the request-body cap (an ASGI middleware).

Every bound answers at once with a 4xx that says which bound and how to stay under it; nothing
waits in an unbounded queue:

* body size (RAGMART_SERVE_MAX_BODY_BYTES): 413 before the body is read past the bound;
* k (RAGMART_SERVE_MAX_K, at most ragmart's MAX_K): 400;
* requests in flight (RAGMART_SERVE_MAX_CONCURRENCY): the next one is 429 at once;
* per key, a token bucket (RAGMART_SERVE_RATE per second, bursts of RAGMART_SERVE_BURST): 429
  with Retry-After;
* RAGMART_SERVE_WORKERS threads run the searches (DuckDB and numpy release the GIL), each with
  its own reader, so a slow search holds one thread and never the event loop. Unset, their
  number follows what serves (`default_workers`).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from ragmart.retrieval.request import MAX_K

BODY_ENV = "RAGMART_SERVE_MAX_BODY_BYTES"
K_ENV = "RAGMART_SERVE_MAX_K"
CONCURRENCY_ENV = "RAGMART_SERVE_MAX_CONCURRENCY"
WORKERS_ENV = "RAGMART_SERVE_WORKERS"
RATE_ENV = "RAGMART_SERVE_RATE"
BURST_ENV = "RAGMART_SERVE_BURST"
PRIVATE_ENV = "RAGMART_SERVE_PRIVATE_ENDPOINTS"


class LimitsError(ValueError):
    pass


def _switch(name: str) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise LimitsError(f"{name}={text!r} is not a switch; write true or false (the default)")


def _number(name: str, default: float | None, *, integer: bool, maximum: float = math.inf,
            unset: str = "the default") -> float | None:
    """The setting `name`, `default` when unset; `unset` says what unsetting it means."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= maximum):  # nan fails too
        kind = "an integer" if integer else "a number"
        raise LimitsError(f"{name}={text!r} is not {kind} > 0"
                          + (f" and <= {maximum}" if maximum < math.inf else "")
                          + (f"; write e.g. {default:g} (the default)" if default is not None
                             else "; write e.g. 4")
                          + f", or unset it ({unset})")
    return value


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 65_536
    max_k: int = 100
    max_concurrency: int = 64
    workers: int | None = None  # None: default_workers, once what serves is known
    rate: float = 50.0  # requests per second per key
    burst: int = 100
    # /metrics, /docs and /openapi.json answer only a request with a key (/healthz stays open)
    private_endpoints: bool = False

    @classmethod
    def from_env(cls) -> Limits:
        d = cls()
        workers = _number(WORKERS_ENV, None, integer=True, maximum=256,
                          unset="one thread per core, 8 serving from PostgreSQL")
        return cls(
            max_body_bytes=int(_number(BODY_ENV, d.max_body_bytes, integer=True)),
            max_k=int(_number(K_ENV, d.max_k, integer=True, maximum=MAX_K)),
            max_concurrency=int(_number(CONCURRENCY_ENV, d.max_concurrency, integer=True)),
            workers=None if workers is None else int(workers),
            rate=_number(RATE_ENV, d.rate, integer=False),
            burst=int(_number(BURST_ENV, d.burst, integer=True)),
            private_endpoints=_switch(PRIVATE_ENV),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Search threads when RAGMART_SERVE_WORKERS is unset. With the vectors in memory a search is
# CPU work (numpy, ONNX Runtime and DuckDB release the GIL; the Python between them does not),
# so threads beyond the cores only contend for the GIL and the cores: bench/serve.py, 100k
# chunks, hybrid, 8 clients on 2 cores, 1,200 queries, three interleaved rounds: p95 33-38 ms
# with 2 threads, 42-45 with 3, 42-46 with 4, 56-65 with 8 (vector: 25-26 ms with 2, 31-32
# with 8), although fewer threads share fewer int8 products. At least 2, so that one slow
# search leaves a thread to the others. PostgreSQL serving: a search waits on the server most
# of its time, so 8 (each a connection).
MIN_WORKERS = 2
POSTGRES_WORKERS = 8


def default_workers(*, postgres: bool) -> int:
    """The search threads of a service reading PostgreSQL (`postgres`) or the vectors in
    memory: one per core this process may run on, at least MIN_WORKERS."""
    if postgres:
        return POSTGRES_WORKERS
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(MIN_WORKERS, cores)


class TokenBuckets:
    """One token bucket per key name: `rate` tokens a second, at most `burst` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        """0 when a token was taken, else the seconds until the next one."""
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413, by its declared
    Content-Length before reading, else as soon as the bytes read pass the bound; the body
    within the bound is handed on to the app unchanged."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if any(not v.isdigit() or int(v) > self.limit for v in declared):
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = error_body("payload_too_large",
                          f"the request body is larger than {self.limit} bytes "
                          f"({BODY_ENV}); send a shorter question")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
