"""Embedding chunk texts in batches (what int_chunk_embeddings does), as plain functions over Arrow
tables, tested without dbt."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from ragmart.build.faults import fault_point
from ragmart.embedding.providers import EmbeddingError, EmbeddingProvider, PartialEmbeddingError
from ragmart.lineage import current_invocation_id, utc_now

EMBEDDING_SCHEMA = pa.schema(
    [
        ("chunk_hash", pa.string()),
        ("embedding_model", pa.string()),
        ("embedding_dimensions", pa.int32()),
        ("embedding", pa.list_(pa.float32())),
        ("provider", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("dbt_invocation_id", pa.string()),
        # null when the text fitted the model; else the long-text policy its vector needed
        # ("truncate" or "split"; providers with a policy declare it, see providers.openai)
        ("long_text_policy_applied", pa.string()),
    ]
)

DEFAULT_EMBED_BATCH = 256


class EmbeddingIncompleteError(EmbeddingError):
    """``embed_texts`` stopped on a provider error. ``table`` holds the EMBEDDING_SCHEMA rows
    of the vectors obtained before it (keep them: a rerun must not pay for them again)."""

    def __init__(self, message: str, *, table: pa.Table, total: int) -> None:
        super().__init__(message)
        self.table = table
        self.total = total


def _embedding_table(
    hashes: list[str], matrix: np.ndarray, policies: list[str | None],
    provider: EmbeddingProvider,
) -> pa.Table:
    total = len(hashes)
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, (total + 1) * provider.dimensions, provider.dimensions,
                                 dtype=np.int32))
    return pa.table(
        {
            "chunk_hash": hashes,
            "embedding_model": [provider.model] * total,
            "embedding_dimensions": [provider.dimensions] * total,
            "embedding": pa.ListArray.from_arrays(offsets, flat),
            "provider": [provider.name] * total,
            "created_at": [utc_now()] * total,
            "dbt_invocation_id": [current_invocation_id()] * total,
            "long_text_policy_applied": policies,
        },
        schema=EMBEDDING_SCHEMA,
    )


def embed_texts(
    items: Sequence[tuple[str, str]],
    provider: EmbeddingProvider,
    *,
    batch_size: int | None = None,
    log: Callable[[str], None] = lambda message: None,
    on_batch: Callable[[pa.Table], None] | None = None,
) -> pa.Table:
    """Embed (chunk_hash, text) pairs, one provider call per batch, into EMBEDDING_SCHEMA rows.

    Items are embedded in chunk_hash order so a rerun makes the same calls. ``batch_size``
    defaults to the provider's ``preferred_batch_size`` if it has one, else 256. If a call
    fails, :class:`EmbeddingIncompleteError` carries the vectors obtained until then (those
    of earlier calls, and those a :class:`PartialEmbeddingError` reports for the failed one).
    ``on_batch`` receives each call's vectors as EMBEDDING_SCHEMA rows as soon as they arrive
    (the cache model commits them there, so a killed build does not lose them).
    """
    items = sorted(dict(items).items())
    total = len(items)
    size = batch_size or getattr(provider, "preferred_batch_size", None) or DEFAULT_EMBED_BATCH
    policy_of = getattr(provider, "long_text_policy_applied", None)
    hashes: list[str] = []
    vectors: list[np.ndarray] = []
    policies: list[str | None] = []
    started = time.monotonic()
    for start in range(0, total, size):
        batch = items[start : start + size]
        texts = [text for _, text in batch]
        batch_policies = policy_of(texts) if callable(policy_of) else [None] * len(batch)
        try:
            matrix = provider.embed(texts)
            if matrix.shape != (len(batch), provider.dimensions):
                raise EmbeddingError(
                    f"provider {provider.name} returned shape {matrix.shape} for {len(batch)} "
                    f"texts, expected ({len(batch)}, {provider.dimensions})"
                )
        except Exception as exc:
            partial = exc.vectors if isinstance(exc, PartialEmbeddingError) else {}
            for row in sorted(partial):
                hashes.append(batch[row][0])
                vectors.append(np.asarray(partial[row], dtype=np.float32)[np.newaxis, :])
                policies.append(batch_policies[row])
            matrix = np.concatenate(vectors) if vectors else np.zeros(
                (0, provider.dimensions), np.float32)
            table = _embedding_table(hashes, matrix, policies, provider)
            raise EmbeddingIncompleteError(
                f"embedding stopped after {len(hashes)} of {total} texts "
                f"({provider.name}, {provider.model}): {exc}",
                table=table,
                total=total,
            ) from exc
        hashes.extend(h for h, _ in batch)
        vectors.append(np.asarray(matrix, dtype=np.float32))
        policies.extend(batch_policies)
        if on_batch is not None:
            on_batch(_embedding_table([h for h, _ in batch], vectors[-1], batch_policies,
                                      provider))
        done = start + len(batch)
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (total - done) / rate if rate > 0 else 0.0
        log(f"embedded {done}/{total} chunks ({rate:.1f}/s, eta {eta:.0f}s) with {provider.model}")
        fault_point("embedding_batch")
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, provider.dimensions), np.float32)
    return _embedding_table(hashes, matrix, policies, provider)
