"""The public retrieval API: `retrieve` (one question) and `Retriever` (a reader for many).

Both resolve what serves through the serving pointer (ragmart.serving.pointer): the published
snapshot when one is published, else the build database. With RAGMART_SERVING_URL set (and no
`db_path`), they read the PostgreSQL serving database instead (ragmart.retrieval.postgres), with
the same answers; unset, nothing of it is imported. `ragmart.retrieve`, `ragmart.Retriever` and
`ragmart.ALL_GROUPS` are these names (see ragmart/__init__.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ragmart.catalog import table_exists
from ragmart.config import Settings, seconds_from_env
from ragmart.duck import connect
from ragmart.embedding.providers import EmbeddingProvider, get_provider, provider_for_model
from ragmart.relations import DEFAULT_VERSION
from ragmart.retrieval.contracts import Contract, contracts_path, load_contracts
from ragmart.retrieval.fusion import check_mode, search_mode
from ragmart.retrieval.memory import ServingVectors
from ragmart.retrieval.memory_lexical import LexicalPostings
from ragmart.retrieval.reload import load_vectors
from ragmart.retrieval.request import (
    ALL_GROUPS,
    MISSING_GROUPS_DEFAULT,
    Groups,
    check_inputs,
    check_question,
)
from ragmart.retrieval.results import RetrievalError, RetrievalResult
from ragmart.retrieval.sql import Tables
from ragmart.serving.pointer import file_stamp, pointer_path, resolve_target
from ragmart.serving.postgres.settings import serving_url

__all__ = ["ALL_GROUPS", "Retriever", "retrieve"]


def _serving_models(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    if not table_exists(conn, table):
        raise RetrievalError(
            f"the serving table {table} does not exist in this database; run `dbt build` "
            "(or `make run`) first"
        )
    rows = conn.execute(f"select distinct embedding_model from {table}").fetchall()
    return [row[0] for row in rows]


def _question_provider(version: str, models: list[str], settings: Settings
                       ) -> EmbeddingProvider:
    """The provider that embeds questions for `version`: the one of the model its vectors were
    made with (the version's size is that model's), whatever provider the environment selects
    for builds, with its settings present (else EmbeddingError naming the missing one); the
    environment's for a version without rows."""
    if len(models) == 1:
        return provider_for_model(models[0], version=version)
    return get_provider(settings.embedding_provider)


def _checked(provider: EmbeddingProvider, models: list[str]) -> EmbeddingProvider:
    if models and provider.model not in models:
        raise RetrievalError(
            f"the index holds vectors of {models} but the provider {provider.name!r} embeds "
            f"with {provider.model!r}; set RAGMART_EMBEDDING_PROVIDER to the provider the "
            "index was built with"
        )
    return provider


def default_missing_allowed_groups(path: str | Path | None = None) -> str:
    """The configured rule for documents without allowed_groups when no contract is named: the
    contract file's `defaults: missing_allowed_groups` when the file exists, else deny."""
    if not contracts_path(path).is_file():
        return MISSING_GROUPS_DEFAULT
    return load_contracts(path).missing_allowed_groups


RECHECK_ENV = "RAGMART_SERVING_RECHECK_SECONDS"
DEFAULT_RECHECK_SECONDS = 2.0


def _recheck_seconds(value: float | None) -> float:
    if value is None:
        try:
            value = seconds_from_env(RECHECK_ENV)
        except ValueError as exc:
            raise RetrievalError(f"{exc}; unset it (default {DEFAULT_RECHECK_SECONDS:g}) or "
                                 "write e.g. 5") from None
        if value is None:
            return DEFAULT_RECHECK_SECONDS
    if not value >= 0:
        raise RetrievalError(f"recheck_seconds must be >= 0, got {value!r}")
    return float(value)


class Retriever:
    """A reader for many queries: one read-only connection to the database, held open.

    The database is resolved as `retrieve` does: the published snapshot (ragmart publish) when
    one serves, else $RAGMART_DB and `index_version`, or `db_path`. Without `db_path` it
    follows publishes: before a query, at most every `recheck_seconds` (default
    $RAGMART_SERVING_RECHECK_SECONDS or 2), it stats the serving pointer (serving.json) and,
    when it changed, opens the snapshot it names, loads its vectors (and the provider of that
    version's model) and only then swaps it in and closes the old connection (no query runs
    on it: a Retriever serves one thread), so a publish never fails a query; a new snapshot
    that cannot be opened is tried again at the next check while the old one keeps answering.
    With `db_path` it pins that file. With `vectors_in_memory` (the default) it copies the
    serving set's vectors into memory (ragmart.retrieval.memory: float32, 4 bytes per dimension:
    ~1.5 KB per chunk at 384 dimensions, 6 KB at 1536, 12 KB at 3072) with the rows a result
    prints (text and metadata), and live searches answer from there without search SQL; the
    answers are those of the exact search. Close it (or use `with`):
    while it is open, DuckDB's shared lock keeps writers (a `dbt build` on that file) out,
    which is why it should read a published snapshot rather than the build database. Like a
    DuckDB connection, a Retriever serves one thread at a time: give each worker thread its
    own.

    With RAGMART_SERVING_URL set and no `db_path`, it holds one connection to that PostgreSQL
    database instead (ragmart.retrieval.postgres.PostgresReader): every search reads the
    publication serving when it starts (publishes and rollbacks are followed at once), the
    question is embedded by that publication's model, and `vectors_in_memory` and
    `recheck_seconds` do not apply (pgvector's HNSW index proposes the candidates)."""

    def __init__(
        self,
        *,
        db_path: str | Path | None = None,
        index_version: str | None = None,
        contracts_path: str | Path | None = None,
        provider: EmbeddingProvider | None = None,
        vectors_in_memory: bool = True,
        recheck_seconds: float | None = None,
    ) -> None:
        settings = Settings.from_env()
        self.contracts_path = contracts_path
        self._default_missing: str | None = None
        self._given_provider = provider
        self._postgres = None
        url = serving_url() if db_path is None else None
        if url is not None:
            self._open_postgres(url, index_version)
            return
        self._follow_db: Path | None = None
        self._index_version = index_version
        self._vectors_in_memory = vectors_in_memory
        if db_path is None:
            self._follow_db = settings.db_path
            self._recheck = _recheck_seconds(recheck_seconds)
            self._pointer_seen = self._pointer_stat()
            self._checked_at = time.monotonic()
            target = resolve_target(settings.db_path, index_version)
            path, version = target.database, target.version
        else:
            path, version = Path(db_path), index_version or DEFAULT_VERSION
        self.path, self.tables, self.conn, self.vectors, self.provider = self._open(path, version)

    def _open(self, path: Path, version: str) -> tuple[
            Path, Tables, duckdb.DuckDBPyConnection, ServingVectors | None, EmbeddingProvider]:
        tables = Tables.for_version(version)
        if not path.exists():
            raise RetrievalError(
                f"database {path} does not exist; run `make run` or `dbt build`")
        conn = connect(path, read_only=True)
        try:
            models = _serving_models(conn, tables.serving)
            # the question is embedded by the model of the version searched (a v2 at another
            # size has another model), unless the caller gave a provider
            provider = _checked(self._given_provider or _question_provider(
                version, models, Settings.from_env()), models)
            vectors = (load_vectors(conn, tables.serving, getattr(self, "vectors", None),
                                    tables.documents)
                       if self._vectors_in_memory else None)
            LexicalPostings.attach(conn, tables, vectors)  # lexical and hybrid, in memory
        except BaseException:
            conn.close()
            raise
        return path, tables, conn, vectors, provider

    def _open_postgres(self, url: str, index_version: str | None) -> None:
        from ragmart.retrieval.postgres import PostgresReader, embedding_models

        self._postgres = reader = PostgresReader(url, index_version=index_version)
        self._follow_db = None
        self._providers: dict[int, EmbeddingProvider] = {}
        self._embedding_models = embedding_models
        at = reader.serving()
        self.path, self.conn, self.vectors = None, reader.conn, None
        self.tables = Tables.for_version(at.version)
        try:
            self.provider = self._postgres_provider(at)
        except BaseException:
            reader.close()
            raise

    def _postgres_provider(self, at: Any) -> EmbeddingProvider:
        """The provider embedding questions for publication `at` (its vectors' model)."""
        if at.publication not in self._providers:
            models = self._embedding_models(self.conn, at)
            self._providers[at.publication] = _checked(
                self._given_provider or _question_provider(at.version, models,
                                                           Settings.from_env()), models)
        return self._providers[at.publication]

    def _pointer_stat(self) -> tuple[int, int, int] | None:
        return file_stamp(pointer_path(self._follow_db))

    def _follow_publishes(self) -> None:
        """Swap in the snapshot serving.json names now, if it changed (see the class doc)."""
        if self._follow_db is None or time.monotonic() - self._checked_at < self._recheck:
            return
        self._checked_at = time.monotonic()
        seen = self._pointer_stat()
        if seen == self._pointer_seen:
            return
        try:
            target = resolve_target(self._follow_db, self._index_version)
            if target.database == self.path and target.version == self.tables.version:
                self._pointer_seen = seen
                return
            opened = self._open(target.database, target.version)
        except Exception:  # keep answering from what is open; try again at the next check
            return
        old = self.conn
        self.path, self.tables, self.conn, self.vectors, self.provider = opened
        self._pointer_seen = seen
        old.close()

    def search(
        self,
        query_vector: np.ndarray | Sequence[float],
        *,
        k: int = 5,
        doc_types: Sequence[str] | None = None,
        contract: str | Contract | None = None,
        groups: Groups = None,
        as_of: dt.datetime | None = None,
        now: dt.datetime | None = None,
        mode: str | None = None,
        question: str | None = None,
    ) -> RetrievalResult:
        """`search_contract` on this reader's connection, tables and in-memory vectors, for a
        caller in `groups` (None: no group; ALL_GROUPS: the operator switch). `mode`: vector,
        lexical or hybrid (ragmart.retrieval.fusion; lexical and hybrid need `question`, the
        text `query_vector` embeds); None: hybrid with a question and a full-text index,
        else vector (ragmart.retrieval.fusion.resolve_mode; on PostgreSQL serving, with
        published BM25 statistics: ragmart.retrieval.postgres.search_mode)."""
        return self._search(query_vector, k=k, doc_types=doc_types, contract=contract,
                            groups=groups, as_of=as_of, now=now, mode=mode, question=question)

    def _search(self, query_vector: np.ndarray | Sequence[float], *, k: int = 5,
                doc_types: Sequence[str] | None = None, contract: str | Contract | None = None,
                groups: Groups = None, as_of: dt.datetime | None = None,
                now: dt.datetime | None = None, mode: str | None = None,
                question: str | None = None, at: Any = None) -> RetrievalResult:
        check_inputs(k, groups, doc_types, as_of)
        self._follow_publishes()
        resolved = (load_contracts(self.contracts_path).get(contract)
                    if isinstance(contract, str) else contract)
        if resolved is not None:
            missing = resolved.missing_allowed_groups
        else:  # read once per reader, like the snapshot it pins
            if self._default_missing is None:
                self._default_missing = default_missing_allowed_groups(self.contracts_path)
            missing = self._default_missing
        if self._postgres is not None:
            return self._postgres.search(query_vector, k=k, contract=resolved, groups=groups,
                                         doc_types=doc_types, as_of=as_of, now=now, at=at,
                                         missing_allowed_groups=missing, mode=mode,
                                         question=question)
        if as_of is not None:
            for table in (self.tables.history, self.tables.access):
                if not table_exists(self.conn, table):
                    raise RetrievalError(
                        f"--as-of needs {table}, which this database lacks; run `dbt build`")
        return search_mode(self.conn, question, query_vector,
                           mode=mode,
                           k=k, contract=resolved, groups=groups, doc_types=doc_types,
                           as_of=as_of, now=now, tables=self.tables, vectors=self.vectors,
                           missing_allowed_groups=missing)

    def retrieve(self, question: str, **options: Any) -> RetrievalResult:
        """Embed `question` with the provider the index was built with, then `search` in
        `mode` (option mode=: vector, lexical or hybrid; default: fusion.resolve_mode)."""
        check_question(question)
        check_inputs(options.get("k", 5), options.get("groups"), options.get("doc_types"),
                      options.get("as_of"))
        options["mode"] = check_mode(options.get("mode"))
        if self._postgres is not None:  # the model of the publication the search will read
            at = self._postgres.serving()
            self.provider = self._postgres_provider(at)
            return self._search(self.provider.embed([question])[0], at=at, question=question,
                                **options)
        return self.search(self.provider.embed([question])[0], question=question, **options)

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()
            return
        self.conn.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retrieve(
    question: str,
    *,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
    contract: str | Contract | None = None,
    groups: Groups = None,
    as_of: dt.datetime | None = None,
    db_path: str | Path | None = None,
    index_version: str | None = None,
    contracts_path: str | Path | None = None,
    provider: EmbeddingProvider | None = None,
    now: dt.datetime | None = None,
    mode: str | None = None,
) -> RetrievalResult:
    """Embed `question` with the provider the index was built with and return the top k
    chunks eligible under `contract` (a name in the contract file, or a Contract) for a
    caller in `groups` (None or []: no group, never every group; ALL_GROUPS: the operator
    switch that admits every document), from the versions live now or at `as_of` (naive UTC),
    or an abstention (`.abstained`, `.reason`) when nothing is eligible, in the database
    `db_path` and index version `index_version`. Without `db_path`, the published snapshot
    serves when one is published (ragmart publish), else $RAGMART_DB with `index_version`
    (default v1): readers never open the database a build is writing. With RAGMART_SERVING_URL
    set and no `db_path`, the PostgreSQL serving database answers (see Retriever). `mode`:
    vector, lexical or hybrid (default hybrid, vector on a database without a full-text index:
    ragmart.retrieval.fusion.resolve_mode; on PostgreSQL serving alike). One query: the
    index proposes candidates (a process answering many queries should hold a Retriever)."""
    check_question(question)
    check_inputs(k, groups, doc_types, as_of)
    mode = check_mode(mode)
    if isinstance(contract, str):
        contract = load_contracts(contracts_path).get(contract)
    with Retriever(db_path=db_path, index_version=index_version, contracts_path=contracts_path,
                   provider=provider, vectors_in_memory=False) as reader:
        return reader.retrieve(question, k=k, doc_types=doc_types, contract=contract,
                               groups=groups, as_of=as_of, now=now, mode=mode)
