"""Embedding providers: ``get_provider()`` picks one by name or $RAGMART_EMBEDDING_PROVIDER.

* ``local`` (default): all-MiniLM-L6-v2 int8 ONNX shipped as a wheel, 384 dims, CPU.
* ``hash``: deterministic feature hashing, no model, for tests and offline CI.
* ``openai``: the OpenAI embeddings API or any OpenAI-compatible endpoint (see
  ``ragmart.providers.openai`` for its RAGMART_OPENAI_* settings).
"""

from __future__ import annotations

import os
from typing import Any

from ragmart.providers.base import EmbeddingError, EmbeddingProvider, ProviderStats
from ragmart.providers.hashing import HashingProvider
from ragmart.providers.local import LocalOnnxProvider
from ragmart.providers.openai import OpenAIProvider, PartialEmbeddingError

PROVIDER_ENV = "RAGMART_EMBEDDING_PROVIDER"
PROVIDER_NAMES = ("local", "hash", "openai")

__all__ = [
    "PROVIDER_ENV",
    "PROVIDER_NAMES",
    "EmbeddingError",
    "EmbeddingProvider",
    "HashingProvider",
    "LocalOnnxProvider",
    "OpenAIProvider",
    "PartialEmbeddingError",
    "ProviderStats",
    "get_provider",
]


def get_provider(name: str | None = None, **kwargs: Any) -> EmbeddingProvider:
    """A new provider by name (default: $RAGMART_EMBEDDING_PROVIDER, else "local").

    Keyword arguments go to the provider's constructor (``dimensions=`` for "hash";
    ``threads=``, ``batch_size=`` for "local"; any OpenAISettings field for "openai", over its
    environment). Nothing is loaded, and no key is read, until the first embed.
    """
    from_env = name is None
    if name is None:
        name = os.environ.get(PROVIDER_ENV, "").strip() or "local"
    key = name.strip().lower()
    if key == "local":
        return LocalOnnxProvider(**kwargs)
    if key == "hash":
        return HashingProvider(**kwargs)
    if key == "openai":
        return OpenAIProvider(**kwargs)
    what = f"{PROVIDER_ENV}={name!r}" if from_env else f"embedding provider {name!r}"
    raise ValueError(
        f"unknown {what}; supported providers: {', '.join(PROVIDER_NAMES)}. "
        f"Pass one of them to get_provider() or set {PROVIDER_ENV}."
    )
