"""What the dbt Python models do, as plain functions over Arrow tables (tested without dbt)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from ragmart.build.faults import fault_point
from ragmart.chunking import chunkers as chunking
from ragmart.embedding.providers import EmbeddingError, EmbeddingProvider, PartialEmbeddingError
from ragmart.lineage import current_invocation_id, utc_now

# chunker_version -> chunker. A new chunker is a new entry, built beside the old one.
CHUNKERS: dict[str, Callable[[str, str], list[chunking.Chunk]]] = {
    chunking.CHUNKER_VERSION: chunking.chunk_document,
    # smaller chunks: paragraphs over 100 words are cut on sentences (~14% of the sample's
    # chunk texts change; the rest reuse their cached vectors in a backfill)
    "md-sections-v2": functools.partial(chunking.chunk_document, max_words=100),
}

CHUNK_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("document_id", pa.string()),
        ("document_version", pa.int64()),
        ("document_checksum", pa.string()),
        ("chunk_index", pa.int32()),
        ("chunker_version", pa.string()),
        ("section", pa.string()),
        ("section_type", pa.string()),
        ("chunk_text", pa.string()),
        ("chunk_hash", pa.string()),
        ("word_count", pa.int32()),
        ("section_chunk_index", pa.int32()),
        ("section_chunk_count", pa.int32()),
        ("is_split_paragraph", pa.bool_()),
        ("created_at", pa.timestamp("us")),
        ("dbt_invocation_id", pa.string()),
    ]
)


class UnknownChunkerError(ValueError):
    pass


def get_chunker(chunker_version: str) -> Callable[[str, str], list[chunking.Chunk]]:
    try:
        return CHUNKERS[chunker_version]
    except KeyError:
        raise UnknownChunkerError(
            f"unknown chunker_version {chunker_version!r}; set the dbt var chunker_version "
            f"to one of {sorted(CHUNKERS)}"
        ) from None


def make_chunk_id(document_id: str, document_version: int, chunk_index: int) -> str:
    return f"{document_id}@{document_version}#{chunk_index:04d}"


def chunk_versions(versions: pa.Table, chunker_version: str) -> pa.Table:
    """Chunk document versions (columns document_id, document_version, document_checksum,
    title, content) into CHUNK_SCHEMA rows."""
    chunker = get_chunker(chunker_version)
    created_at = utc_now()
    invocation_id = current_invocation_id()
    columns: dict[str, list] = {name: [] for name in CHUNK_SCHEMA.names}
    for row in versions.to_pylist():
        title = row["title"] or row["document_id"]
        for chunk in chunker(title, row["content"] or ""):
            values = {
                "chunk_id": make_chunk_id(
                    row["document_id"], row["document_version"], chunk.chunk_index
                ),
                "document_id": row["document_id"],
                "document_version": row["document_version"],
                "document_checksum": row["document_checksum"],
                "chunk_index": chunk.chunk_index,
                "chunker_version": chunker_version,
                "section": chunk.section,
                "section_type": chunk.section_type,
                "chunk_text": chunk.text,
                "chunk_hash": chunk.chunk_hash,
                "word_count": chunk.word_count,
                "section_chunk_index": chunk.section_chunk_index,
                "section_chunk_count": chunk.section_chunk_count,
                "is_split_paragraph": chunk.is_split_paragraph,
                "created_at": created_at,
                "dbt_invocation_id": invocation_id,
            }
            for name, value in values.items():
                columns[name].append(value)
    return pa.table(columns, schema=CHUNK_SCHEMA)


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
