"""ragmart: retrieval-augmented generation treated as a data-engineering problem.

The public Python API, imported on first use (importing ragmart stays cheap):

``ragmart.retrieve(question, k=5, contract=None, groups=None, as_of=None, db_path=None, ...)``
    the top-k chunks for one question, or an abstention;
``ragmart.Retriever(...)``
    a reader holding one read-only connection and the serving vectors in memory, for many
    queries;
``ragmart.ALL_GROUPS``
    the operator switch (``groups=ALL_GROUPS`` sees every document; ``groups=None`` is no group);
``ragmart.connect(...)``
    a read-only DuckDB connection on what serves, with vss, the retrieval macro and the SQL
    function ``ragmart_embed(text)``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["ALL_GROUPS", "Retriever", "connect", "retrieve"]

# where each public name is defined
_DEFINED_IN = {"ALL_GROUPS": "ragmart.retrieval.api", "Retriever": "ragmart.retrieval.api",
               "retrieve": "ragmart.retrieval.api", "connect": "ragmart.serving.sql"}


def __getattr__(name: str) -> object:
    if name in _DEFINED_IN:
        return getattr(importlib.import_module(_DEFINED_IN[name]), name)
    raise AttributeError(f"module 'ragmart' has no attribute {name!r}")
