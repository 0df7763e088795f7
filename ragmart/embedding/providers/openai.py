"""OpenAI embeddings (or any OpenAI-compatible endpoint): texts to requests to unit vectors.

Settings: ``ragmart.embedding.providers.openai_settings`` (RAGMART_OPENAI_*); one request with
its retries: ``ragmart.embedding.providers.openai_client``.

Requests respect the API's limits (2048 inputs, 8191 tokens per input, 300,000 tokens per
request), with tokens estimated (``estimate_tokens``). Longer inputs follow
``RAGMART_OPENAI_LONG_TEXT``: ``truncate`` (default) or ``split`` (embed the pieces, average
weighted by their size, renormalise); either way the row records the policy it needed. Up to
``RAGMART_OPENAI_MAX_CONCURRENCY`` requests are in flight. When a request fails for good, no
new requests start, those in flight finish, and :class:`PartialEmbeddingError` carries every
vector obtained so that the caller keeps them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragmart.embedding.providers.base import EmbeddingError, check_texts, l2_normalise
from ragmart.embedding.providers.openai_client import (
    Cancelled,
    EmbeddingsClient,
    OpenAIStats,
    Permanent,
    Progress,
    redact,
)
from ragmart.embedding.providers.openai_settings import (
    BYTES_PER_TOKEN,
    OpenAISettings,
    estimate_tokens,
    model_name,
)


class PartialEmbeddingError(EmbeddingError):
    """A permanent failure; ``vectors`` maps row indexes of the ``embed`` call to the unit
    vectors obtained before it (keep them: they were paid for)."""

    def __init__(self, message: str, *, vectors: dict[int, np.ndarray], total: int) -> None:
        super().__init__(message)
        self.vectors = vectors
        self.total = total


@dataclass(frozen=True)
class _Piece:
    row: int  # index of the text in the embed call
    text: str
    tokens: int


class OpenAIProvider:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (thread pool, retries)."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAISettings | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        settings = settings or OpenAISettings.from_env()
        if options:
            settings = OpenAISettings.parse({**settings.__dict__, **options})
        self.settings = settings
        self.dimensions = settings.dimensions
        self.model = model_name(settings.model, settings.dimensions)
        self.stats = OpenAIStats()
        # texts per embed() call the pipeline should use: a few rounds of full requests
        self.preferred_batch_size = settings.batch_size * settings.max_concurrency * 4
        self._client = EmbeddingsClient(settings, self.stats, sleep=sleep, rng=rng)

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.settings.base_url!r})"

    def long_text_policy_applied(self, texts: Sequence[str]) -> list[str | None]:
        """Per text: the long-text policy its embedding needed, or None."""
        limit = self.settings.max_input_tokens
        return [self.settings.long_text if estimate_tokens(t) > limit else None for t in texts]

    def _pieces(self, row: int, text: str) -> list[_Piece]:
        text = text or " "  # the API rejects empty strings
        limit = self.settings.max_input_tokens
        if estimate_tokens(text) <= limit:
            return [_Piece(row, text, estimate_tokens(text))]
        max_bytes = limit * BYTES_PER_TOKEN
        pieces: list[_Piece] = []
        rest = text
        while rest:
            head = rest.encode("utf-8")[:max_bytes].decode("utf-8", "ignore") or rest[0]
            if len(head) < len(rest):
                space = max(head.rfind(" "), head.rfind("\n"))
                if space > len(head) // 2:
                    head = head[: space + 1]
            pieces.append(_Piece(row, head, estimate_tokens(head)))
            rest = rest[len(head):]
            if self.settings.long_text == "truncate":
                break
        return pieces

    def _plan(self, pieces: list[_Piece]) -> list[list[int]]:
        """Pieces (by index) grouped into requests within the batch and token limits."""
        requests: list[list[int]] = []
        tokens = 0
        for index, piece in enumerate(pieces):
            if (
                not requests
                or len(requests[-1]) >= self.settings.batch_size
                or tokens + piece.tokens > self.settings.max_request_tokens
            ):
                requests.append([])
                tokens = 0
            requests[-1].append(index)
            tokens += piece.tokens
        return requests

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        out = np.zeros((len(items), self.dimensions), dtype=np.float32)
        if not items:
            return out
        pieces = [piece for row, text in enumerate(items) for piece in self._pieces(row, text)]
        requests = self._plan(pieces)
        self._client.connect()
        progress = Progress()
        results: list[np.ndarray | None] = [None] * len(pieces)
        failure: BaseException | None = None
        workers = min(self.settings.max_concurrency, len(requests))
        with ThreadPoolExecutor(workers, thread_name_prefix="ragmart-openai") as pool:
            futures = {
                pool.submit(self._client.request, [pieces[i].text for i in request], progress):
                request
                for request in requests
            }
            for future in as_completed(futures):
                try:
                    vectors = future.result()
                except (Cancelled, CancelledError):
                    continue
                except Exception as exc:  # every failure stops the run
                    failure = failure or exc
                    progress.stop.set()
                    for other in futures:
                        other.cancel()
                    continue
                for index, vector in zip(futures[future], vectors, strict=True):
                    results[index] = vector
        done = self._assemble(pieces, results, out)
        self.stats.texts += len(done)
        if failure is not None:
            reason = redact(str(failure) if isinstance(failure, Permanent) else repr(failure))
            raise PartialEmbeddingError(
                f"openai embeddings from {self.settings.endpoint} (model {self.model}) failed: "
                f"{reason}. {len(done)} of {len(items)} texts of this call were embedded "
                "before it.",
                vectors={row: out[row] for row in sorted(done)},
                total=len(items),
            ) from failure
        return out

    @staticmethod
    def _assemble(
        pieces: list[_Piece], results: list[np.ndarray | None], out: np.ndarray
    ) -> set[int]:
        """Rows whose every piece has a vector, written to ``out`` (pieces averaged by
        estimated tokens, then renormalised); returns those rows."""
        by_row: dict[int, list[int]] = {}
        for index, piece in enumerate(pieces):
            by_row.setdefault(piece.row, []).append(index)
        done: set[int] = set()
        for row, indexes in by_row.items():
            vectors = [results[i] for i in indexes]
            if any(v is None for v in vectors):
                continue
            if len(indexes) == 1:
                out[row] = vectors[0]
            else:
                weights = np.array([pieces[i].tokens for i in indexes], dtype=np.float64)
                mean = (np.stack(vectors).astype(np.float64) * weights[:, None]).sum(axis=0)
                out[row] = l2_normalise(mean[None, :])[0]
            done.add(row)
        return done
