"""The PostgreSQL serving target: RAGMART_SERVING_URL, and how it is shown (never with its
password).

The URL is a secret-bearing string (`postgresql://user:password@host/db`): every message that
names the target shows `masked(url)`, and an error raised by the driver is re-raised with the
URL masked out of its text (`connect`)."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from ragmart.serving.pointer import ServingError

SERVING_URL_ENV = "RAGMART_SERVING_URL"
SCHEMA = "ragmart"
# the most maintenance_work_mem a publish (or a purge's VACUUM FULL) gives an HNSW build
BUILD_MEMORY_ENV = "RAGMART_PG_MAX_BUILD_MEMORY"
BUILD_MEMORY_DEFAULT = "4GB"
# the HNSW index's build parameters, when set (else ragmart.serving.postgres.schema.hnsw_build's
# rule by the table's size); pgvector's bounds: m 2-100, ef_construction 4-1000 and >= 2 * m
HNSW_M_ENV = "RAGMART_PG_HNSW_M"
HNSW_EF_CONSTRUCTION_ENV = "RAGMART_PG_HNSW_EF_CONSTRUCTION"
_HNSW_BOUNDS = {HNSW_M_ENV: (2, 100), HNSW_EF_CONSTRUCTION_ENV: (4, 1000)}
_SIZE = re.compile(r"\s*(\d+)\s*(B|kB|MB|GB|TB)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


class PostgresServingError(ServingError):
    """A PostgreSQL serving target that cannot be used, or a publish, rollback or purge it
    refused (the message says what to do): an error of the command's input, not of ragmart."""


def serving_url() -> str | None:
    """RAGMART_SERVING_URL, or None when unset or blank (DuckDB serving, as without it)."""
    url = os.environ.get(SERVING_URL_ENV, "").strip()
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise PostgresServingError(
            f"{SERVING_URL_ENV}={masked(url)!r} is not a PostgreSQL URL; write "
            "postgresql://user:password@host:5432/database (or unset it to serve from DuckDB)")
    return url


def max_build_memory() -> int:
    """RAGMART_PG_MAX_BUILD_MEMORY in bytes (PostgreSQL's size units: 2GB, 512MB, 65536kB; a
    bare number is kB, as in postgresql.conf; unset or blank: BUILD_MEMORY_DEFAULT);
    PostgresServingError when it is not a size."""
    value = os.environ.get(BUILD_MEMORY_ENV, "").strip() or BUILD_MEMORY_DEFAULT
    match = _SIZE.fullmatch(value)
    if match is None or int(match.group(1)) == 0:
        raise PostgresServingError(
            f"{BUILD_MEMORY_ENV}={value!r} is not a memory size; write e.g. 2GB or 512MB (the "
            "most maintenance_work_mem a publish gives an HNSW index build)")
    return int(match.group(1)) * _UNITS[(match.group(2) or "kB").lower()]


def hnsw_settings() -> tuple[int | None, int | None]:
    """(RAGMART_PG_HNSW_M, RAGMART_PG_HNSW_EF_CONSTRUCTION) as integers, None for one unset or
    blank; PostgresServingError for a value pgvector would refuse, or for both set with
    ef_construction below 2 * m (pgvector's own rule)."""
    values: dict[str, int | None] = {}
    for name, (low, high) in _HNSW_BOUNDS.items():
        text = os.environ.get(name, "").strip()
        if not text:
            values[name] = None
            continue
        if not text.isdigit() or not low <= int(text) <= high:
            raise PostgresServingError(
                f"{name}={text!r} is not an integer from {low} to {high} (pgvector's bounds "
                "for the HNSW index's build parameter); unset it for ragmart's choice by size")
        values[name] = int(text)
    m, ef_construction = values[HNSW_M_ENV], values[HNSW_EF_CONSTRUCTION_ENV]
    if m is not None and ef_construction is not None and ef_construction < 2 * m:
        raise PostgresServingError(
            f"{HNSW_EF_CONSTRUCTION_ENV}={ef_construction} is below twice {HNSW_M_ENV}={m}; "
            "pgvector builds an HNSW index only with ef_construction >= 2 * m")
    return m, ef_construction


_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def masked(url: str) -> str:
    """`url` with its password (in the authority or a `password=` parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error message) with the URL and its password masked out."""
    text = text.replace(url, masked(url))
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return _PASSWORD_PARAM.sub(r"\1***", text)


def connect(url: str, *, autocommit: bool = False):
    """A psycopg connection to the serving target; PostgresServingError (URL masked) when it
    cannot be opened."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=autocommit)
    except psycopg.Error as exc:
        raise PostgresServingError(
            f"cannot connect to the serving database {masked(url)} ({SERVING_URL_ENV}): "
            f"{scrub(str(exc), url)}") from None
