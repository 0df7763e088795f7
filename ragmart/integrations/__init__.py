"""Drop-in retrievers for LLM frameworks, as optional extras.

``ragmart.integrations.langchain.RagmartRetriever`` (``pip install 'ragmart[langchain]'``) and
``ragmart.integrations.llamaindex.RagmartRetriever`` (``pip install 'ragmart[llamaindex]'``)
answer from a ``ragmart.Retriever`` in-process or from ``ragmart serve`` over HTTP
(ragmart.integrations.backend). Importing this package imports neither framework.
"""
