"""What the framework retrievers share: one search, in-process or over HTTP, as citation hits.

Both ways answer with the JSON document of ``ragmart retrieve --json`` (``RetrievalResult.
to_dict()`` in-process, the body of ``POST /v1/retrieve`` over HTTP), so a framework retriever
builds the same documents from either, and one in-process and one HTTP retriever on the same
snapshot and groups give the same chunks in the same order.

Who the caller is decides what it sees, never what it asks for:

- in-process (``InProcess``), the application holds the ``ragmart.Retriever`` and states its
  caller's groups when it constructs the framework retriever (None: no group, as everywhere in
  ragmart; ``ragmart.ALL_GROUPS``: the operator switch);
- over HTTP (``OverHttp``), the groups are the API key's (the service decides them); the
  request carries no groups field, and the HTTP retrievers refuse a ``groups`` argument.

An abstention is an answer, not an empty list: ``search`` raises ``RagmartAbstained`` (with the
reason and the clause counts) unless the caller asked for ``on_abstain="empty"``, which returns
no hits and logs the reason at WARNING on the ``ragmart.integrations`` logger.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("ragmart.integrations")

ON_ABSTAIN = ("raise", "empty")
# what a citation needs: the document, its version, the index version it was served from, the
# place in it, and where it came from
CITATION_FIELDS = ("document_id", "document_version", "index_version", "title", "section",
                   "chunk_id", "source")
# further result fields every hit carries (rank, distance and the lexical and fused scores:
# where and how it ranked)
HIT_FIELDS = (*CITATION_FIELDS, "rank", "distance", "lexical_score", "fused_score",
              "document_type", "section_type", "completeness", "embedding_model")
RETRIEVE_PATH = "/v1/retrieve"


@contextmanager
def framework(module: str, package: str, extra: str) -> Iterator[None]:
    """Imports of an optional framework: a missing one is an ImportError naming the extra."""
    try:
        yield
    except ImportError as exc:
        raise ImportError(f"ragmart.integrations.{module} needs {package}; install it with "
                          f"pip install 'ragmart[{extra}]'") from exc


class RagmartAbstained(LookupError):
    """ragmart abstained: nothing the caller may see is eligible. `reason` says why, `clauses`
    how each contract clause narrowed the source, `answer` is the whole JSON answer."""

    def __init__(self, question: str, answer: dict[str, Any]) -> None:
        self.question = question
        self.answer = answer
        self.reason: str = answer.get("reason") or "ragmart abstained"
        self.clauses: list[dict[str, Any]] = list(answer.get("clauses") or [])
        super().__init__(f"ragmart abstained on {question!r}: {self.reason}")


class RagmartServiceError(RuntimeError):
    """The HTTP service refused the request: `status` (400, 401, 413, 422, 429, 503...), and
    the `code` and `message` of its error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"ragmart service answered {status} {code}: {message}")


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its text and the metadata a framework document carries."""

    text: str
    metadata: dict[str, Any]

    @property
    def distance(self) -> float:
        return float(self.metadata["distance"])


@dataclass(frozen=True)
class Query:
    """What the application asks besides the question (never who it is)."""

    k: int = 5
    contract: str | None = None
    doc_types: Sequence[str] | None = None
    as_of: dt.datetime | str | None = None
    mode: str | None = None
    on_abstain: str = "raise"

    def __post_init__(self) -> None:
        if self.on_abstain not in ON_ABSTAIN:
            raise ValueError(f"on_abstain must be one of {', '.join(ON_ABSTAIN)}, got "
                             f"{self.on_abstain!r}")

    def body(self, question: str) -> dict[str, Any]:
        """The JSON request body of POST /v1/retrieve (fields left unset are not sent)."""
        as_of = self.as_of.isoformat() if isinstance(self.as_of, dt.datetime) else self.as_of
        body = {"question": question, "k": self.k, "contract": self.contract,
                "as_of": as_of, "doc_types": list(self.doc_types) if self.doc_types else None,
                "mode": self.mode}
        return {name: value for name, value in body.items() if value is not None}


def hits(question: str, answer: dict[str, Any], on_abstain: str) -> list[Hit]:
    """The hits of a ``retrieve --json`` answer, or its abstention (see the module doc)."""
    if answer.get("abstained"):
        abstention = RagmartAbstained(question, answer)
        if on_abstain == "raise":
            raise abstention
        LOG.warning("%s", abstention)
        return []
    return [Hit(text=row["chunk_text"], metadata={name: row.get(name) for name in HIT_FIELDS})
            for row in answer["results"]]


@dataclass
class InProcess:
    """Searches a ``ragmart.Retriever`` held by the application, for a caller in `groups`.

    A Retriever serves one thread at a time; frameworks call retrievers from worker threads
    (LangChain's batch), so searches through one InProcess take turns."""

    retriever: Any
    groups: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, question: str, query: Query) -> dict[str, Any]:
        from ragmart.retrieval.document import parse_as_of, retrieval_document

        options: dict[str, Any] = {"k": query.k, "contract": query.contract,
                                   "doc_types": query.doc_types, "groups": self.groups}
        if query.as_of is not None:  # a string is read as the service reads "as_of"
            options["as_of"] = parse_as_of(query.as_of, name="as_of") \
                if isinstance(query.as_of, str) else query.as_of
        if query.mode is not None:
            options["mode"] = query.mode
        with self._lock:
            result = self.retriever.retrieve(question, **options)
        return retrieval_document(question, result, None)


@dataclass
class OverHttp:
    """Calls ``ragmart serve`` at `url` with `api_key`; the groups are the key's. `client`: an
    httpx.Client to send with (e.g. a test client); by default one is opened on first use."""

    url: str
    api_key: str = field(repr=False)
    timeout: float = 30.0
    client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.url or not isinstance(self.url, str):
            raise ValueError("url must be the ragmart service's base URL, e.g. "
                             "http://localhost:8000")
        if not self.api_key:
            raise ValueError("api_key is missing: the service decides the caller's groups "
                             "from its key (Authorization: Bearer <key>)")

    def _client(self) -> Any:
        if self.client is None:
            try:
                import httpx
            except ImportError as exc:
                raise ImportError("calling the ragmart service needs httpx: "
                                  "pip install httpx") from exc
            self.client = httpx.Client(timeout=self.timeout)
        return self.client

    def answer(self, question: str, query: Query) -> dict[str, Any]:
        response = self._client().post(
            self.url.rstrip("/") + RETRIEVE_PATH, json=query.body(question),
            headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200:
            error = document.get("error") if isinstance(document, dict) else None
            if not isinstance(error, dict):
                error = {"code": "http_error", "message": response.text[:500]}
            raise RagmartServiceError(response.status_code, str(error.get("code")),
                                      str(error.get("message")))
        if not isinstance(document, dict) or "results" not in document:
            raise RagmartServiceError(response.status_code, "bad_response",
                                      "the answer is not a ragmart retrieve document")
        return document

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def backend(retriever: Any, url: str | None, api_key: str | None, groups: Any,
            client: Any = None, timeout: float = 30.0) -> InProcess | OverHttp:
    """The backend a framework retriever was constructed for: exactly one of `retriever` (a
    ragmart.Retriever, with the caller's `groups`) or `url` (with `api_key`; no groups)."""
    if (retriever is None) == (url is None):
        raise ValueError("pass either retriever=ragmart.Retriever(...) (in-process, with the "
                         "caller's groups) or url= and api_key= (the ragmart service)")
    if url is not None:
        if groups is not None:
            raise ValueError("groups cannot be sent to the ragmart service: they come from "
                             "the API key; leave groups unset with url=")
        return OverHttp(url=url, api_key=api_key or "", timeout=timeout, client=client)
    if not hasattr(retriever, "retrieve"):
        raise ValueError(f"retriever must be a ragmart.Retriever, got {type(retriever).__name__}")
    return InProcess(retriever=retriever, groups=groups)


def search(source: InProcess | OverHttp, question: str, query: Query) -> list[Hit]:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty; pass the text to search for")
    return hits(question, source.answer(question, query), query.on_abstain)
