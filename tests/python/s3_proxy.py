"""A small fault-injecting HTTP proxy in front of the test S3 server.

Every request is forwarded to the server unless the proxy's `plan` (a callable given the
method, path and query, returning a fault or None) says otherwise:

- ``"500"``: answers 500 InternalError without forwarding;
- ``"503"``: answers 503 SlowDown without forwarding;
- ``"403"``: answers 403 AccessDenied without forwarding, as S3 answers a request the bucket
  policy does not allow (moto enforces no IAM policy by default);
- ``"reset"``: forwards, sends the headers and half the body, then resets the connection.

The proxy counts object reads (GetObject: a GET of a key, not a listing) per key in `reads`
and the faults it injected in `injected`, so tests see what a build actually read.
"""

from __future__ import annotations

import collections
import http.client
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

Plan = Callable[[str, str, dict], str | None]

_ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
          "<Message>injected by the test proxy</Message></Error>")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.plan: Plan = lambda method, path, query: None
        self.reads: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str, str]] = []  # (method, Host header, path)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # a reset connection is the point
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def object_key(self, method: str, path: str, query: dict) -> str | None:
        """The 'bucket/key' a request reads, or None for anything else."""
        parts = unquote(path).lstrip("/").split("/", 1)
        if method != "GET" or len(parts) < 2 or not parts[1] or "list-type" in query \
                or "versions" in query or "uploads" in query:
            return None
        return "/".join(parts)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        split = urlsplit(request.path)
        query = parse_qs(split.query, keep_blank_values=True)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        key = self.object_key(request.command, split.path, query)
        fault = self.plan(request.command, split.path, query)
        with self.lock:
            self.requests.append((request.command, request.headers.get("Host", ""), split.path))
            if key is not None:
                self.reads[key] += 1
            if fault:
                self.injected[fault] += 1
        if fault in ("500", "503", "403"):
            code = {"500": "InternalError", "503": "SlowDown", "403": "AccessDenied"}[fault]
            payload = _ERROR.format(code=code).encode()
            request.send_response(int(fault))
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "connection"}
        upstream.request(request.command, request.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        request.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length",
                                    "server", "date"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if fault == "reset" and len(data) > 1:
            request.wfile.write(data[: len(data) // 2])
            request.wfile.flush()
            # SO_LINGER 0: close with a RST, as a dropped connection does
            request.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.connection.close()
            request.close_connection = True
            return
        if request.command != "HEAD":
            request.wfile.write(data)
