"""OpenAI embeddings (or any OpenAI-compatible endpoint) through the ``openai`` client.

Configuration comes from the environment (constructor keywords override it):

* ``RAGMART_OPENAI_MODEL`` (text-embedding-3-small), ``RAGMART_OPENAI_DIMENSIONS`` (384):
  the vectors are recorded as ``<model>@<dimensions>``, the cache key with chunk_hash.
* ``RAGMART_OPENAI_BASE_URL``, else ``OPENAI_BASE_URL``, else the OpenAI API.
* ``OPENAI_API_KEY``: read from the environment when the first request is made; it is handed
  to the client only, never logged, stored or put in an error message.

Requests respect the API's limits (2048 inputs, 8191 tokens per input, 300,000 tokens per
request). Tokens are *estimated* without a tokenizer (tiktoken is not installed) as
``ceil(utf-8 bytes / 3)``: English runs about 4 bytes per token, so the estimate
over-counts, but a text dense in rare characters can exceed it. Longer inputs follow
``RAGMART_OPENAI_LONG_TEXT``: ``truncate`` (default) or ``split`` (embed the pieces, average
weighted by their size, renormalise); either way the row records the policy it needed.

Retries: the client's own retries are off (``max_retries=0``); 429, 5xx, timeouts,
connection errors and unparseable bodies are retried with exponential backoff and jitter,
never sooner than ``Retry-After`` / ``retry-after-ms`` says. Other 4xx, and vectors of the
wrong number or size, are permanent. Up to ``RAGMART_OPENAI_MAX_CONCURRENCY`` requests are in
flight. When a request fails for good, no new requests start, those in flight finish, and
:class:`PartialEmbeddingError` carries every vector obtained so that the caller keeps them.
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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragmart.embedding.providers.base import (
    EmbeddingError,
    ProviderStats,
    check_texts,
    l2_normalise,
)

MODEL_ENV = "RAGMART_OPENAI_MODEL"
DIMENSIONS_ENV = "RAGMART_OPENAI_DIMENSIONS"
BASE_URL_ENV = "RAGMART_OPENAI_BASE_URL"
CLIENT_BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
LONG_TEXT_ENV = "RAGMART_OPENAI_LONG_TEXT"
CONCURRENCY_ENV = "RAGMART_OPENAI_MAX_CONCURRENCY"
BATCH_SIZE_ENV = "RAGMART_OPENAI_BATCH_SIZE"
MAX_RETRIES_ENV = "RAGMART_OPENAI_MAX_RETRIES"
BACKOFF_BASE_ENV = "RAGMART_OPENAI_BACKOFF_BASE"
BACKOFF_MAX_ENV = "RAGMART_OPENAI_BACKOFF_MAX"
TIMEOUT_ENV = "RAGMART_OPENAI_TIMEOUT"
ENCODING_ENV = "RAGMART_OPENAI_ENCODING_FORMAT"

DEFAULT_MODEL = "text-embedding-3-small"
DEFAULT_DIMENSIONS = 384
LONG_TEXT_POLICIES = ("truncate", "split")
ENCODINGS = ("base64", "float")

# the API's limits
API_MAX_INPUTS = 2048
API_MAX_INPUT_TOKENS = 8191
API_MAX_REQUEST_TOKENS = 300_000
BYTES_PER_TOKEN = 3  # conservative estimate, see the module docstring

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


def estimate_tokens(text: str) -> int:
    """Approximate token count: ceil(utf-8 bytes / 3), at least 1."""
    return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN))


def model_name(model: str, dimensions: int) -> str:
    """The name recorded on the vectors (mirrored by macros/embedding_model.sql)."""
    return f"{model}@{dimensions}"


# --------------------------------------------------------------------------- settings


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _int(raw: object, what: str, low: int, high: int | None = None) -> int:
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"0|[1-9][0-9]*", raw.strip()):
        value = int(raw)
    if value is None or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{what} must be an integer {bound}, got {raw!r}")
    return value


def _seconds(raw: object, what: str, *, positive: bool = False) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = -1.0
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0 or (positive and not value):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{what} must be a {kind} number of seconds, got {raw!r}")
    return value


def _choice(raw: str, what: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {raw!r}")
    return value


@dataclass(frozen=True)
class OpenAISettings:
    model: str = DEFAULT_MODEL
    dimensions: int = DEFAULT_DIMENSIONS
    base_url: str | None = None
    long_text: str = "truncate"
    max_concurrency: int = 4
    batch_size: int = 256  # inputs per request
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0  # the longest single wait, computed or asked by Retry-After
    timeout: float = 60.0
    encoding_format: str = "base64"
    max_input_tokens: int = API_MAX_INPUT_TOKENS
    max_request_tokens: int = API_MAX_REQUEST_TOKENS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OpenAISettings:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {
            "model": _env(env, MODEL_ENV) or DEFAULT_MODEL,
            "base_url": _env(env, BASE_URL_ENV) or _env(env, CLIENT_BASE_URL_ENV) or None,
        }
        for key, name in (
            ("dimensions", DIMENSIONS_ENV),
            ("long_text", LONG_TEXT_ENV),
            ("max_concurrency", CONCURRENCY_ENV),
            ("batch_size", BATCH_SIZE_ENV),
            ("max_retries", MAX_RETRIES_ENV),
            ("backoff_base", BACKOFF_BASE_ENV),
            ("backoff_max", BACKOFF_MAX_ENV),
            ("timeout", TIMEOUT_ENV),
            ("encoding_format", ENCODING_ENV),
        ):
            if _env(env, name):
                raw[key] = _env(env, name)
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> OpenAISettings:
        """Settings from strings or values, each checked; errors name the variable."""
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(
                f"unknown openai provider option(s) {sorted(unknown)}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        d = cls()
        model = str(raw.get("model", d.model)).strip()
        if not _MODEL_NAME.match(model) or "@" in model:
            raise ValueError(
                f"{MODEL_ENV} must be a model id like {DEFAULT_MODEL!r} (letters, digits, "
                f"'.', '_', ':', '/', '-'), got {model!r}"
            )
        return cls(
            model=model,
            dimensions=_int(raw.get("dimensions", d.dimensions), DIMENSIONS_ENV, 1),
            base_url=(str(raw["base_url"]).strip() or None) if raw.get("base_url") else None,
            long_text=_choice(str(raw.get("long_text", d.long_text)), LONG_TEXT_ENV,
                              LONG_TEXT_POLICIES),
            max_concurrency=_int(raw.get("max_concurrency", d.max_concurrency),
                                 CONCURRENCY_ENV, 1, 64),
            batch_size=_int(raw.get("batch_size", d.batch_size), BATCH_SIZE_ENV, 1,
                            API_MAX_INPUTS),
            max_retries=_int(raw.get("max_retries", d.max_retries), MAX_RETRIES_ENV, 0, 100),
            backoff_base=_seconds(raw.get("backoff_base", d.backoff_base), BACKOFF_BASE_ENV),
            backoff_max=_seconds(raw.get("backoff_max", d.backoff_max), BACKOFF_MAX_ENV),
            timeout=_seconds(raw.get("timeout", d.timeout), TIMEOUT_ENV, positive=True),
            encoding_format=_choice(str(raw.get("encoding_format", d.encoding_format)),
                                    ENCODING_ENV, ENCODINGS),
            max_input_tokens=_int(raw.get("max_input_tokens", d.max_input_tokens),
                                  "max_input_tokens", 1, API_MAX_INPUT_TOKENS),
            max_request_tokens=_int(raw.get("max_request_tokens", d.max_request_tokens),
                                    "max_request_tokens", 1, API_MAX_REQUEST_TOKENS),
        )


# --------------------------------------------------------------------------- errors


class PartialEmbeddingError(EmbeddingError):
    """A permanent failure; ``vectors`` maps row indexes of the ``embed`` call to the unit
    vectors obtained before it (keep them: they were paid for)."""

    def __init__(self, message: str, *, vectors: dict[int, np.ndarray], total: int) -> None:
        super().__init__(message)
        self.vectors = vectors
        self.total = total


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass


class _Cancelled(Exception):
    pass


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


def _classify(exc: Exception) -> Exception:
    """An openai client exception as _Retryable or _Permanent (anything else: unchanged)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = redact(exc.message)  # "Error code: <status> - <the endpoint's message>"
        if status == 429 or status >= 500:
            return _Retryable(reason, parse_retry_after(exc.response.headers))
        hints = {
            401: f"check {API_KEY_ENV}",
            403: f"check {API_KEY_ENV} and the project's access to the model",
            404: f"check {MODEL_ENV} and {BASE_URL_ENV}",
        }
        hint = hints.get(status, f"check {MODEL_ENV}, {DIMENSIONS_ENV} and the inputs")
        return _Permanent(f"{reason} (permanent; {hint})")
    if isinstance(exc, openai.APITimeoutError):
        return _Retryable("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return _Retryable(redact(f"connection error: {exc}"))
    if isinstance(exc, ValueError | openai.APIResponseValidationError):  # bad JSON
        return _Retryable(redact(f"unparseable response body: {exc}"))
    return exc


# --------------------------------------------------------------------------- provider


@dataclass
class OpenAIStats(ProviderStats):
    """calls: HTTP requests made (retries included); approx_tokens: the tokens the endpoint
    reported in ``usage`` (our estimate where it reported none)."""

    retries: int = 0


@dataclass(frozen=True)
class _Piece:
    row: int  # index of the text in the embed call
    text: str
    tokens: int


@dataclass
class _Progress:
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


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
        self._sleep = sleep  # None: wait on the stop event (tests inject a recorder)
        self._rng = rng or random.Random()
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.settings.base_url!r})"

    @property
    def endpoint(self) -> str:
        return self.settings.base_url or "https://api.openai.com/v1"

    # ------------------------------------------------------------------ inputs

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

    # ------------------------------------------------------------------ requests

    def require_settings(self, alternative: str = "or set RAGMART_EMBEDDING_PROVIDER=local "
                         "to use the embedded model") -> str:
        """The API key, or EmbeddingError naming the setting that is missing (the only one
        without a default: the endpoint defaults to api.openai.com), ending with
        `alternative`."""
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise EmbeddingError(
                f"{API_KEY_ENV} is not set: the openai embedding provider reads its API "
                f"key from the environment only. Export {API_KEY_ENV} (for a local "
                f"OpenAI-compatible server any non-empty value, with {BASE_URL_ENV}), "
                f"{alternative}."
            )
        return key

    def _ensure_client(self) -> Any:
        with self._lock:
            if self._client is None:
                key = self.require_settings()
                import openai

                self._client = openai.OpenAI(
                    api_key=key,
                    base_url=self.settings.base_url,
                    max_retries=0,
                    timeout=self.settings.timeout,
                )
            return self._client

    def _wait(self, attempt: int, retry_after: float | None, progress: _Progress) -> None:
        s = self.settings
        backoff = min(s.backoff_max, s.backoff_base * 2**attempt)
        with progress.lock:
            delay = backoff / 2 + self._rng.uniform(0, backoff / 2)  # "equal jitter"
        if retry_after is not None:
            if retry_after > s.backoff_max:
                raise _Permanent(
                    f"the endpoint asked to retry after {retry_after:.0f}s, longer than "
                    f"{BACKOFF_MAX_ENV}={s.backoff_max:g}; run the build again later or raise it"
                )
            delay = max(delay, retry_after)
        if self._sleep is not None:
            self._sleep(delay)
        elif progress.stop.wait(delay):
            raise _Cancelled

    def _post(self, client: Any, texts: list[str], progress: _Progress) -> np.ndarray:
        """One HTTP request; the (len(texts), dimensions) unit vectors or an exception."""
        with progress.lock:
            self.stats.calls += 1
        try:
            response = client.embeddings.create(
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
        if not isinstance(data, list):
            raise _Retryable(f"response has no list of embeddings (data={data!r:.80})")
        if len(data) != n:
            raise _Permanent(
                f"the endpoint returned {len(data)} embeddings for {n} inputs (permanent; "
                f"is {self.endpoint} OpenAI-compatible?)"
            )
        out = np.empty((n, self.dimensions), dtype=np.float32)
        seen: set[int] = set()
        for item in data:
            index, value = getattr(item, "index", None), getattr(item, "embedding", None)
            if not isinstance(index, int) or not 0 <= index < n or index in seen:
                raise _Retryable(f"embedding with a bad index {index!r} for {n} inputs")
            seen.add(index)
            try:
                if isinstance(value, str):
                    vector = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
                else:
                    vector = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError, binascii.Error) as exc:
                raise _Retryable(f"undecodable embedding at index {index}: {exc}") from exc
            if vector.shape != (self.dimensions,):
                raise _Permanent(
                    f"the endpoint returned vectors of shape {vector.shape}, expected "
                    f"({self.dimensions},) (permanent; does model {self.settings.model!r} at "
                    f"{self.endpoint} support dimensions={self.dimensions}? set "
                    f"{DIMENSIONS_ENV}/{MODEL_ENV} to a combination it supports)"
                )
            if not np.all(np.isfinite(vector)):
                raise _Retryable(f"non-finite values in the embedding at index {index}")
            out[index] = vector
        return l2_normalise(out)

    def _request(self, client: Any, texts: list[str], progress: _Progress) -> np.ndarray:
        """One request with retries; a failure stops the requests not started yet."""
        try:
            return self._retrying(client, texts, progress)
        except _Cancelled:
            raise
        except Exception:
            progress.stop.set()  # here, not in the caller: no queued request may start
            raise

    def _retrying(self, client: Any, texts: list[str], progress: _Progress) -> np.ndarray:
        attempt = 0
        while True:
            if progress.stop.is_set():
                raise _Cancelled
            try:
                return self._post(client, texts, progress)
            except _Retryable as exc:
                if attempt >= self.settings.max_retries:
                    raise _Permanent(
                        f"{exc} (gave up after {attempt + 1} attempts; "
                        f"{MAX_RETRIES_ENV}={self.settings.max_retries})"
                    ) from exc
                self._wait(attempt, exc.retry_after, progress)
                with progress.lock:
                    self.stats.retries += 1
                attempt += 1

    # ------------------------------------------------------------------ embed

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = check_texts(texts)
        out = np.zeros((len(items), self.dimensions), dtype=np.float32)
        if not items:
            return out
        pieces = [piece for row, text in enumerate(items) for piece in self._pieces(row, text)]
        requests = self._plan(pieces)
        client = self._ensure_client()
        progress = _Progress()
        results: list[np.ndarray | None] = [None] * len(pieces)
        failure: BaseException | None = None
        workers = min(self.settings.max_concurrency, len(requests))
        with ThreadPoolExecutor(workers, thread_name_prefix="ragmart-openai") as pool:
            futures = {
                pool.submit(self._request, client, [pieces[i].text for i in request], progress):
                request
                for request in requests
            }
            for future in as_completed(futures):
                try:
                    vectors = future.result()
                except (_Cancelled, CancelledError):
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
            reason = redact(str(failure) if isinstance(failure, _Permanent) else repr(failure))
            raise PartialEmbeddingError(
                f"openai embeddings from {self.endpoint} (model {self.model}) failed: {reason}. "
                f"{len(done)} of {len(items)} texts of this call were embedded before it.",
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
