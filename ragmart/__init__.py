"""ragmart: retrieval-augmented generation treated as a data-engineering problem.

``ragmart.retrieve(question, k=5, contract=None, groups=None, as_of=None, db_path=None, ...)``
is ragmart.retrieval.retrieve, imported on first use (importing ragmart stays cheap).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["retrieve"]


def __getattr__(name: str) -> Any:
    if name == "retrieve":
        from ragmart.retrieval import retrieve

        return retrieve
    raise AttributeError(f"module 'ragmart' has no attribute {name!r}")
