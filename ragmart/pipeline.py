"""What the dbt Python models do, as plain functions over Arrow tables (tested without dbt)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from ragmart import chunking
from ragmart.lineage import current_invocation_id, utc_now
from ragmart.providers import EmbeddingProvider

# chunker_version -> chunker. A new chunker is a new entry, built beside the old one.
CHUNKERS: dict[str, Callable[[str, str], list[chunking.Chunk]]] = {
    chunking.CHUNKER_VERSION: chunking.chunk_document,
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
    ]
)


def embed_texts(
    items: Sequence[tuple[str, str]],
    provider: EmbeddingProvider,
    *,
    batch_size: int = 256,
    log: Callable[[str], None] = lambda message: None,
) -> pa.Table:
    """Embed (chunk_hash, text) pairs, one provider call per batch, into EMBEDDING_SCHEMA rows.

    Items are embedded in chunk_hash order so a rerun makes the same calls."""
    items = sorted(dict(items).items())
    total = len(items)
    vectors: list[np.ndarray] = []
    started = time.monotonic()
    for start in range(0, total, batch_size):
        batch = items[start : start + batch_size]
        matrix = provider.embed([text for _, text in batch])
        if matrix.shape != (len(batch), provider.dimensions):
            raise RuntimeError(
                f"provider {provider.name} returned shape {matrix.shape} for {len(batch)} texts, "
                f"expected ({len(batch)}, {provider.dimensions})"
            )
        vectors.append(np.asarray(matrix, dtype=np.float32))
        done = start + len(batch)
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (total - done) / rate if rate > 0 else 0.0
        log(f"embedded {done}/{total} chunks ({rate:.1f}/s, eta {eta:.0f}s) with {provider.model}")
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, provider.dimensions), np.float32)
    created_at = utc_now()
    invocation_id = current_invocation_id()
    flat = pa.array(matrix.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, (total + 1) * provider.dimensions, provider.dimensions,
                                 dtype=np.int32))
    return pa.table(
        {
            "chunk_hash": [h for h, _ in items],
            "embedding_model": [provider.model] * total,
            "embedding_dimensions": [provider.dimensions] * total,
            "embedding": pa.ListArray.from_arrays(offsets, flat),
            "provider": [provider.name] * total,
            "created_at": [created_at] * total,
            "dbt_invocation_id": [invocation_id] * total,
        },
        schema=EMBEDDING_SCHEMA,
    )
