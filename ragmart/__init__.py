"""ragmart: retrieval-augmented generation treated as a data-engineering problem.

``ragmart.retrieve(question, k=5, contract=None, groups=None, as_of=None, db_path=None, ...)``
is ragmart.retrieval.engine.retrieve, ``ragmart.Retriever(...)`` (a reader holding one read-only
connection and the serving vectors in memory, for many queries) ragmart.retrieval.engine.Retriever,
and ``ragmart.ALL_GROUPS`` the operator switch (``groups=ALL_GROUPS`` sees every document;
``groups=None`` is no group), imported on first use (importing ragmart stays cheap).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ALL_GROUPS", "Retriever", "connect", "retrieve"]


def __getattr__(name: str) -> Any:
    if name == "connect":  # a read-only SQL connection on what serves, with ragmart_embed
        from ragmart.serving.sql import connect

        return connect
    if name in __all__:
        from ragmart.retrieval import engine as retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module 'ragmart' has no attribute {name!r}")
