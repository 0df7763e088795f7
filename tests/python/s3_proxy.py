"""An HTTP proxy in front of the test S3 server that answers some requests itself.

moto accepts every request whatever the credentials (it enforces no IAM policy by default), so a
test that needs S3 to refuse a permission puts this proxy between ragmart and moto: ``rule``
sees each request (method, path, query) and returns the response to send instead of forwarding
it, or None to forward it unchanged.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key, percent-encoded as sent
    query: dict[str, list[str]]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Rule = Callable[[Request], Reply | None]


def access_denied(message: str = "Access Denied") -> Reply:
    """What S3 answers a request its policy does not allow."""
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>").encode()
    return Reply(403, body, {"Content-Type": "application/xml"})


def _handler(upstream: str, rule: Rule, seen: list[Request]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    out += self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return out
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            headers = {k: v for k, v in reply.headers.items()
                       if k.lower() not in ("transfer-encoding", "content-length", "connection")}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def _any(self) -> None:
            parts = urlsplit(self.path)
            request = Request(self.command, parts.path, parse_qs(parts.query,
                                                                 keep_blank_values=True))
            seen.append(request)
            body = self._body()
            reply = rule(request)
            if reply is None:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length")}
                conn = http.client.HTTPConnection(upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    reply = Reply(response.status, response.read(), dict(response.getheaders()))
                finally:
                    conn.close()
            self._send(reply)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


@contextmanager
def s3_proxy(upstream: str, rule: Rule) -> Iterator[tuple[str, list[Request]]]:
    """(host:port of a proxy to `upstream` that applies `rule`, the requests it has seen)."""
    seen: list[Request] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, rule, seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
