"""ragmart as a LlamaIndex retriever: ``RagmartRetriever`` (``pip install 'ragmart[llamaindex]'``).

Each retrieved chunk is a ``NodeWithScore`` holding a ``TextNode``: ``text`` is the chunk's
text, ``id_`` its chunk_id, ``metadata`` the same citation fields as the LangChain retriever's
(ragmart.integrations.backend.HIT_FIELDS, distance included), and ``score`` the cosine
similarity 1 - distance (LlamaIndex ranks higher scores first; the order is ragmart's).

Constructed, and abstaining, as ragmart.integrations.langchain.RagmartRetriever does (the same
keyword arguments; see ragmart.integrations.backend).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ragmart.integrations.backend import (
    Query,
    RagmartAbstained,
    RagmartServiceError,
    backend,
    framework,
    search,
)

with framework("llamaindex", "llama-index-core", "llamaindex"):
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

__all__ = ["RagmartAbstained", "RagmartRetriever", "RagmartServiceError"]


class RagmartRetriever(BaseRetriever):
    """A LlamaIndex retriever answering from ragmart (see the module doc)."""

    def __init__(
        self,
        *,
        retriever: Any = None,
        groups: Any = None,
        url: str | None = None,
        api_key: str | None = None,
        http_client: Any = None,
        timeout: float = 30.0,
        k: int = 5,
        contract: str | None = None,
        doc_types: Sequence[str] | None = None,
        as_of: dt.datetime | str | None = None,
        mode: str | None = None,
        on_abstain: str = "raise",
        **kwargs: Any,
    ) -> None:
        self._backend = backend(retriever, url, api_key, groups, client=http_client,
                                timeout=timeout)
        self._query = Query(k=k, contract=contract, doc_types=doc_types, as_of=as_of,
                            mode=mode, on_abstain=on_abstain)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [
            NodeWithScore(
                node=TextNode(text=hit.text, id_=hit.metadata["chunk_id"],
                              metadata=hit.metadata),
                score=1.0 - hit.distance,
            )
            for hit in search(self._backend, query_bundle.query_str, self._query)
        ]
