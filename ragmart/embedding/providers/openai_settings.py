"""The openai provider's settings, read from the environment and checked in one place.

Constructor keywords of ``OpenAIProvider`` override the environment:

* ``RAGMART_OPENAI_MODEL`` (text-embedding-3-small), ``RAGMART_OPENAI_DIMENSIONS`` (384):
  the vectors are recorded as ``<model>@<dimensions>`` (:func:`model_name`), the cache key
  with chunk_hash.
* ``RAGMART_OPENAI_BASE_URL``, else ``OPENAI_BASE_URL``, else the OpenAI API.
* ``RAGMART_OPENAI_LONG_TEXT``, ``..._MAX_CONCURRENCY``, ``..._BATCH_SIZE``, ``..._MAX_RETRIES``,
  ``..._BACKOFF_BASE``, ``..._BACKOFF_MAX``, ``..._TIMEOUT``, ``..._ENCODING_FORMAT``: see
  ``ragmart.embedding.providers.openai`` and ``openai_client``.
* ``OPENAI_API_KEY`` is not a setting: the client reads it when the first request is made.

Tokens are *estimated* without a tokenizer (tiktoken is not installed) as
``ceil(utf-8 bytes / 3)``: English runs about 4 bytes per token, so the estimate over-counts,
but a text dense in rare characters can exceed it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODEL_ENV = "RAGMART_OPENAI_MODEL"
DIMENSIONS_ENV = "RAGMART_OPENAI_DIMENSIONS"
BASE_URL_ENV = "RAGMART_OPENAI_BASE_URL"
CLIENT_BASE_URL_ENV = "OPENAI_BASE_URL"
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
DEFAULT_ENDPOINT = "https://api.openai.com/v1"
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
    """The name recorded on the vectors: the API model at a size is a model of its own."""
    return f"{model}@{dimensions}"


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

    @property
    def endpoint(self) -> str:
        return self.base_url or DEFAULT_ENDPOINT

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
