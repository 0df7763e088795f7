"""ragmart as a LangChain retriever: ``RagmartRetriever`` (``pip install 'ragmart[langchain]'``).

Each retrieved chunk is a ``Document``: ``page_content`` is the chunk's text, ``id`` its
chunk_id, and ``metadata`` the citation (document_id, document_version, index_version, title,
section, chunk_id, source) with rank, distance, document_type, section_type, completeness and
embedding_model (ragmart.integrations.backend.HIT_FIELDS), in ragmart's order.

Constructed with ``retriever=ragmart.Retriever(...)`` and the caller's ``groups`` (in-process)
or with ``url=`` and ``api_key=`` (``ragmart serve``: the key's groups); an abstention raises
``RagmartAbstained`` unless ``on_abstain="empty"``: see ragmart.integrations.backend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ragmart.integrations.backend import (
    InProcess,
    OverHttp,
    Query,
    RagmartAbstained,
    RagmartServiceError,
    backend,
    framework,
    search,
)

with framework("langchain", "langchain-core", "langchain"):
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import PrivateAttr, SecretStr

__all__ = ["RagmartAbstained", "RagmartRetriever", "RagmartServiceError"]


class RagmartRetriever(BaseRetriever):
    """A LangChain retriever answering from ragmart (see the module doc)."""

    retriever: Any = None
    groups: Any = None
    url: str | None = None
    api_key: SecretStr | None = None  # never shown in a repr or a trace
    http_client: Any = None
    timeout: float = 30.0
    k: int = 5
    contract: str | None = None
    doc_types: Sequence[str] | None = None
    as_of: dt.datetime | str | None = None
    mode: str | None = None
    on_abstain: str = "raise"

    _backend: InProcess | OverHttp = PrivateAttr()
    _query: Query = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        self._backend = backend(self.retriever, self.url, key, self.groups,
                                client=self.http_client, timeout=self.timeout)
        self._query = Query(k=self.k, contract=self.contract, doc_types=self.doc_types,
                            as_of=self.as_of, mode=self.mode, on_abstain=self.on_abstain)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [Document(page_content=hit.text, metadata=hit.metadata,
                         id=hit.metadata["chunk_id"])
                for hit in search(self._backend, query, self._query)]
