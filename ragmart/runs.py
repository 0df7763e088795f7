"""The `embedding_runs` table: what each build asked of the embedding provider."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb

from ragmart.lineage import current_invocation_id, utc_now
from ragmart.providers import ProviderStats

RUNS_TABLE = "embedding_runs"

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
    seconds double not null
)
"""


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
    _clock: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def start(cls, *, provider: str, embedding_model: str) -> EmbeddingRun:
        return cls(
            invocation_id=current_invocation_id(),
            provider=provider,
            embedding_model=embedding_model,
            started_at=utc_now(),
        )

    def log(self, message: str) -> None:
        logger = _dbt_logger()
        if logger is not None:
            logger.info(f"ragmart: {message}")

    def finish(self, stats: ProviderStats) -> None:
        self.provider_calls = stats.calls
        self.texts_sent = stats.texts
        self.approx_tokens = stats.approx_tokens
        self.finished_at = utc_now()
        self.seconds = round(time.monotonic() - self._clock, 3)
        self.log(
            f"{self.texts_sent} texts sent in {self.provider_calls} calls, "
            f"{self.cache_hits} cache hits, {self.seconds:.1f}s"
        )


def record_run(
    conn: duckdb.DuckDBPyConnection, run: EmbeddingRun, *, table: str = RUNS_TABLE
) -> None:
    """Append `run` to the runs table (`table` may be qualified: "db"."schema".embedding_runs)."""
    conn.execute(RUNS_DDL.format(table=table))
    conn.execute(
        f"""
        insert into {table} values (
            $invocation_id, $provider, $embedding_model, $started_at, $finished_at,
            $chunks_in_serving_set, $chunks_needing_vectors, $provider_calls, $texts_sent,
            $cache_hits, $approx_tokens, $seconds
        )
        """,
        {
            "invocation_id": run.invocation_id,
            "provider": run.provider,
            "embedding_model": run.embedding_model,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "chunks_in_serving_set": run.chunks_in_serving_set,
            "chunks_needing_vectors": run.chunks_needing_vectors,
            "provider_calls": run.provider_calls,
            "texts_sent": run.texts_sent,
            "cache_hits": run.cache_hits,
            "approx_tokens": run.approx_tokens,
            "seconds": run.seconds,
        },
    )
