"""What a retrieval returns (ranked chunks, or an abstention with its counts) or raises."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, overload


class RetrievalError(RuntimeError):
    """A retrieval the caller must change: a bad argument, a database that is not built."""


@dataclass(frozen=True)
class RetrievedChunk:
    rank: int
    distance: float
    chunk_id: str
    document_id: str
    document_version: int
    document_checksum: str
    document_type: str | None
    title: str | None
    section: str
    section_type: str
    chunk_index: int
    chunk_text: str
    chunker_version: str
    embedding_model: str
    created_at: dt.datetime
    dbt_invocation_id: str
    embedding_invocation_id: str
    allowed_groups: list[str] | None = None
    document_valid_from: dt.datetime | None = None
    document_valid_to: dt.datetime | None = None
    completeness: str | None = None
    # the index version the chunk was served from: a chunk_id names a document version and a
    # position, so (index_version, chunk_id) is the citation (each version has one chunker)
    index_version: str | None = None
    # where the document came from (its metadata's source_path or URL: ragmart.retrieval.
    # citations), read after the search like index_version
    source: str | None = None
    # the scores that ranked it besides `distance` (cosine, every mode): its BM25 score when the
    # lexical list holds it (modes lexical and hybrid), its reciprocal rank fusion score (mode
    # hybrid); None otherwise (ragmart.retrieval.fusion.run_mode)
    lexical_score: float | None = None
    fused_score: float | None = None

    def replaced(self, **changes: Any) -> RetrievedChunk:
        """dataclasses.replace(self, **changes) without running __init__ again (it checks
        nothing; ~10x faster): a search sets a few fields of each result it prints."""
        unknown = changes.keys() - self.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"RetrievedChunk has no field {', '.join(sorted(unknown))}")
        chunk = object.__new__(RetrievedChunk)
        chunk.__dict__.update(self.__dict__, **changes)
        return chunk

    def to_dict(self) -> dict:
        # what dataclasses.asdict gives, without its deep copy of every value (a service
        # answers this per result)
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if data["allowed_groups"] is not None:
            data["allowed_groups"] = list(data["allowed_groups"])
        for name in ("created_at", "document_valid_from", "document_valid_to"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data


# the columns a search reads from the serving set or the history (the SQL macro's columns
# after rank and distance)
COLUMNS = [
    name for name in RetrievedChunk.__dataclass_fields__
    if name not in ("rank", "distance", "index_version", "source", "lexical_score",
                    "fused_score")
]


def rows_to_chunks(rows: list[tuple]) -> tuple[RetrievedChunk, ...]:
    """Rows of (rank, distance, *COLUMNS) as chunks."""
    names = ["rank", "distance", *COLUMNS]
    out = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        values["distance"] = float(values["distance"])
        values["rank"] = int(values["rank"])
        out.append(RetrievedChunk(**values))
    return tuple(out)


@dataclass(frozen=True)
class ClauseCount:
    """How a clause narrowed the source: chunks it excludes on its own, and the chunks left
    after it and every clause listed before it."""

    clause: str
    excluded: int
    remaining: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RetrievalResult(Sequence[RetrievedChunk]):
    """The ranked chunks (a sequence), or an abstention with the reason and clause counts."""

    chunks: tuple[RetrievedChunk, ...]
    k: int
    strategy: str
    contract: str | None = None
    as_of: dt.datetime | None = None
    eligible_chunks: int | None = None
    abstained: bool = False
    reason: str | None = None
    clauses: tuple[ClauseCount, ...] = field(default=())

    @overload
    def __getitem__(self, index: int) -> RetrievedChunk: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RetrievedChunk]: ...
    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self.chunks[index]

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[RetrievedChunk]:
        return iter(self.chunks)

    def to_dict(self) -> dict:
        data: dict[str, Any] = {
            "k": self.k,
            "contract": self.contract,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "abstained": self.abstained,
            "strategy": self.strategy,
            "eligible_chunks": self.eligible_chunks,
            "results": [c.to_dict() for c in self.chunks],
        }
        if self.abstained:
            data["reason"] = self.reason
            data["clauses"] = [c.to_dict() for c in self.clauses]
        return data
