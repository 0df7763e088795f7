"""What each build did: the `embedding_runs` table, its price table, and the vectors a failed
build keeps.

A run records what the build asked of the embedding provider: calls, texts, tokens, retries
and an estimated cost from a price table (``ragmart/embedding/providers/prices.json``, USD per
million
input tokens by provider and API model; ``RAGMART_PRICE_TABLE`` points to another file).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ragmart.embedding.providers import ProviderStats
from ragmart.lineage import current_invocation_id, utc_now

RUNS_TABLE = "embedding_runs"
PRICE_TABLE_ENV = "RAGMART_PRICE_TABLE"
DEFAULT_PRICE_TABLE = Path(__file__).resolve().parent / "providers" / "prices.json"

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


# --------------------------------------------------------------------------- prices


def load_price_table(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """{provider: {api model or "*": USD per 1M input tokens}} from ``path``, else
    $RAGMART_PRICE_TABLE, else the bundled ``prices.json``."""
    source = Path(path or os.environ.get(PRICE_TABLE_ENV, "").strip() or DEFAULT_PRICE_TABLE)
    fix = f"fix the file or point {PRICE_TABLE_ENV} to a valid one (default {DEFAULT_PRICE_TABLE})"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"price table {source} not found; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"price table {source} is not readable JSON ({exc}); {fix}") from None
    prices = data.get("prices") if isinstance(data, dict) else None
    if not isinstance(prices, dict):
        raise ValueError(
            f'price table {source} needs a top-level "prices" object '
            f'({{"prices": {{"openai": {{"text-embedding-3-small": 0.02}}}}}}); {fix}'
        )
    table: dict[str, dict[str, float]] = {}
    for provider, models in prices.items():
        if not isinstance(models, dict):
            raise ValueError(f"price table {source}: prices.{provider} must be an object; {fix}")
        for model, price in models.items():
            ok = isinstance(price, int | float) and not isinstance(price, bool)
            if not ok or not math.isfinite(price) or price < 0:
                raise ValueError(
                    f"price table {source}: prices.{provider}.{model} must be a non-negative "
                    f"number of USD per 1M tokens, got {price!r}; {fix}"
                )
            table.setdefault(provider, {})[model] = float(price)
    return table


def price_per_million(
    table: dict[str, dict[str, float]], provider: str, embedding_model: str
) -> float | None:
    """The price of ``embedding_model`` (its API model: the part before '@'), or None."""
    models = table.get(provider, {})
    return models.get(embedding_model.split("@", 1)[0], models.get("*"))


# --------------------------------------------------------------------------- runs


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


# ------------------------------------------------------- vectors that outlive a failed build

# Every batch of vectors a build obtains is committed at once to this table (in the database
# and schema of the cache), so that a build killed or failing mid-way has paid for them once:
# the next build takes them from here instead of calling the provider again. The cache model
# inserts them with its own rows; its post-hook (macro clear_pending_vectors) then deletes the
# ones the cache holds, in the same transaction.
PENDING_TABLE = "embedding_cache_pending"


def _columns(conn: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"describe {relation}").fetchall()}


def _insert_new_vectors(cursor: Any, relation: str, vectors: pa.Table) -> int:
    """Insert the rows of ``vectors`` whose (chunk_hash, embedding_model) ``relation`` lacks;
    create ``relation`` with their schema, or add the columns it lacks, first."""
    cursor.register("ragmart_obtained_vectors", vectors)
    try:
        cursor.execute(
            f"create table if not exists {relation} as "
            "select * from ragmart_obtained_vectors limit 0"
        )
        existing = _columns(cursor, relation)
        for name, kind in _columns(cursor, "ragmart_obtained_vectors").items():
            if name not in existing:
                cursor.execute(f'alter table {relation} add column "{name}" {kind}')
        if not vectors.num_rows:
            return 0
        return cursor.execute(
            f"""
            insert into {relation} by name
            select * from ragmart_obtained_vectors as obtained
            where not exists (
                select 1 from {relation} as cached
                where cached.chunk_hash = obtained.chunk_hash
                    and cached.embedding_model = obtained.embedding_model
            )
            """
        ).fetchone()[0]
    finally:
        cursor.unregister("ragmart_obtained_vectors")


def _in_transaction(session: Any, work: Any) -> Any:
    """Run ``work(cursor)`` in a transaction of a cursor of its own: committed whatever happens
    to the transaction of the dbt model that called it."""
    cursor = session.cursor()
    try:
        cursor.execute("begin transaction")
        result = work(cursor)
        cursor.execute("commit")
        return result
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # the transaction may not have started
            cursor.execute("rollback")
        raise
    finally:
        cursor.close()


def commit_pending_vectors(
    session: Any,
    pending_table: str,
    vectors: pa.Table,
    run: EmbeddingRun,
    stats: ProviderStats,
    *,
    runs_table: str,
) -> int:
    """Commit one batch of freshly obtained vectors to ``pending_table`` (created with their
    schema if absent) and, in the same transaction, ``run`` as it stands (provider ``stats``,
    error RUN_INTERRUPTED until the build records the finished run): if the build is killed,
    both what it paid for and the vectors survive. Returns the number of rows added."""

    def work(cursor: Any) -> int:
        added = _insert_new_vectors(cursor, pending_table, vectors)
        run.update(stats, error=RUN_INTERRUPTED)
        record_run(cursor, run, table=runs_table)
        return added

    return _in_transaction(session, work)


def _delete_cached_pending(cursor: Any, pending_table: str, cache: str) -> None:
    """Delete the pending vectors `cache` already holds (by chunk_hash and model)."""
    cursor.execute(
        f"""
        delete from {pending_table} as pending
        where exists (
            select 1 from {cache} as cached
            where cached.chunk_hash = pending.chunk_hash
                and cached.embedding_model = pending.embedding_model
        )
        """
    )


def take_pending_vectors(
    session: Any, pending_table: str, cache: str | None, schema: pa.Schema
) -> pa.Table:
    """The vectors earlier builds obtained but did not get into ``cache`` (killed, or failed
    before ``keep_obtained_vectors``), as ``schema`` rows. Rows the cache already holds are
    deleted (committed): they are left over from a build killed after its cache commit."""

    def work(cursor: Any) -> pa.Table:
        _insert_new_vectors(cursor, pending_table, schema.empty_table())
        if cache is not None:
            _delete_cached_pending(cursor, pending_table, cache)
        names = ", ".join(f'"{name}"' for name in schema.names)
        rows = cursor.execute(
            f"select {names} from {pending_table} order by chunk_hash, embedding_model"
        ).to_arrow_table()
        return rows.cast(schema)

    return _in_transaction(session, work)


def keep_obtained_vectors(
    session: Any,
    relation: str,
    vectors: pa.Table,
    run: EmbeddingRun,
    *,
    runs_table: str,
    pending_table: str | None = None,
) -> int:
    """After a failed embedding: commit ``vectors`` into the cache ``relation`` (created with
    their schema if the first build failed), ``run`` into ``runs_table``, and delete from
    ``pending_table`` what the cache now holds, in a transaction of a cursor of its own, so
    that they outlive the rollback of the failing dbt model and the next build does not pay
    for them again. Returns the number of vectors added."""

    def work(cursor: Any) -> int:
        if not vectors.num_rows:  # nothing to keep: a first build creates no cache table
            record_run(cursor, run, table=runs_table)
            return 0
        added = _insert_new_vectors(cursor, relation, vectors)
        if pending_table is not None:
            _delete_cached_pending(cursor, pending_table, relation)
        record_run(cursor, run, table=runs_table)
        return added

    return _in_transaction(session, work)


def recent_runs(conn: duckdb.DuckDBPyConnection, limit: int = 1) -> list[dict]:
    """The newest `limit` rows of the runs table, newest first, as dicts."""
    cur = conn.execute(
        f"select * from {RUNS_TABLE} order by finished_at desc limit {int(limit)}"
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
