"""The request and response bodies of `ragmart serve` (POST /v1/retrieve), as pydantic models.

Clients (ragmart.integrations, curl, any OpenAPI generator) read them from /openapi.json. The
request model refuses unknown fields: there is no field through which a caller could name its
groups or the operator switch, which come from its API key only (ragmart.http.keys). The
response is the document of ragmart.retrieval.document, the JSON `ragmart retrieve --json`
prints; `RetrieveResponse` describes it for the OpenAPI description (fields a newer ragmart
adds pass through).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Mode = Literal["vector", "lexical", "hybrid"]


class RetrieveRequest(BaseModel):
    """One question. The caller's groups are its key's: no field here names them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: StrictStr = Field(description="the text to search for")
    k: StrictInt = Field(5, description="number of chunks (1 to the service's max k)")
    contract: StrictStr | None = Field(None, description="a retrieval contract's name")
    as_of: StrictStr | None = Field(
        None, description="answer from the versions live at this ISO date or time (UTC unless "
                          "it has an offset)")
    doc_types: list[StrictStr] | None = Field(None, description="only these document types")
    mode: Mode | None = Field(None, description="vector, lexical or hybrid search (default: "
                                                "ragmart's)")


class RetrievedChunkModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    rank: int
    distance: float
    lexical_score: float | None = Field(None, description="BM25 score (lexical, hybrid)")
    fused_score: float | None = Field(None, description="reciprocal rank fusion (hybrid)")
    chunk_id: str
    document_id: str
    document_version: int
    index_version: str | None = None
    title: str | None = None
    section: str
    chunk_text: str


class ClauseCountModel(BaseModel):
    clause: str
    excluded: int
    remaining: int


class RetrieveResponse(BaseModel):
    """The document `ragmart retrieve --json` prints."""

    model_config = ConfigDict(extra="allow")

    question: str
    k: int
    contract: str | None
    as_of: str | None
    abstained: bool
    strategy: str
    eligible_chunks: int | None
    results: list[RetrievedChunkModel]
    reason: str | None = None
    clauses: list[ClauseCountModel] | None = None
    serving_behind_build: bool | None
    serving: dict | None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every status but 200: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorDetail
