"""One ``/embeddings`` request at a time, with retries: the openai provider's HTTP side.

The ``openai`` client is created at the first request, with its own retries off
(``max_retries=0``): 429, 5xx, timeouts, connection errors and unparseable bodies are retried
here with exponential backoff and "equal jitter", never sooner than ``Retry-After`` /
``retry-after-ms`` says (and never longer than ``RAGMART_OPENAI_BACKOFF_MAX``). Other 4xx, and
vectors of the wrong number or size, are permanent. A request that fails for good sets the
shared stop event: requests not started yet do not start, and waits end (``Cancelled``).

``OPENAI_API_KEY`` is read from the environment when the first request is made; it is handed to
the client only, never logged, stored or put in an error message (:func:`redact`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import math
import os
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragmart.embedding.providers.base import EmbeddingError, ProviderStats, l2_normalise
from ragmart.embedding.providers.openai_settings import (
    BACKOFF_MAX_ENV,
    BASE_URL_ENV,
    DIMENSIONS_ENV,
    MAX_RETRIES_ENV,
    MODEL_ENV,
    OpenAISettings,
    estimate_tokens,
)

API_KEY_ENV = "OPENAI_API_KEY"


class Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    pass


class Cancelled(Exception):
    """Another request failed for good: this one stops (it is not a failure of its own)."""


@dataclass
class OpenAIStats(ProviderStats):
    """calls: HTTP requests made (retries included); approx_tokens: the tokens the endpoint
    reported in ``usage`` (our estimate where it reported none)."""

    retries: int = 0


@dataclass
class Progress:
    """What the requests of one ``embed`` call share: a lock and the stop event."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def parse_retry_after(headers: Mapping[str, str] | None, now: dt.datetime | None = None
                      ) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP-date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9*_-]+")


def redact(message: str) -> str:
    """``message`` without the API key or anything shaped like one (endpoints echo keys)."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        message = message.replace(key, "***")
    return _KEY_LIKE.sub("sk-***", message)


def require_api_key(alternative: str = "or set RAGMART_EMBEDDING_PROVIDER=local to use the "
                    "embedded model") -> str:
    """The API key, or EmbeddingError naming the setting that is missing (the only one without
    a default: the endpoint defaults to api.openai.com), ending with `alternative`."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise EmbeddingError(
            f"{API_KEY_ENV} is not set: the openai embedding provider reads its API "
            f"key from the environment only. Export {API_KEY_ENV} (for a local "
            f"OpenAI-compatible server any non-empty value, with {BASE_URL_ENV}), "
            f"{alternative}."
        )
    return key


def _classify(exc: Exception) -> Exception:
    """An openai client exception as Retryable or Permanent (anything else: unchanged)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = redact(exc.message)  # "Error code: <status> - <the endpoint's message>"
        if status == 429 or status >= 500:
            return Retryable(reason, parse_retry_after(exc.response.headers))
        hints = {
            401: f"check {API_KEY_ENV}",
            403: f"check {API_KEY_ENV} and the project's access to the model",
            404: f"check {MODEL_ENV} and {BASE_URL_ENV}",
        }
        hint = hints.get(status, f"check {MODEL_ENV}, {DIMENSIONS_ENV} and the inputs")
        return Permanent(f"{reason} (permanent; {hint})")
    if isinstance(exc, openai.APITimeoutError):
        return Retryable("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return Retryable(redact(f"connection error: {exc}"))
    if isinstance(exc, ValueError | openai.APIResponseValidationError):  # bad JSON
        return Retryable(redact(f"unparseable response body: {exc}"))
    return exc


class EmbeddingsClient:
    """Requests to one OpenAI-compatible endpoint, counted in ``stats`` (shared by threads)."""

    def __init__(self, settings: OpenAISettings, stats: OpenAIStats, *,
                 sleep: Callable[[float], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self._sleep = sleep  # None: wait on the stop event (tests inject a recorder)
        self._rng = rng or random.Random()
        self._client: Any = None
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Create the ``openai`` client now (EmbeddingError if the API key is missing)."""
        with self._lock:
            if self._client is None:
                key = require_api_key()
                import openai

                self._client = openai.OpenAI(
                    api_key=key,
                    base_url=self.settings.base_url,
                    max_retries=0,
                    timeout=self.settings.timeout,
                )

    def request(self, texts: list[str], progress: Progress) -> np.ndarray:
        """The unit vectors of `texts` from one request, retried; a failure stops the requests
        not started yet (here, not in the caller: no queued request may start)."""
        try:
            return self._retrying(texts, progress)
        except Cancelled:
            raise
        except Exception:
            progress.stop.set()
            raise

    def _retrying(self, texts: list[str], progress: Progress) -> np.ndarray:
        attempt = 0
        while True:
            if progress.stop.is_set():
                raise Cancelled
            try:
                return self._post(texts, progress)
            except Retryable as exc:
                if attempt >= self.settings.max_retries:
                    raise Permanent(
                        f"{exc} (gave up after {attempt + 1} attempts; "
                        f"{MAX_RETRIES_ENV}={self.settings.max_retries})"
                    ) from exc
                self._wait(attempt, exc.retry_after, progress)
                with progress.lock:
                    self.stats.retries += 1
                attempt += 1

    def _wait(self, attempt: int, retry_after: float | None, progress: Progress) -> None:
        s = self.settings
        backoff = min(s.backoff_max, s.backoff_base * 2**attempt)
        with progress.lock:
            delay = backoff / 2 + self._rng.uniform(0, backoff / 2)  # "equal jitter"
        if retry_after is not None:
            if retry_after > s.backoff_max:
                raise Permanent(
                    f"the endpoint asked to retry after {retry_after:.0f}s, longer than "
                    f"{BACKOFF_MAX_ENV}={s.backoff_max:g}; run the build again later or raise it"
                )
            delay = max(delay, retry_after)
        if self._sleep is not None:
            self._sleep(delay)
        elif progress.stop.wait(delay):
            raise Cancelled

    def _post(self, texts: list[str], progress: Progress) -> np.ndarray:
        """One HTTP request; the (len(texts), dimensions) unit vectors or an exception."""
        with progress.lock:
            self.stats.calls += 1
        try:
            response = self._client.embeddings.create(
                input=texts,
                model=self.settings.model,
                dimensions=self.settings.dimensions,
                encoding_format=self.settings.encoding_format,
            )
        except Exception as exc:
            classified = _classify(exc)
            if classified is exc:
                raise
            # not chained: the client's exception may quote the endpoint's body verbatim
            raise classified from None
        usage = getattr(response, "usage", None)
        billed = getattr(usage, "total_tokens", None) if usage is not None else None
        with progress.lock:
            self.stats.approx_tokens += (
                billed if isinstance(billed, int) else sum(estimate_tokens(t) for t in texts)
            )
        return self._vectors(getattr(response, "data", None), len(texts))

    def _vectors(self, data: Any, n: int) -> np.ndarray:
        s = self.settings
        if not isinstance(data, list):
            raise Retryable(f"response has no list of embeddings (data={data!r:.80})")
        if len(data) != n:
            raise Permanent(
                f"the endpoint returned {len(data)} embeddings for {n} inputs (permanent; "
                f"is {s.endpoint} OpenAI-compatible?)"
            )
        out = np.empty((n, s.dimensions), dtype=np.float32)
        seen: set[int] = set()
        for item in data:
            index, value = getattr(item, "index", None), getattr(item, "embedding", None)
            if not isinstance(index, int) or not 0 <= index < n or index in seen:
                raise Retryable(f"embedding with a bad index {index!r} for {n} inputs")
            seen.add(index)
            try:
                if isinstance(value, str):
                    vector = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
                else:
                    vector = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError, binascii.Error) as exc:
                raise Retryable(f"undecodable embedding at index {index}: {exc}") from exc
            if vector.shape != (s.dimensions,):
                raise Permanent(
                    f"the endpoint returned vectors of shape {vector.shape}, expected "
                    f"({s.dimensions},) (permanent; does model {s.model!r} at "
                    f"{s.endpoint} support dimensions={s.dimensions}? set "
                    f"{DIMENSIONS_ENV}/{MODEL_ENV} to a combination it supports)"
                )
            if not np.all(np.isfinite(vector)):
                raise Retryable(f"non-finite values in the embedding at index {index}")
            out[index] = vector
        return l2_normalise(out)
