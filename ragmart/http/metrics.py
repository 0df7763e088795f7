"""The Prometheus metrics of `ragmart serve` (GET /metrics), in a registry of the app's own.

* `ragmart_http_requests_total{endpoint, status}`: every request, by route and HTTP status;
* `ragmart_http_request_seconds{endpoint}`: latency histogram, from the first byte received to
  the response sent;
* `ragmart_retrieve_abstentions_total{clause}`: abstentions, by the first clause of the funnel
  that left nothing (`serving_set` when the caller's groups see nothing at all,
  `doc_type_filter`, `min_similarity`, ...: the names of `ragmart retrieve --json`'s clauses);
* `ragmart_http_in_flight`: searches admitted and not answered yet;
* `ragmart_serving_info{version, snapshot}` = 1: what serves; `ragmart_serving_chunks`: its
  chunks; `ragmart_serving_switches_total`: snapshots swapped in since start;
* `ragmart_search_products{queries}`: matrix products of the serving snapshot's vectors in
  memory by how many concurrent searches each served (ragmart.retrieval.products.SharedProducts;
  a mean near 1 under load means the searches did not share the read).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from ragmart.retrieval.results import RetrievalResult

BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragmart_http_requests", "HTTP requests by route and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("ragmart_http_request_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=BUCKETS, registry=r)
        self.abstentions = Counter("ragmart_retrieve_abstentions",
                                   "abstentions by the clause that left nothing", ["clause"],
                                   registry=r)
        self.in_flight = Gauge("ragmart_http_in_flight", "searches admitted, not answered",
                               registry=r)
        self.serving = Info("ragmart_serving", "the snapshot that serves", registry=r)
        self.chunks = Gauge("ragmart_serving_chunks", "chunks of the serving set", registry=r)
        self.switches = Counter("ragmart_serving_switches", "snapshots swapped in", registry=r)
        self.products = Gauge("ragmart_search_products", "matrix products of the snapshot "
                              "serving, by the searches each served", ["queries"], registry=r)

    def serving_changed(self, version: str, snapshot: str, chunks: int | None) -> None:
        self.serving.info({"version": version, "snapshot": snapshot})
        if chunks is not None:
            self.chunks.set(chunks)
        self.switches.inc()

    def abstained(self, result: RetrievalResult) -> None:
        emptied = next((c.clause for c in result.clauses if c.remaining == 0), None)
        self.abstentions.labels(clause=emptied or "unknown").inc()

    def render(self, batches: dict[int, int] | None = None) -> bytes:
        """The metrics, with `batches` (searches per product: products) of what serves."""
        self.products.clear()
        for queries, products in sorted((batches or {}).items()):
            self.products.labels(queries=str(queries)).set(products)
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting every request by route template and status, and timing it."""

    def __init__(self, app: Any, metrics: Metrics, endpoints: set[str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in self.endpoints else "other"  # bounded label values
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
