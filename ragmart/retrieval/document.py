"""The JSON document of one retrieval: what `ragmart retrieve --json` prints and what
`ragmart serve` answers to `POST /v1/retrieve`, built here once for both.

It is the result's own dictionary (k, contract, as_of, abstained, strategy, eligible_chunks,
results, and reason + clauses when abstained) after the question, with what serves: the serving
publication against the newest build (`serving`, `serving_behind_build`; None and false for a
file read as it is). The as-of moment both accept is parsed here too, so an `--as-of` and an
`"as_of"` mean the same instant and are refused with the same message. `document_json` is that
document as the compact JSON bytes `ragmart serve` answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

try:  # 5-10x faster than json.dumps on an answer; the same JSON (installed with langchain-core)
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - the standard library's, as JSONResponse renders
    _orjson_dumps = None

if TYPE_CHECKING:
    from ragmart.retrieval.results import RetrievalResult
    from ragmart.serving.lag import ServingState


def retrieval_document(question: str, result: RetrievalResult,
                       state: ServingState | None) -> dict[str, Any]:
    """The document of `result` for `question`, with the serving `state` (None: nothing
    published, or a file read as it is)."""
    return {"question": question, **result.to_dict(),
            "serving_behind_build": state.serving_behind_build if state else False,
            "serving": state.to_dict() if state else None}


def document_json(question: str, result: RetrievalResult, state: ServingState | None) -> bytes:
    """`retrieval_document(question, result, state)` as compact JSON bytes. With orjson the
    results are written from the chunks themselves: orjson writes a dataclass as its fields in
    their order and a datetime as `isoformat()` does, which is what RetrievedChunk.to_dict
    gives, without a dictionary per result (tests/python/test_http_lean.py compares the bytes)."""
    if _orjson_dumps is None:
        return json.dumps(retrieval_document(question, result, state), ensure_ascii=False,
                          allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")
    document = retrieval_document(question, dataclasses.replace(result, chunks=()), state)
    document["results"] = result.chunks  # in its place: the key's order stays
    return _orjson_dumps(document)


def parse_as_of(value: str | None, *, name: str = "--as-of") -> dt.datetime | None:
    """An ISO date or timestamp; with a zone it is converted to UTC (naive UTC, the project's
    timestamp convention), without one it is read as UTC. ValueError naming `name` (the option
    or field the value came in) and the forms to write."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        shown = value if len(value) <= 60 else value[:59] + "…"
        raise ValueError(
            f"{name} {shown!r} is not an ISO date or timestamp; write e.g. 2026-11-02 or "
            "2026-11-02T09:30:00 (UTC) or 2026-11-02T10:30:00+01:00"
        ) from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last instant in UTC
            raise ValueError(
                f"{name} {value!r} is out of range once converted to UTC; write a time from "
                "0001-01-01 to 9999-12-31 UTC") from None
    return parsed
