"""Embedding providers: ``get_provider()`` picks one by name or $RAGMART_EMBEDDING_PROVIDER.

* ``local`` (default): all-MiniLM-L6-v2 int8 ONNX shipped as a wheel, 384 dims, CPU.
* ``hash``: deterministic feature hashing, no model, for tests and offline CI.
* ``openai``: the OpenAI embeddings API or any OpenAI-compatible endpoint (see
  ``ragmart.embedding.providers.openai_settings`` for its RAGMART_OPENAI_* settings).
"""

from __future__ import annotations

import os
from typing import Any

from ragmart.embedding.providers.base import EmbeddingError, EmbeddingProvider, ProviderStats
from ragmart.embedding.providers.hashing import HashingProvider
from ragmart.embedding.providers.local import LocalOnnxProvider
from ragmart.embedding.providers.openai import OpenAIProvider, PartialEmbeddingError
from ragmart.embedding.providers.openai_client import require_api_key

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
    "build_provider",
    "get_provider",
    "provider_for_model",
]


def _fixed_models() -> dict[str, str]:
    """{model: provider} of the providers whose model no setting changes (an openai model is
    named <model>@<dimensions>)."""
    return {LocalOnnxProvider.model: "local", HashingProvider().model: "hash"}


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


def build_provider(name: str | None, pinned_model: str | None) -> EmbeddingProvider:
    """The provider a dbt build embeds with: ``get_provider(name)``, refused (ValueError) when
    the build pins another model (the dbt var embedding_model, else RAGMART_EMBEDDING_MODEL)."""
    provider = get_provider(name)
    if pinned_model and provider.model != pinned_model:
        raise ValueError(
            f"provider {provider.name!r} embeds with {provider.model!r} but the dbt var "
            f"embedding_model is {pinned_model!r}; unset the var or set it to {provider.model!r}"
        )
    return provider


def provider_for_model(model: str, *, version: str | None = None, purpose: str = "search"
                       ) -> EmbeddingProvider:
    """A provider that embeds with `model`, the model an index version's vectors were made
    with, whatever provider the environment selects: a question must be embedded by the model
    of the version it searches (and a version's size is its model's). `local` and `hash` by
    their model name; ``<id>@<dimensions>`` by the openai provider asking that model at that
    size (its endpoint and key from the environment). With `version`, a provider that lacks a
    setting is refused now (EmbeddingError naming it, and why: to `purpose` that version)."""
    fixed = _fixed_models()
    if model in fixed:
        return get_provider(fixed[model])
    name, at, size = model.rpartition("@")
    if not (at and name and size.isdigit()):
        raise ValueError(
            f"no embedding provider embeds with {model!r}: known models are "
            f"{', '.join(f'{m} ({p})' for m, p in sorted(fixed.items()))} and "
            "<model>@<dimensions> (openai). Rebuild the version with one of them"
        )
    provider = OpenAIProvider(model=name, dimensions=int(size))
    if version is not None:
        require_api_key(f"to {purpose} index version {version} (its vectors are {model}: "
                        "questions are embedded by the same model)")
    return provider
