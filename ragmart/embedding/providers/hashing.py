"""A dependency-free, deterministic feature-hashing "embedding" (tests, CI, offline runs).

Features are lowercase word tokens (``\\w+``) and word bigrams; each is hashed with
BLAKE2b (never Python's salted ``hash()``) to a dimension and a sign, weighted by
sublinear term frequency ``1 + log(tf)``; rows are L2-normalised. Lexical overlap only:
no semantics, but stable across processes, platforms and Python versions.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ragmart.embedding.providers.base import ProviderStats, check_texts

_WORD = re.compile(r"\w+")
_PERSON = b"ragmart.hash.v1"  # domain-separates the hash; part of the model version


class HashingProvider:
    name = "hash"

    def __init__(self, dimensions: int = 384) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError(
                f"HashingProvider dimensions must be a positive integer, got {dimensions!r}"
            )
        self.dimensions = dimensions
        self.model = f"hash-{dimensions}-v1"
        self.stats = ProviderStats()
        # the vector for texts without a single word: a fixed unit vector, never NaN
        self._empty = np.full(dimensions, 1.0 / math.sqrt(dimensions), dtype=np.float32)

    def _slot(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=_PERSON).digest()
        value = int.from_bytes(digest, "little")
        return (value >> 1) % self.dimensions, (1.0 if value & 1 else -1.0)

    def _vector(self, words: list[str]) -> np.ndarray:
        features = Counter(words)
        features.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
        vector = np.zeros(self.dimensions, dtype=np.float64)
        for feature, tf in sorted(features.items()):  # fixed summation order
            index, sign = self._slot(feature)
            vector[index] += sign * (1.0 + math.log(tf))
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:  # no words (or features that cancelled out exactly)
            return self._empty
        return (vector / norm).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        n_words = 0
        for row, text in enumerate(items):
            words = _WORD.findall(text.lower())
            n_words += len(words)
            out[row] = self._vector(words)
        self.stats.calls += 1
        self.stats.texts += len(items)
        self.stats.approx_tokens += n_words
        return out
