"""The embedding provider contract shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class EmbeddingError(RuntimeError):
    """An embedding backend could not produce vectors (missing or corrupt model, API error)."""


@dataclass
class ProviderStats:
    """Running totals for one provider instance (reported per dbt run)."""

    calls: int = 0
    texts: int = 0
    approx_tokens: int = 0


@runtime_checkable
class EmbeddingProvider(Protocol):
    name: str  # "local" | "hash" | "openai"
    model: str  # recorded as embedding_model on every row
    dimensions: int
    stats: ProviderStats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions) with L2-normalised rows."""
        ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate an ``embed`` argument: a sequence of strings (not a bare string)."""
    if isinstance(texts, str | bytes):
        raise TypeError(
            f"embed() takes a list of strings, got a single {type(texts).__name__} "
            f"{texts[:40]!r}; wrap it in a list: embed([text])"
        )
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(
                f"embed() takes a list of strings; the item at index {i} is "
                f"{type(text).__name__} {text!r:.60}"
            )
    return out


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (all-zero rows are left at zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
