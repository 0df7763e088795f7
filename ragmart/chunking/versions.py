"""Document versions to chunk rows: the chunker registry (one entry per chunker_version) and
the rows int_chunks materializes (CHUNK_SCHEMA, one per chunk, with lineage columns)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pyarrow as pa

from ragmart.chunking import chunkers as chunking
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
