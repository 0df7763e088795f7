"""A real local OpenAI-compatible embeddings server, with scripted faults (tests and bench).

``POST /v1/embeddings`` answers like the OpenAI API: vectors are the hash provider's for the
requested ``dimensions`` (1536 when absent), encoded as ``float`` (the API default) or
``base64`` (little-endian float32), with ``usage`` counting ceil(utf-8 bytes / 4) tokens per
input. Every request is recorded. Faults are a queue: each request takes the next
:class:`Reply` (a normal answer when the queue is empty), so a test scripts exactly what the
n-th request sees::

    with EmbeddingServer() as server:
        server.script(Reply(429, headers={"Retry-After": "0"}), Reply(delay=2.0))
        ...  # OPENAI_API_KEY=server.api_key, RAGMART_OPENAI_BASE_URL=server.base_url
        assert len(server.requests) == 3
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ragmart.embedding.providers.hashing import HashingProvider

NATIVE_DIMENSIONS = 1536


@dataclass(frozen=True)
class Reply:
    """What one request gets. Defaults: a correct answer, at once."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # a raw body instead of the computed one
    delay: float = 0.0  # seconds to wait before answering
    drop_vectors: int = 0  # answer with this many vectors fewer than inputs
    dimensions: int | None = None  # answer with vectors of this size instead


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    reply: Reply
    received_at: float = 0.0  # time.monotonic() on arrival
    in_flight_at_arrival: int = 0  # requests being answered when it arrived, itself included

    @property
    def inputs(self) -> list[str]:
        value = self.body.get("input", [])
        return [value] if isinstance(value, str) else list(value)


def usage_tokens(texts: list[str]) -> int:
    """The token count this server bills for ``texts``."""
    return sum(math.ceil(len(t.encode("utf-8")) / 4) for t in texts)


def expected_vectors(texts: list[str], dimensions: int) -> np.ndarray:
    """The vectors this server answers for ``texts``."""
    return HashingProvider(dimensions=dimensions).embed(texts)


class EmbeddingServer:
    """ThreadingHTTPServer on 127.0.0.1, port 0, in a background thread."""

    def __init__(self, api_key: str = "sk-test-local-0123456789") -> None:
        self.api_key = api_key
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in arrival order."""
        with self._lock:
            self._faults.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("EmbeddingServer is not started; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> EmbeddingServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> EmbeddingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def texts(self) -> list[str]:
        """Every input of every request, in arrival order."""
        return [text for request in self.requests for text in request.inputs]

    # ------------------------------------------------------------------ serving

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._faults.popleft() if self._faults else Reply()

    def _enter(self) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.in_flight

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def answer(self, body: dict[str, Any], reply: Reply) -> tuple[int, bytes]:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
            return 400, _error("'input' must be a non-empty string or list of them")
        if len(texts) > 2048:
            return 400, _error(f"{len(texts)} inputs: at most 2048 per request")
        dimensions = body.get("dimensions", NATIVE_DIMENSIONS)
        vectors = expected_vectors(texts, reply.dimensions or dimensions)
        encoding = body.get("encoding_format", "float")
        data = []
        for index, vector in enumerate(vectors[: len(texts) - reply.drop_vectors]):
            if encoding == "base64":
                value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                value = [float(x) for x in vector]
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = usage_tokens(texts)
        payload = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, json.dumps(payload).encode()


def _error(message: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


def _handler(server: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            in_flight = server._enter()
            try:
                reply = server._next_reply()
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                headers = {k.lower(): v for k, v in self.headers.items()}
                server._record(
                    Request(self.path, headers, body, reply, time.monotonic(), in_flight))
                if reply.delay:
                    time.sleep(reply.delay)
                status, payload = self._respond(body, headers, reply)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer
            finally:
                server._leave()

        def _respond(
            self, body: dict[str, Any], headers: dict[str, str], reply: Reply
        ) -> tuple[int, bytes]:
            if self.path.rstrip("/") != "/v1/embeddings":
                return 404, _error(f"no route {self.path}")
            given = headers.get("authorization", "")
            if given != f"Bearer {server.api_key}":  # echoes the key, as some endpoints do
                return 401, _error(f"Incorrect API key provided: {given[7:]}", "invalid_api_key")
            if reply.body is not None or reply.status != 200:
                fallback = _error(f"scripted {reply.status}", "server_error")
                return reply.status, reply.body if reply.body is not None else fallback
            return server.answer(body, reply)

    return Handler
