"""The `ragmart serve` application: POST /v1/retrieve, GET /healthz, GET /metrics, OpenAPI.

A request goes through, in order: the body cap (413), the metrics, the API key (401), the body's
schema (422: unknown fields refused), the key's token bucket (429), the cap on searches in
flight (429), the service's k (400); then the search runs on a worker thread with a reader of
the snapshot that serves (ragmart.http.pool), and the answer is the document `ragmart retrieve
--json` prints (ragmart.retrieval.document). An abstention is an answer: 200 with
`"abstained": true`, and the header `X-Ragmart-Abstained: true`.

| status | when                                                                          |
|--------|-------------------------------------------------------------------------------|
| 200    | an answer, ranked chunks or an abstention                                     |
| 400    | a request ragmart refuses: unknown contract, bad as_of, k out of range, mode  |
| 401    | no key, an unknown key, a malformed or repeated Authorization header          |
| 413    | body over RAGMART_SERVE_MAX_BODY_BYTES                                        |
| 422    | body not valid JSON of RetrieveRequest (unknown fields), a query parameter    |
| 429    | the key's rate (Retry-After), or RAGMART_SERVE_MAX_CONCURRENCY in flight      |
| 503    | nothing serves yet, or the embedding provider failed                          |

What answers without a key: `GET /healthz` always (load balancers probe it), with the status and
the index version only; with a valid key also the snapshot's file name, its chunks and why
nothing serves (a path of the server's disk). `/metrics`, `/docs` and `/openapi.json` answer
without a key unless RAGMART_SERVE_PRIVATE_ENDPOINTS=true, when any valid key is required (401
otherwise: Prometheus sends it with `authorization: {credentials: KEY}`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import ragmart
from ragmart.config import Settings
from ragmart.embedding.providers import EmbeddingError
from ragmart.http.keys import ApiKey, KeyRing, bearer_token
from ragmart.http.limits import (
    BURST_ENV,
    CONCURRENCY_ENV,
    K_ENV,
    PRIVATE_ENV,
    RATE_ENV,
    BodyLimit,
    Limits,
    TokenBuckets,
    default_workers,
)
from ragmart.http.metrics import Metrics, RequestMetrics
from ragmart.http.models import ErrorResponse, RetrieveRequest, RetrieveResponse
from ragmart.http.pool import NothingServes, ServingPool, serves_postgres
from ragmart.retrieval.document import document_json, parse_as_of
from ragmart.retrieval.results import RetrievalError
from ragmart.serving.pointer import file_stamp

# the collector's thresholds in the service (Python's default: 700, 10, 10)
GC_THRESHOLDS = (20_000, 20, 20)
ENDPOINTS = {"/v1/retrieve", "/healthz", "/metrics", "/openapi.json", "/docs"}
# what RAGMART_SERVE_PRIVATE_ENDPOINTS puts behind a key (besides /v1/retrieve, always)
PRIVATE = ("/metrics", "/openapi.json", "/docs")
UNAUTHORIZED = ("send one header `Authorization: Bearer <key>` with a key of this service "
                "(`ragmart keys add`)")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what} for status, what in (
        (400, "a request ragmart refuses"), (401, "no key or an unknown key"),
        (413, "body too large"), (422, "body not a RetrieveRequest"),
        (429, "over the key's rate or the service's concurrency"),
        (503, "nothing serves yet"))}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class KeysWatcher:
    """The keys file, read again when it changes (a key added or removed applies at once);
    a file that became invalid leaves the keys read before in force, and says so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ring = KeyRing.load(path)
        self._stat = file_stamp(path)

    def find(self, token: str) -> ApiKey | None:
        stamp = file_stamp(self.path)
        if stamp != self._stat:
            self._stat = stamp
            try:
                self.ring = KeyRing.load(self.path)
            except ValueError as exc:
                from ragmart.http.pool import log

                log.error("ragmart serve: %s; the keys read before stay in force", exc)
        return self.ring.find(token)


def key_of(keys: KeysWatcher, authorization: list[str]) -> ApiKey | None:
    """The key of a request's Authorization headers, None without a valid one."""
    token = bearer_token(authorization)
    return keys.find(token) if token is not None else None


async def caller(request: Request) -> ApiKey:
    """The key of the request: its groups are the only groups the search runs with."""
    key = key_of(request.app.state.keys, request.headers.getlist("authorization"))
    if key is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED,
                       {"WWW-Authenticate": 'Bearer realm="ragmart"'})
    return key


class PrivateEndpoints:
    """ASGI middleware: a request for one of PRIVATE (its path or below it) without a valid key
    is 401 (RAGMART_SERVE_PRIVATE_ENDPOINTS)."""

    def __init__(self, app: Any, keys: KeysWatcher) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if any(path == p or path.startswith(p + "/") for p in PRIVATE) and key_of(
                self.keys, [v.decode("latin-1") for k, v in scope["headers"]
                            if k == b"authorization"]) is None:
            response = _error(401, "unauthorized", f"{path} needs a key on this service "
                              f"({PRIVATE_ENV}): {UNAUTHORIZED}",
                              {"WWW-Authenticate": 'Bearer realm="ragmart"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LeanRetrieve:
    """ASGI middleware, innermost (inside the metrics and the body cap): a plain POST
    /v1/retrieve (no query string, one `Content-Type: application/json`, a known key, a body
    pydantic's compiled JSON validation accepts) is answered here, without FastAPI's router,
    dependency resolution, Request objects and json.loads + validation in Python (about 0.3 ms
    of the event loop's thread per request, which every connection waits for). Anything else
    goes on to FastAPI with the body unchanged, so every refusal (401, 422, ...) keeps one
    author; FastAPI still describes the endpoint (/openapi.json)."""

    def __init__(self, app: Any, keys: KeysWatcher,
                 answer: Callable[[RetrieveRequest, ApiKey], Awaitable[Response]]) -> None:
        self.app, self.keys, self.answer = app, keys, answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["path"] != "/v1/retrieve"
                or scope["method"] != "POST" or scope.get("query_string")
                or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        types, authorization = [], []
        for name, value in scope["headers"]:
            if name == b"content-type":
                types.append(value)
            elif name == b"authorization":
                authorization.append(value.decode("latin-1"))
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        key = (key_of(self.keys, authorization) if types == [b"application/json"] and body
               else None)
        request = _valid(body) if key is not None else None
        if key is None or request is None:
            first = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay() -> dict:  # the body read, once; then what the server says
                return first.pop() if first else await receive()

            await self.app(scope, replay, send)
            return
        try:
            response = await self.answer(request, key)
        except ApiError as exc:
            response = _error(exc.status, exc.code, exc.message, exc.headers)
        await response(scope, receive, send)


def _valid(body: bytes) -> RetrieveRequest | None:
    """`body` as a RetrieveRequest, None when it is not one (FastAPI then says why). pydantic's
    JSON parser accepts a subset of what json.loads reads (no lone surrogates, no BOM, UTF-8
    only), with the same values, so FastAPI would accept what this accepts, as this does."""
    try:
        return RetrieveRequest.model_validate_json(body)
    except ValidationError:
        return None


Caller = Annotated[ApiKey, Depends(caller)]


def create_app(*, keys_file: str | Path, db_path: str | Path | None = None,
               limits: Limits | None = None, recheck_seconds: float | None = None,
               own_process: bool = False) -> FastAPI:
    """The service for the keys of `keys_file`, reading what serves (the serving pointer of
    $RAGMART_DB, followed) or the file `db_path` as it is. `own_process` (ragmart serve): the
    process does nothing else, so its garbage collector runs less often (GC_THRESHOLDS)."""
    limits = limits or Limits.from_env()
    if limits.workers is None:  # what serves decides (`default_workers`), once
        limits = dataclasses.replace(limits, workers=default_workers(
            postgres=serves_postgres(Path(db_path) if db_path else None)))
    keys = KeysWatcher(Path(keys_file))
    metrics = Metrics()
    pool = ServingPool(
        db_path=Path(db_path) if db_path else None, follow_db=Settings.from_env().db_path,
        workers=limits.workers, recheck_seconds=recheck_seconds,
        on_switch=lambda g: metrics.serving_changed(g.version, g.path.name, g.chunks))
    buckets = TokenBuckets(limits.rate, limits.burst)
    executor = ThreadPoolExecutor(limits.workers, thread_name_prefix="ragmart-search")
    admitted = 0

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, pool.start)
        # an answer makes many short-lived objects: at Python's default thresholds the
        # collector ran often enough to cost ~6% of the service's CPU under load (py-spy)
        if own_process:
            gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            pool.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ragmart", version=ragmart.__version__, lifespan=lifespan,
                  description="Contracted retrieval over the published ragmart snapshot.")
    app.state.pool, app.state.limits, app.state.metrics = pool, limits, metrics
    app.state.keys = keys

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            "body: not valid JSON" if e["type"] == "json_invalid" else
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
            for e in exc.errors())
        return _error(422, "invalid_request", f"{problems} (see /openapi.json)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", f"internal error: {type(exc).__name__} (a defect in "
                                       "ragmart: please report it)")

    async def answer(body: RetrieveRequest, key: ApiKey) -> Response:
        """The answer to a valid body from a known key, or ApiError: the request path after
        the schema, for FastAPI's route and the lean path (LeanRetrieve) alike."""
        nonlocal admitted
        wait = buckets.take(key.name)
        if wait:
            raise ApiError(429, "rate_limited", f"key {key.name!r} is over its rate of "
                           f"{limits.rate:g} requests/s, bursts of {limits.burst} ({RATE_ENV}, "
                           f"{BURST_ENV}); retry after {wait:.2f} s",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
        if admitted >= limits.max_concurrency:
            raise ApiError(429, "overloaded", f"{limits.max_concurrency} searches are in "
                           f"flight, the service's bound ({CONCURRENCY_ENV}); retry shortly",
                           {"Retry-After": "1"})
        if body.k > limits.max_k:
            raise ApiError(400, "bad_request", f"k must be at most {limits.max_k} on this "
                           f"service ({K_ENV}), got {body.k}; ask for fewer chunks")
        try:
            options: dict[str, Any] = {
                "k": body.k, "doc_types": body.doc_types, "contract": body.contract,
                "groups": key.access, "as_of": parse_as_of(body.as_of, name="as_of")}
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if body.mode is not None:
            options["mode"] = body.mode

        # a search of the vectors in memory announces its product: a product that starts
        # while it is on its way waits for it (ragmart.retrieval.products.Gathering). Now
        # when a worker thread is free for it, else when one takes it (not while it queues)
        serving = pool.current
        gathering = (serving.products.gathering if serving is not None
                     and serving.products is not None and body.mode != "lexical"
                     and options["as_of"] is None else None)
        expected = (gathering.expect() if gathering is not None
                    and admitted < limits.workers else None)

        def search() -> tuple[Any, Response | Exception]:
            with gathering.expecting(expected) if gathering is not None else nullcontext():
                result, generation = pool.run(lambda reader: reader.retrieve(body.question,
                                                                             **options))
            # the document and its JSON on the worker thread too: the event loop's thread
            # serves every connection, and any time it spends here delays all of them. Its
            # failure is a defect (500), not a refused search: handed back, raised below
            try:
                document = document_json(body.question, result, pool.state(generation))
                return result, Response(document, media_type="application/json",
                                        headers={"X-Ragmart-Abstained": "true" if result
                                                 .abstained else "false",
                                                 "X-Ragmart-Index-Version": generation.version})
            except Exception as exc:  # noqa: BLE001 - raised on the event loop below
                return result, exc

        admitted += 1
        metrics.in_flight.inc()
        try:
            result, response = await asyncio.get_running_loop().run_in_executor(
                executor, search)
        except NothingServes as exc:
            raise ApiError(503, "unavailable", f"nothing serves yet: {exc}",
                           {"Retry-After": "5"}) from None
        except EmbeddingError as exc:
            raise ApiError(503, "embedding_unavailable", f"the question could not be "
                           f"embedded: {exc}", {"Retry-After": "5"}) from None
        except (RetrievalError, ValueError) as exc:
            raise ApiError(400, "bad_request", " ".join(str(exc).split())) from None
        finally:
            admitted -= 1
            metrics.in_flight.dec()
            if gathering is not None and expected is not None:
                gathering.settle(expected)  # a search that never ran
        if result.abstained:
            metrics.abstained(result)
        if isinstance(response, Exception):
            raise response
        return response

    @app.post("/v1/retrieve", response_model=None, responses={200: {"model": RetrieveResponse},
                                                              **ERRORS})
    async def retrieve(body: RetrieveRequest, request: Request,
                       key: Caller) -> Response:
        """The top-k chunks the key's groups may see, or an abstention: the JSON of
        `ragmart retrieve --json`."""
        if request.query_params:
            raise ApiError(422, "invalid_request", "POST /v1/retrieve takes no query "
                           "parameters; send every option in the JSON body")
        return await answer(body, key)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """200 while a snapshot serves (its version; with a key also its file and chunks),
        503 until one does (with a key, why)."""
        generation = pool.current
        known = key_of(keys, request.headers.getlist("authorization")) is not None
        if generation is None:
            why = f": {pool.error}" if known else " (send a key to see why)"
            return JSONResponse({"status": "unavailable", "error": {
                "code": "unavailable", "message": f"nothing serves yet{why}"}}, 503)
        health: dict[str, Any] = {"status": "ok", "version": generation.version}
        if known:
            health.update(snapshot=generation.path.name, chunks=generation.chunks,
                          time=time.time())
        return JSONResponse(health)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text: requests, latency, abstentions by clause, what serves."""
        generation = pool.current
        products = generation.products if generation is not None else None
        return Response(metrics.render(dict(products.batches) if products else None),
                        media_type=metrics.content_type)

    app.add_middleware(LeanRetrieve, keys=keys, answer=answer)  # innermost: after the body cap
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if limits.private_endpoints:
        app.add_middleware(PrivateEndpoints, keys=keys)
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=ENDPOINTS)
    return app
