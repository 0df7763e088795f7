"""The run ledger: one row per embedding run in the `embedding_runs` table.

A run records what a build asked of the embedding provider: calls, texts, tokens, retries and
an estimated cost at the price table's rate (``ragmart.embedding.prices``). The cache model
records the run as it stands with every batch of vectors it commits (error RUN_INTERRUPTED, so
a killed build leaves a row saying so) and records it finished at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb

from ragmart.embedding.prices import (
    DEFAULT_PRICE_TABLE,
    PRICE_TABLE_ENV,
    load_price_table,
    price_per_million,
)
from ragmart.embedding.providers import ProviderStats
from ragmart.lineage import current_invocation_id, utc_now
from ragmart.relations import RUNS_TABLE

RUNS_DDL = """
create table if not exists {table} (
    invocation_id varchar not null,
    provider varchar not null,
    embedding_model varchar not null,
    started_at timestamp not null,
    finished_at timestamp not null,
    chunks_in_serving_set bigint not null,
    chunks_needing_vectors bigint not null,
    provider_calls bigint not null,
    texts_sent bigint not null,
    cache_hits bigint not null,
    approx_tokens bigint not null,
    seconds double not null,
    retries bigint,
    estimated_cost_usd double,
    error varchar
)
"""

# columns added after the first release: `create table if not exists` leaves older tables as
# they are, so each build adds what is missing (null for the runs recorded before)
RUNS_ADDED_COLUMNS = (
    ("retries", "bigint"),
    ("estimated_cost_usd", "double"),
    ("error", "varchar"),
)

RUNS_COLUMNS = (
    "invocation_id", "provider", "embedding_model", "started_at", "finished_at",
    "chunks_in_serving_set", "chunks_needing_vectors", "provider_calls", "texts_sent",
    "cache_hits", "approx_tokens", "seconds", "retries", "estimated_cost_usd", "error",
)



def _dbt_logger():
    try:
        from dbt.adapters.events.logging import AdapterLogger
    except ImportError:  # pragma: no cover - dbt is always installed with ragmart
        return None
    return AdapterLogger("ragmart")


@dataclass
class EmbeddingRun:
    invocation_id: str
    provider: str
    embedding_model: str
    started_at: object
    chunks_in_serving_set: int = 0
    chunks_needing_vectors: int = 0
    provider_calls: int = 0
    texts_sent: int = 0
    cache_hits: int = 0
    approx_tokens: int = 0
    seconds: float = 0.0
    finished_at: object = None
    retries: int = 0
    estimated_cost_usd: float | None = None
    error: str | None = None
    price_per_million: float | None = field(default=None, repr=False)
    _clock: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def start(cls, *, provider: str, embedding_model: str) -> EmbeddingRun:
        """A run starting now; reads the price table first (a bad one fails before any call)."""
        run = cls(
            invocation_id=current_invocation_id(),
            provider=provider,
            embedding_model=embedding_model,
            started_at=utc_now(),
            price_per_million=price_per_million(load_price_table(), provider, embedding_model),
        )
        if run.price_per_million is None:
            run.log(
                f"no price for {provider}/{embedding_model} in the price table "
                f"({PRICE_TABLE_ENV} or {DEFAULT_PRICE_TABLE.name}): estimated_cost_usd is null"
            )
        return run

    def log(self, message: str) -> None:
        logger = _dbt_logger()
        if logger is not None:
            logger.info(f"ragmart: {message}")

    def update(self, stats: ProviderStats, *, error: str | None = None) -> None:
        """Take the provider's counts so far (and ``error``), without logging."""
        self.provider_calls = stats.calls
        self.texts_sent = stats.texts
        self.approx_tokens = stats.approx_tokens
        self.retries = int(getattr(stats, "retries", 0))
        if self.price_per_million is not None:
            self.estimated_cost_usd = round(self.approx_tokens * self.price_per_million / 1e6, 8)
        self.error = error
        self.finished_at = utc_now()
        self.seconds = round(time.monotonic() - self._clock, 3)

    def finish(self, stats: ProviderStats, *, error: str | None = None) -> None:
        """The run is over: take the provider's counts and log what it did."""
        self.update(stats, error=error)
        cost = "unknown" if self.estimated_cost_usd is None else f"${self.estimated_cost_usd:.6f}"
        self.log(
            f"{self.texts_sent} texts sent in {self.provider_calls} calls "
            f"({self.retries} retries), {self.cache_hits} cache hits, ~{self.approx_tokens} "
            f"tokens, estimated cost {cost}, {self.seconds:.1f}s"
            + (" - FAILED" if error else "")
        )


def ensure_runs_table(conn: duckdb.DuckDBPyConnection, table: str = RUNS_TABLE) -> None:
    """Create the runs table, or add the columns an older one lacks."""
    conn.execute(RUNS_DDL.format(table=table))
    for name, kind in RUNS_ADDED_COLUMNS:
        conn.execute(f"alter table {table} add column if not exists {name} {kind}")


# the error of a run recorded while it is still embedding: what a killed build leaves behind
RUN_INTERRUPTED = "interrupted: the build stopped before the run finished (killed?)"


def record_run(
    conn: duckdb.DuckDBPyConnection, run: EmbeddingRun, *, table: str = RUNS_TABLE
) -> None:
    """Write `run` to the runs table (`table` may be qualified: "db"."schema".embedding_runs),
    replacing the row an earlier record of the same run (invocation and start) wrote."""
    ensure_runs_table(conn, table)
    conn.execute(
        f"delete from {table} where invocation_id = $invocation_id and started_at = $started_at",
        {"invocation_id": run.invocation_id, "started_at": run.started_at},
    )
    columns = ", ".join(RUNS_COLUMNS)
    values = ", ".join(f"${name}" for name in RUNS_COLUMNS)
    conn.execute(
        f"insert into {table} ({columns}) values ({values})",
        {name: getattr(run, name) for name in RUNS_COLUMNS},
    )


def recent_runs(conn: duckdb.DuckDBPyConnection, limit: int = 1) -> list[dict]:
    """The newest `limit` rows of the runs table, newest first, as dicts."""
    cur = conn.execute(
        f"select * from {RUNS_TABLE} order by finished_at desc limit {int(limit)}"
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
