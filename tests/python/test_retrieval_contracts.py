"""Retrieval contracts: every clause, abstention, access control (live, as-of and SQL), the HNSW
strategy's recall, Python/SQL identity, hostile inputs and determinism.

Most tests run on a tiny database built directly in a tmp dir with the marts' contracted
schemas (read from models/marts/*.yml), against a reference implementation of eligibility in
plain Python; one test runs a real `dbt build`. The tests taking the fixture `search` (and
`sql_rows`) run on both serving engines: DuckDB, and PostgreSQL + pgvector with the tiny
database published to it once per module (issue 15: one test suite, both engines).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import jinja2
import numpy as np
import pyarrow as pa
import pytest
import yaml
from cdc_files import debezium_jsonl, dms_csv, document, paragraph
from dbt_harness import ROOT, Project

from ragmart.cli import main as cli
from ragmart.duck import connect
from ragmart.embedding.providers import HashingProvider
from ragmart.exit_codes import Exit
from ragmart.retrieval import planner
from ragmart.retrieval import postgres as postgres_retrieval
from ragmart.retrieval.api import ALL_GROUPS, Retriever, retrieve
from ragmart.retrieval.clauses import CLAUSES
from ragmart.retrieval.contracts import (
    Contract,
    ContractError,
    load_contracts,
    parse_contracts,
)
from ragmart.retrieval.execution import ELIGIBILITY_TTL, search_contract
from ragmart.retrieval.macro import install_sql_macros
from ragmart.retrieval.memory import ReadOnlyRequiredError, ServingVectors
from ragmart.retrieval.postgres_sql import postgres_type
from ragmart.retrieval.results import RetrievalError, RetrievedChunk
from ragmart.retrieval.sql import Tables, parameter_types

DIMS = 384
MODEL = HashingProvider().model
NOW = dt.datetime(2026, 11, 20, 12, 0, 0)
T0 = dt.datetime(2026, 11, 1, 9, 0, 0)
TABLES = Tables.for_version("v1")


# =========================================================================== tiny database


def _mart_columns() -> dict[str, list[tuple[str, str]]]:
    """Column names and types of every contracted mart, from the models' YAML, rendered as dbt
    renders them for the hash provider (the embedding's size is the provider's)."""
    env = {"RAGMART_EMBEDDING_PROVIDER": "hash"}
    render = {"env_var": lambda name, default=None: env.get(name, default),
              "var": lambda name, default=None: default}
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((ROOT / "models" / "marts").glob("_*.yml")):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            columns = model.get("columns") or []
            if columns and all("data_type" in c for c in columns):
                out[model["name"]] = [(c["name"], jinja2.Template(c["data_type"]).render(render))
                                      for c in columns]
    return out


def _unit(rng: np.random.Generator, centre: np.ndarray | None = None, noise: float = 1.0):
    v = rng.normal(size=DIMS)
    if centre is not None:
        v = centre + noise * v / np.linalg.norm(v)
    return (v / np.linalg.norm(v)).astype(np.float32)


# documents: id -> list of versions (valid_from offset in minutes, attributes); a version with
# deleted=True is a tombstone
DOCUMENTS: dict[str, list[dict]] = {
    "pol-travel": [
        {"at": 0, "type": "policy", "groups": ["all-staff"], "title": "Travel v1"},
        {"at": 60, "type": "policy", "groups": ["all-staff"], "title": "Travel v2",
         "metadata": {"source_path": "policies/travel.md", "owner": "finance"}},
    ],
    "pol-hr-only": [{"at": 10, "type": "policy", "groups": ["hr"], "title": "HR cases"}],
    "pol-restricted-later": [
        {"at": 5, "type": "policy", "groups": ["all-staff"], "title": "Salary bands v1"},
        {"at": 120, "type": "policy", "groups": ["hr"], "title": "Salary bands v2"},
    ],
    "hb-open": [{"at": 15, "type": "handbook", "groups": None, "title": "Open handbook"}],
    "hb-nobody": [{"at": 20, "type": "handbook", "groups": [], "title": "Nobody"}],
    "hb-untitled": [{"at": 25, "type": "handbook", "groups": ["all-staff"], "title": None}],
    "pol-ancient": [{"at": -60 * 24 * 400, "type": "policy", "groups": ["all-staff"],
                     "title": "Ancient"}],
    "proc-deleted": [
        {"at": 30, "type": "procedure", "groups": ["all-staff"], "title": "Gone"},
        {"at": 90, "deleted": True},
    ],
    # narrowed to hr, then deleted: all-staff never sees it again, at any time
    "pol-narrowed-deleted": [
        {"at": 5, "type": "policy", "groups": ["all-staff"], "title": "Layoffs v1"},
        {"at": 40, "type": "policy", "groups": ["hr"], "title": "Layoffs v2"},
        {"at": 100, "deleted": True},
    ],
    # deleted by an event whose own image narrows access to security
    "pol-tombstone-narrowed": [
        {"at": 6, "type": "policy", "groups": ["all-staff"], "title": "Audit findings"},
        {"at": 50, "deleted": True, "groups": ["security"]},
    ],
}
# chunk layouts per version: (section_chunk_index, section_chunk_count, is_split_paragraph)
LAYOUT = [(0, 1, False), (0, 3, False), (1, 3, False), (2, 3, True), (0, 1, False),
          (0, 2, True), (1, 2, False)]


def _versions() -> list[dict]:
    """Every version with its valid_from/valid_to and sequence (document_version)."""
    out = []
    seq = 0
    for doc_id, versions in DOCUMENTS.items():
        for i, version in enumerate(versions):
            seq += 1
            nxt = versions[i + 1] if i + 1 < len(versions) else None
            out.append({
                **version,
                "document_id": doc_id,
                "document_version": 100 * (list(DOCUMENTS).index(doc_id) + 1) + i,
                "valid_from": T0 + dt.timedelta(minutes=version["at"]),
                "valid_to": T0 + dt.timedelta(minutes=nxt["at"]) if nxt else None,
                "is_current": nxt is None and not version.get("deleted"),
                "latest": nxt is None,
            })
    return out


def latest_known_groups() -> dict[str, list[str] | None]:
    """Per document, the allowed_groups of its latest known state (dim_document_access): the
    latest event's, a delete without groups keeping the last version's."""
    out: dict[str, list[str] | None] = {}
    for version in _versions():  # in order of document_version within a document
        if version.get("deleted") and version.get("groups") is None:
            continue
        out[version["document_id"]] = version.get("groups")
    return out


def _access_rows() -> list[dict]:
    latest = {v["document_id"]: v for v in _versions() if v["latest"]}
    return [{"document_id": d, "latest_document_version": v["document_version"],
             "allowed_groups": latest_known_groups()[d], "is_deleted": bool(v.get("deleted")),
             "latest_event_at": v["valid_from"]} for d, v in latest.items()]


def _chunks(rng: np.random.Generator) -> list[dict]:
    """Chunk rows (with vectors) of every non-deleted version. Chunks cluster around a few
    topics so that the nearest neighbours of a query mix documents."""
    topics = [_unit(rng) for _ in range(3)]
    rows = []
    for version in _versions():
        if version.get("deleted"):
            continue
        for index, (sci, scc, split) in enumerate(LAYOUT):
            vector = _unit(rng, topics[(index + len(version["document_id"])) % 3], 1.2)
            rows.append({
                **version,
                "chunk_id": f"{version['document_id']}@{version['document_version']}#{index:04d}",
                "chunk_index": index,
                "section": "" if index == 6 else f"Section {sci}",
                "section_chunk_index": sci,
                "section_chunk_count": scc,
                "is_split_paragraph": split,
                "embedding": vector,
            })
    # a tie: the same vector under two chunk ids (ordered by chunk_id)
    twin = next(r for r in rows if r["chunk_id"] == "pol-travel@101#0001")
    rows.append({**twin, "chunk_id": "pol-travel@101#0099", "chunk_index": 99})
    return rows


def _value(column: str, row: dict, *, live: bool) -> object:
    meta = row.get("metadata")
    values = {
        "chunk_id": row.get("chunk_id"), "document_id": row["document_id"],
        "document_version": row["document_version"], "document_checksum": "sha",
        "chunk_index": row.get("chunk_index"), "chunker_version": "md-sections-v1",
        "chunk_hash": f"h-{row.get('chunk_id')}", "section": row.get("section"),
        "section_type": "other", "chunk_text": f"text of {row.get('chunk_id')}",
        "word_count": 50, "section_chunk_index": row.get("section_chunk_index"),
        "section_chunk_count": row.get("section_chunk_count"),
        "is_split_paragraph": row.get("is_split_paragraph"),
        "document_type": row.get("type"), "title": row.get("title"),
        "allowed_groups": row.get("groups"),
        "document_updated_at": row["valid_from"], "updated_at": row["valid_from"],
        "document_valid_from": row["valid_from"], "valid_from": row["valid_from"],
        "document_valid_to": None if live else row["valid_to"],
        "superseded_by_version": None, "metadata": json.dumps(meta) if meta else None,
        "embedding_model": MODEL,
        "embedding": [float(x) for x in row["embedding"]] if "embedding" in row else None,
        "created_at": row["valid_from"], "embedding_invocation_id": "test",
        "chunk_created_at": row["valid_from"], "chunk_invocation_id": "test",
        "dbt_invocation_id": "test", "indexed_at": T0, "version_number": 1,
        "content_length": 100,
    }
    return values.get(column)  # a column added to a mart later: NULL here


def _insert(conn, table: str, records: list[dict]) -> None:
    """Insert through Arrow (binding Python lists of floats one row at a time is slow)."""
    if not records:
        return
    arrow = pa.Table.from_pylist(records)  # noqa: F841 - read by the SQL below
    conn.execute(f"insert into {table} by name select * from arrow")


def build_tiny_database(path: Path, *, seed: int = 11, index: bool = True,
                        delta_share: float = 0.0) -> list[dict]:
    """The tiny serving database; returns its chunk rows (the reference data)."""
    rng = np.random.default_rng(seed)
    chunks = _chunks(rng)
    schemas = _mart_columns()
    tables = {
        TABLES.serving: ("fct_chunk_embeddings", [c for c in chunks if c["is_current"]], True),
        TABLES.history: ("fct_chunk_history", chunks, False),
        TABLES.documents: ("dim_documents", [v for v in _versions() if v["is_current"]], True),
    }
    conn = connect(path)
    try:
        for table, (model, rows, live) in tables.items():
            columns = schemas[model]
            ddl = ", ".join(f'"{name}" {kind}' for name, kind in columns)
            key = "document_id" if model == "dim_documents" else "chunk_id"
            conn.execute(f"create table {table} ({ddl}, primary key ({key}))")
            names = [name for name, _ in columns]
            _insert(conn, table, [{n: _value(n, r, live=live) for n in names} for r in rows])
        access = schemas[TABLES.access]
        ddl = ", ".join(f'"{name}" {kind}' for name, kind in access)
        conn.execute(f"create table {TABLES.access} ({ddl}, primary key (document_id))")
        _insert(conn, TABLES.access, _access_rows())
        served = [c for c in chunks if c["is_current"]]
        cut = len(served) - int(len(served) * delta_share)
        for table, rows in ((TABLES.index, served[:cut]), (TABLES.delta, served[cut:])):
            conn.execute(f"create table {table} (chunk_id varchar primary key, "
                         f"embedding float[{DIMS}], indexed_at timestamp, "
                         "dbt_invocation_id varchar)")
            _insert(conn, table, [
                {"chunk_id": r["chunk_id"], "embedding": [float(x) for x in r["embedding"]],
                 "indexed_at": T0, "dbt_invocation_id": "t"} for r in rows
            ])
        if index:
            conn.execute(f"create index {TABLES.index}_hnsw on {TABLES.index} using hnsw "
                         "(embedding) with (metric = 'cosine')")
        install_sql_macros(conn, DIMS, TABLES)
        conn.execute("checkpoint")
    finally:
        conn.close()
    return chunks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[dict]]:
    path = tmp_path_factory.mktemp("tiny") / "ragmart.duckdb"
    return path, build_tiny_database(path)


@pytest.fixture
def conn(tiny):
    connection = connect(tiny[0], read_only=True)
    yield connection
    connection.close()


@pytest.fixture
def vectors(conn) -> ServingVectors:
    """The serving vectors in memory (what a Retriever keeps), from the read-only `conn`."""
    return ServingVectors.load(conn, TABLES.serving)


ENGINES = ("duckdb", "postgres")


@pytest.fixture(scope="module")
def tiny_postgres(tiny, postgres_server) -> Iterator[str]:
    """The tiny database published (ragmart.serving.postgres.publish_version) to a PostgreSQL
    database of this module's own; its URL."""
    from urllib.parse import urlsplit, urlunsplit

    psycopg = pytest.importorskip("psycopg")
    from ragmart.serving.postgres.publish import publish_version

    name = f"ragmart_tiny_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = urlunsplit(urlsplit(postgres_server)._replace(path="/" + name))
    publish_version(tiny[0], "v1", url)
    yield url
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def engine_conn(engine, tiny, request) -> Iterator:
    """A connection to the tiny database on the engine under test (DuckDB read-only, or
    psycopg to its PostgreSQL copy)."""
    if engine == "duckdb":
        connection = connect(tiny[0], read_only=True)
    else:
        import psycopg

        connection = psycopg.connect(request.getfixturevalue("tiny_postgres"), autocommit=True)
    yield connection
    connection.close()


@pytest.fixture
def search(engine, engine_conn):
    """`search_contract` of the engine under test, on the tiny database."""
    run = search_contract if engine == "duckdb" else postgres_retrieval.search_contract
    return functools.partial(run, engine_conn)


@pytest.fixture
def sql_rows(engine, engine_conn):
    """The SQL path of the engine under test, as dicts: DuckDB's table macro or PostgreSQL's
    function ragmart.retrieve, with the same arguments."""
    def run(q: np.ndarray, contract: Contract | None, **options) -> list[dict]:
        sql, params = (_macro_call if engine == "duckdb" else _function_call)(
            contract, **options)
        cursor = engine_conn.execute(sql, {**params, "q": _vector_text(q)})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return run


# =========================================================================== reference


def completeness(row: dict) -> str:
    if row["is_split_paragraph"] or not 0 <= row["section_chunk_index"] < \
            row["section_chunk_count"]:
        return "fragment"
    return "section" if row["section_chunk_count"] == 1 else "paragraph"


LEVELS = ["fragment", "paragraph", "section"]


def _admits(groups: list[str] | None, caller: list[str], missing: str) -> bool:
    if groups is None:
        return missing == "allow"
    return bool(set(groups) & set(caller))


def visible(row: dict, groups, missing: str = "deny") -> bool:
    """The access rule in plain Python: the version's own groups and its document's latest
    known ones must both admit the caller (None: no group); ALL_GROUPS admits everything."""
    if groups is ALL_GROUPS:
        return True
    caller = list(groups or [])
    return _admits(row["groups"], caller, missing) and \
        _admits(latest_known_groups()[row["document_id"]], caller, missing)


def reference(rows: list[dict], query: np.ndarray, contract: Contract | None, *,
              groups, k: int, as_of: dt.datetime | None = None,
              now: dt.datetime = NOW, doc_types: list[str] | None = None) -> list[str]:
    """Exact eligible top-k in plain Python: what every search must return."""
    out = []
    for row in rows:
        if as_of is None:
            if not row["is_current"]:
                continue
        elif not (row["valid_from"] <= as_of and (row["valid_to"] is None
                                                   or row["valid_to"] > as_of)):
            continue
        if not visible(row, groups, contract.missing_allowed_groups if contract else "deny"):
            continue
        if doc_types and row["type"] not in doc_types:
            continue
        distance = float(1.0 - np.dot(row["embedding"], query) / (
            np.linalg.norm(row["embedding"]) * np.linalg.norm(query)))
        if contract is not None:
            if contract.document_types and row["type"] not in contract.document_types:
                continue
            meta = row.get("metadata") or {}
            fields = {"title": row["title"], "document_type": row["type"],
                      "allowed_groups": row["groups"], "document_updated_at": row["valid_from"],
                      "section": row["section"] or None}
            if any((fields[f] if f in fields else meta.get(f)) in (None, "")
                   for f in contract.required_metadata):
                continue
            reference_time = as_of or now
            if contract.max_document_age is not None and \
                    row["valid_from"] < reference_time - contract.max_document_age:
                continue
            if contract.min_document_version is not None and \
                    row["document_version"] < contract.min_document_version:
                continue
            if contract.min_effective_date is not None and \
                    row["valid_from"] < contract.min_effective_date:
                continue
            if LEVELS.index(completeness(row)) < LEVELS.index(contract.min_chunk_completeness):
                continue
            if contract.min_similarity is not None and \
                    distance > 1.0 - contract.min_similarity + 1e-6:
                continue
        out.append((distance, row["chunk_id"]))
    out.sort()
    return [chunk_id for _, chunk_id in out[:k]]


def _ids(result) -> list[str]:
    return [c.chunk_id for c in result]


def queries(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_unit(rng) for _ in range(n)]


def _assert_matches_reference(search, rows, contract, *, groups, k=5, as_of=None,
                              doc_types=None, n_queries=6, vectors=None) -> None:
    """Every search path (the planned one; with `vectors`, the in-memory candidates too)
    returns the reference's rows; the two paths return identical rows and distances."""
    for q in queries(n_queries):
        result = search(q, k=k, contract=contract, groups=groups, as_of=as_of,
                                 doc_types=doc_types, now=NOW)
        want = reference(rows, q, contract, groups=groups, k=k, as_of=as_of,
                         doc_types=doc_types)
        got = _ids(result)
        # equal up to float rounding at the very boundary of a tie
        assert got == want, (contract, got, want)
        if vectors is not None:
            memory = search(q, k=k, contract=contract, groups=groups,
                                     as_of=as_of, doc_types=doc_types, now=NOW,
                                     vectors=vectors)
            assert memory.chunks == result.chunks, (contract, _ids(memory), got)
            assert memory.abstained == result.abstained and memory.reason == result.reason
            if as_of is None and (got or memory.strategy != "none"):
                assert memory.strategy == "memory"
        if want:
            assert not result.abstained
        distances = [(c.distance, c.chunk_id) for c in result]
        assert distances == sorted(distances)


# =========================================================================== contract file


def test_the_project_contract_file_is_valid() -> None:
    contracts = load_contracts(ROOT / "retrieval_contracts.yml")
    assert "policy_answers" in contracts.contracts
    for contract in contracts.contracts.values():
        assert contract.missing_allowed_groups in ("deny", "allow")


def test_contract_file_errors_name_the_contract_and_field_all_at_once(tmp_path) -> None:
    document = {
        "version": 1,
        "defaults": {"missing_allowed_groups": "maybe"},
        "contracts": {
            "policy_answers": {
                "document_types": "policy",  # not a list
                "min_similarity": 2,
                "min_chunk_completeness": "whole",
                "max_document_age": "soon",
                "min_document_version": -1,
                "min_effective_date": "yesterday",
                "required_metadata": ["title", "bad field"],
                "acess": {},  # typo
            },
            "Bad-Name": {},
            "open": {"access": {"missing_allowed_groups": "perhaps", "extra": 1}},
        },
    }
    with pytest.raises(ContractError) as caught:
        parse_contracts(document, path="retrieval_contracts.yml")
    message = str(caught.value)
    for needle in (
        "contract 'policy_answers', field 'document_types'",
        "contract 'policy_answers', field 'min_similarity'",
        "contract 'policy_answers', field 'min_chunk_completeness'",
        "contract 'policy_answers', field 'max_document_age'",
        "contract 'policy_answers', field 'min_document_version'",
        "contract 'policy_answers', field 'min_effective_date'",
        "'bad field' is not a field name",
        "unknown field 'acess' (did you mean 'access'?)",
        "contract 'Bad-Name': the name must be lowercase",
        "contract 'open', field 'access.missing_allowed_groups'",
        "unknown field 'extra'",
        "defaults, field 'missing_allowed_groups'",
    ):
        assert needle in message, (needle, message)

    bad = tmp_path / "contracts.yml"
    bad.write_text("version: 1\ncontracts: [")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contracts(bad)
    with pytest.raises(ContractError, match="version: 1"):
        parse_contracts({"contracts": {"a": {}}})
    with pytest.raises(ContractError, match="not found"):
        load_contracts(tmp_path / "missing.yml")
    good = parse_contracts({"version": 1, "contracts": {"policy_answers": {
        "max_document_age": "12 hours", "min_effective_date": dt.date(2026, 1, 2)}}})
    with pytest.raises(ContractError, match="unknown retrieval contract 'policy_answer'.*"
                                            "Did you mean 'policy_answers'"):
        good.get("policy_answer")
    contract = good.get("policy_answers")
    assert contract.max_document_age == dt.timedelta(hours=12)
    assert contract.min_effective_date == dt.datetime(2026, 1, 2)
    assert contract.missing_allowed_groups == "deny"  # the default: deny


# =========================================================================== clauses

OPEN = {"missing_allowed_groups": "allow"}
CALLER = ["all-staff", "hr"]


@pytest.mark.parametrize("clauses", [
    {},
    {"document_types": ("policy",)},
    {"document_types": ("handbook", "procedure")},
    {"required_metadata": ("title",)},
    {"required_metadata": ("source_path", "owner")},
    {"required_metadata": ("section",)},
    {"required_metadata": ("allowed_groups", "document_updated_at", "document_type")},
    {"max_document_age": dt.timedelta(days=30)},
    {"min_document_version": 301},
    {"min_effective_date": T0 + dt.timedelta(minutes=16)},
    {"min_chunk_completeness": "paragraph"},
    {"min_chunk_completeness": "section"},
    {"min_similarity": 0.05},
    {"document_types": ("policy",), "min_chunk_completeness": "paragraph",
     "max_document_age": dt.timedelta(days=60), "required_metadata": ("title",)},
])
def test_each_clause_returns_the_exact_eligible_top_k(search, engine, tiny, request,
                                                      clauses) -> None:
    contract = Contract(name="case", **OPEN, **clauses)
    vectors = request.getfixturevalue("vectors") if engine == "duckdb" else None
    _assert_matches_reference(search, tiny[1], contract, groups=CALLER, k=5, vectors=vectors)


def test_clauses_actually_exclude(conn, tiny) -> None:
    """Each clause of the parametrized test changes the answer for some query (the reference
    is not vacuous)."""
    rows = tiny[1]
    base = Contract(name="base", **OPEN)
    for clauses in ({"document_types": ("handbook",)}, {"min_chunk_completeness": "section"},
                    {"max_document_age": dt.timedelta(days=30)},
                    {"required_metadata": ("source_path",)}, {"min_similarity": 0.05}):
        contract = replace(base, **clauses)
        assert any(
            reference(rows, q, contract, groups=CALLER, k=5)
            != reference(rows, q, base, groups=CALLER, k=5)
            for q in queries(6)
        ), clauses


def test_completeness_levels_follow_the_chunker_columns(search, tiny) -> None:
    q = queries(1)[0]
    for level, allowed in (("section", {"section"}), ("paragraph", {"section", "paragraph"}),
                           ("fragment", {"section", "paragraph", "fragment"})):
        result = search(q, k=50, groups=CALLER, now=NOW,
                        contract=Contract(name="c", min_chunk_completeness=level, **OPEN))
        assert {c.completeness for c in result} <= allowed
        assert len(result) > 0


def test_returns_exactly_k_even_when_the_nearest_chunks_are_ineligible(
        search, engine, tiny, request) -> None:
    """The plain vss pattern (WHERE after an HNSW top-k) comes back short here; a contract
    search never does."""
    rows = tiny[1]
    handbook_only = Contract(name="hb", document_types=("handbook",), **OPEN)
    eligible = len([r for r in rows if r["is_current"] and r["type"] == "handbook"
                    and _admits(r["groups"], CALLER, "allow")])
    assert eligible >= 10
    # a k above the eligible count returns every eligible chunk, no more
    result = search(queries(1)[0], k=eligible + 5, contract=handbook_only, groups=CALLER,
                    now=NOW)
    assert len(result) == eligible and not result.abstained
    for q in queries(10, seed=8):
        assert len(search(q, k=10, contract=handbook_only, groups=CALLER, now=NOW)) == 10
    if engine != "duckdb":
        return
    conn = request.getfixturevalue("conn")
    vectors = ServingVectors.load(conn, TABLES.serving)
    for q in queries(10, seed=8):
        # the in-memory pool widens past ineligible chunks (here: only paragraphs and whole
        # sections of handbooks) until k remain, and answers as the exact search does
        strict = replace(handbook_only, min_chunk_completeness="section")
        memory = search_contract(conn, q, k=10, contract=strict, groups=CALLER, now=NOW,
                                 vectors=vectors)
        assert _ids(memory) == reference(rows, q, strict, groups=CALLER, k=10)
        assert memory.chunks == search_contract(conn, q, k=10, contract=strict, groups=CALLER,
                                                now=NOW, exact=True).chunks


# =========================================================================== access


def test_access_never_shows_a_document_outside_the_callers_groups(search, tiny) -> None:
    rows = tiny[1]
    groups_of = {r["document_id"]: r["groups"] for r in rows if r["is_current"]}
    for caller in (["all-staff"], ["hr"], ["finance"], [], ["ALL-STAFF"]):
        for missing in ("deny", "allow"):
            contract = Contract(name="access", missing_allowed_groups=missing)
            for q in queries(4):
                result = search(q, k=50, contract=contract, groups=caller, now=NOW)
                for chunk in result:
                    allowed = groups_of[chunk.document_id]
                    if allowed is None:
                        assert missing == "allow"
                    else:
                        assert set(allowed) & set(caller), (caller, chunk.chunk_id)
                assert "hb-nobody" not in {c.document_id for c in result}  # [] admits nobody
            _assert_matches_reference(search, rows, contract, groups=caller, k=8, n_queries=2)


def test_no_groups_is_no_group_and_only_the_operator_switch_sees_everything(
        conn, tiny, monkeypatch, capsys, contract_file) -> None:
    """One rule in the Python API, the Retriever, ragmart.retrieve, the SQL macro and the CLI:
    no groups (None or []) is no group (the SQL macro takes no default and says so: groups :=
    [] there); ALL_GROUPS / all_groups := true / --all-groups is the one way to see every
    document, hb-nobody (allowed_groups []) included."""
    q = queries(1)[0]
    restricted = {"pol-hr-only", "hb-nobody", "pol-travel", "hb-untitled"}
    for groups in (None, []):
        denied = search_contract(conn, q, k=100, groups=groups, now=NOW)
        assert len(denied) == 0 and denied.abstained
        assert denied.reason == ("no chunk satisfies the request: no chunk in the serving set "
                                 "is visible to a caller without groups (name the caller's "
                                 "groups: --groups / groups=[...]; an operator may pass "
                                 "--all-groups / groups=ALL_GROUPS)")
        # a document without allowed_groups follows the configured rule, and only those
        allowed = search_contract(conn, q, k=100, groups=groups, now=NOW,
                                  missing_allowed_groups="allow")
        assert {c.document_id for c in allowed} == {"hb-open"}
    everything = search_contract(conn, q, k=1000, groups=ALL_GROUPS, now=NOW)
    live = {r["document_id"] for r in tiny[1] if r["is_current"]}
    assert {c.document_id for c in everything} == live and restricted <= live
    staff = search_contract(conn, q, k=100, groups=["all-staff"], now=NOW)
    assert {c.document_id for c in staff}.isdisjoint({"hb-open", "pol-hr-only", "hb-nobody"})

    # the SQL macro: the same rule, the switch is a named argument
    vector = {"q": _vector_text(q)}
    macro = f"select chunk_id from {TABLES.macro}($q::float[384], 1000"
    with pytest.raises(duckdb.InvalidInputException, match="groups is missing"):
        conn.execute(macro + ")", vector).fetchall()  # access is never left to a default
    assert conn.execute(macro + ", groups := [])", vector).fetchall() == []
    assert [r[0] for r in conn.execute(macro + ", all_groups := true)", vector).fetchall()] \
        == _ids(everything)

    # the Retriever and ragmart.retrieve
    provider = HashingProvider()
    with Retriever(db_path=tiny[0], provider=provider, contracts_path=contract_file) as reader:
        assert reader.retrieve("travel", k=100, now=NOW).abstained
        seen = {c.document_id for c in reader.retrieve("travel", k=1000, now=NOW,
                                                       groups=ALL_GROUPS)}
        assert seen == live
    once = retrieve("travel", k=100, db_path=tiny[0], provider=provider,
                              contracts_path=contract_file)
    assert once.abstained and len(once) == 0
    with pytest.raises(RetrievalError, match="ALL_GROUPS"):
        retrieve("travel", groups="hr", db_path=tiny[0], provider=provider)

    # the CLI: no --groups abstains (exit 3), --all-groups is the operator switch
    code, out, _ = _run_cli(monkeypatch, capsys, tiny[0], contract_file, "retrieve", "travel",
                            "-k", "100", "--json")
    assert code == 3 and json.loads(out)["results"] == []
    code, out, _ = _run_cli(monkeypatch, capsys, tiny[0], contract_file, "retrieve", "travel",
                            "-k", "1000", "--all-groups", "--json")
    assert code == 0 and {r["document_id"] for r in json.loads(out)["results"]} == live
    with pytest.raises(SystemExit) as usage:
        cli.main(["retrieve", "travel", "--all-groups", "--groups", "hr"])
    assert usage.value.code == 2


def test_missing_allowed_groups_follows_the_contract_files_defaults(
        conn, tiny, tmp_path) -> None:
    """Without --contract, a document without allowed_groups follows the contract file's
    `defaults: missing_allowed_groups` (deny when there is no file)."""
    provider = HashingProvider()
    for default, expected in (("allow", {"hb-open"}), ("deny", set())):
        path = tmp_path / f"{default}.yml"
        path.write_text(yaml.safe_dump({"version": 1, "defaults": {
            "missing_allowed_groups": default}, "contracts": {"any": {}}}))
        result = retrieve("open handbook", k=100, groups=["finance"],
                                    db_path=tiny[0], provider=provider, contracts_path=path)
        assert {c.document_id for c in result} == expected
    result = retrieve("open handbook", k=100, groups=["finance"], db_path=tiny[0],
                                provider=provider, contracts_path=tmp_path / "none.yml")
    assert result.abstained


def test_as_of_answers_from_the_versions_live_then_with_the_same_checks(search, tiny) -> None:
    rows = tiny[1]
    contract = Contract(name="asof", **OPEN)
    moments = [T0 + dt.timedelta(minutes=m) for m in (-1, 1, 35, 61, 95, 130)]
    for moment in moments:
        _assert_matches_reference(search, rows, contract, groups=CALLER, k=6, as_of=moment,
                                  n_queries=3)
    q = queries(1)[0]
    early = search(q, k=100, contract=contract, groups=CALLER,
                   as_of=T0 + dt.timedelta(minutes=35), now=NOW)
    versions = {(c.document_id, c.document_version) for c in early}
    assert ("pol-travel", 100) in versions and ("pol-travel", 101) not in versions
    assert "proc-deleted" in {c.document_id for c in early}  # deleted later: visible then
    assert all(c.document_valid_to is None or c.document_valid_to > T0 + dt.timedelta(minutes=35)
               for c in early)
    later = search(q, k=100, contract=contract, groups=CALLER,
                   as_of=T0 + dt.timedelta(minutes=95), now=NOW)
    assert "proc-deleted" not in {c.document_id for c in later}
    assert ("pol-travel", 101) in {(c.document_id, c.document_version) for c in later}
    before_anything = search(q, k=5, contract=contract, groups=CALLER,
                             as_of=T0 - dt.timedelta(days=500), now=NOW)
    assert before_anything.abstained and before_anything.clauses[0].clause == "as_of"
    # max_document_age is measured at as_of
    aged = Contract(name="aged", max_document_age=dt.timedelta(minutes=30), **OPEN)
    _assert_matches_reference(search, rows, aged, groups=CALLER, k=6,
                              as_of=T0 + dt.timedelta(minutes=40), n_queries=3)


def test_as_of_never_reveals_what_the_caller_may_not_see_today(search) -> None:
    """pol-restricted-later was all-staff at first and is hr-only now: an all-staff caller
    does not see its old version through --as-of either (a version must admit the caller under
    its own allowed_groups and, while the document is live, under its current ones)."""
    moment = T0 + dt.timedelta(minutes=30)
    contract = Contract(name="asof", **OPEN)
    for q in queries(4):
        staff = search(q, k=100, contract=contract, groups=["all-staff"], as_of=moment,
                       now=NOW)
        assert "pol-restricted-later" not in {c.document_id for c in staff}
        hr = search(q, k=100, contract=contract, groups=["hr", "all-staff"], as_of=moment,
                    now=NOW)
        assert "pol-restricted-later" in {c.document_id for c in hr}
        only_hr = search(q, k=100, contract=contract, groups=["hr"], as_of=moment, now=NOW)
        assert "pol-restricted-later" not in {c.document_id for c in only_hr}


def test_as_of_applies_the_latest_known_access_of_deleted_documents(search, sql_rows,
                                                                    tiny) -> None:
    """pol-narrowed-deleted was all-staff, then hr-only, then deleted; pol-tombstone-narrowed
    was deleted by an event whose image names security only. Neither is shown to all-staff at
    any time, through the Python path or the SQL macro. An old version needs both its own and
    the latest groups: hr alone does not see the all-staff version either."""
    moment = T0 + dt.timedelta(minutes=30)  # both documents' all-staff versions were live
    contract = Contract(name="asof", **OPEN)
    hidden = {"pol-narrowed-deleted", "pol-tombstone-narrowed"}
    assert {r["document_id"] for r in tiny[1] if r["valid_from"] <= moment
            and (r["valid_to"] is None or r["valid_to"] > moment)
            and "all-staff" in (r["groups"] or [])} >= hidden
    for q in queries(4):
        for groups, expect in ((["all-staff"], set()), (["hr"], set()),
                               (["all-staff", "hr"], {"pol-narrowed-deleted"}),
                               (["all-staff", "security"], {"pol-tombstone-narrowed"}),
                               (ALL_GROUPS, hidden)):
            result = search(q, k=200, contract=contract, groups=groups, as_of=moment, now=NOW)
            assert {c.document_id for c in result} & hidden == expect, groups
            rows = sql_rows(q, contract, groups=groups, k=200, as_of=moment)
            assert [r["chunk_id"] for r in rows] == _ids(result)


# =========================================================================== nothing leaks


def add_hidden_documents(path: Path, vector: np.ndarray, n: int) -> None:
    """Add n security-only documents of a type nobody else has ('secret-type'), live since
    T0, whose chunks all lie at `vector` (the question's own direction): content a caller
    without access must not be able to detect."""
    conn = connect(path)
    try:
        literal = _vector_text(vector)
        for i in range(n):
            doc = f"sec-hidden-{i}"
            changes = (f"'{doc}' as document_id, ['security'] as allowed_groups, "
                       "'secret-type' as document_type")
            # metadata that is not JSON: a clause reading it must not echo it in an error
            bad_metadata = ", '{the secret merger' as metadata"
            for table, extra in ((TABLES.serving, ""), (TABLES.history, bad_metadata)):
                conn.execute(f"""
                    insert into {table} select * replace (
                        replace(chunk_id, 'pol-hr-only', '{doc}') as chunk_id, {changes}{extra},
                        'the secret merger plan' as chunk_text,
                        cast({literal} as float[{DIMS}]) as embedding,
                        timestamp '{T0.isoformat()}' as document_valid_from)
                    from {table} where document_id = 'pol-hr-only'""")
            conn.execute(f"insert into {TABLES.documents} select * replace ({changes}"
                         f"{bad_metadata}) "
                         f"from {TABLES.documents} where document_id = 'pol-hr-only'")
            conn.execute(f"insert into {TABLES.access} select * replace ('{doc}' as "
                         "document_id, ['security'] as allowed_groups) "
                         f"from {TABLES.access} where document_id = 'pol-hr-only'")
        conn.execute("checkpoint")
    finally:
        conn.close()


def test_abstention_json_is_byte_identical_whatever_hidden_documents_contain(
        tmp_path, monkeypatch, capsys) -> None:
    """Two builds differing only in documents the caller may not see (B adds security-only
    chunks exactly at the question, of a type only they have): every answer to a caller
    without access, reasons, counts and named valid types included, is byte for byte the
    same. The operator switch shows that the builds do differ."""
    question = "the merger plan"
    vector = HashingProvider().embed([question])[0]
    plain, secret = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    build_tiny_database(plain)
    build_tiny_database(secret)
    add_hidden_documents(secret, vector, 3)
    contracts = tmp_path / "contracts.yml"
    contracts.write_text(yaml.safe_dump({"version": 1, "contracts": {
        "picky": {"min_similarity": 0.5},
        "typed": {"document_types": ["secret-type", "procedure"]},
        "sourced": {"required_metadata": ["source_path"], "min_similarity": 0.5}}}))
    moment = (T0 + dt.timedelta(minutes=30)).isoformat()
    cases = [
        ["--contract", "picky", "--groups", "all-staff"],
        ["--contract", "picky", "--groups", "nobody"],
        ["--contract", "picky", "--groups", "all-staff", "--as-of", moment],
        ["--contract", "typed", "--groups", "all-staff,hr"],
        ["--contract", "sourced", "--groups", "all-staff"],
        ["--contract", "sourced", "--groups", "all-staff", "--as-of", moment],
        ["--doc-type", "secret-type", "--groups", "all-staff"],
        ["--doc-type", "polcy", "--groups", "hr", "--as-of", moment],
        [],
    ]
    for args in cases:
        outputs = []
        for db in (plain, secret):
            for json_flag in (["--json"], []):
                code, out, err = _run_cli(monkeypatch, capsys, db, contracts, "retrieve",
                                          question, *args, *json_flag)
                assert code == 3, (args, out, err)
                assert "secret merger" not in out and "sec-hidden" not in out
                outputs.append(out)
        assert outputs[0] == outputs[2] and outputs[1] == outputs[3], args
    # non-vacuous: the operator sees the hidden chunks in B, only there
    code, out, _ = _run_cli(monkeypatch, capsys, secret, contracts, "retrieve", question,
                            "--contract", "picky", "--all-groups", "--json")
    assert code == 0 and {r["document_type"] for r in json.loads(out)["results"]} \
        == {"secret-type"}
    code, out, _ = _run_cli(monkeypatch, capsys, plain, contracts, "retrieve", question,
                            "--contract", "picky", "--all-groups", "--json")
    assert code == 3
    # no clause raises on a row's data, whatever order DuckDB evaluates it in: metadata that
    # is not JSON reads as missing (an error would have echoed it)
    code, out, err = _run_cli(monkeypatch, capsys, secret, contracts, "retrieve", question,
                              "--contract", "sourced", "--all-groups", "--json")
    assert code == 3 and "secret merger" not in out + err, err


def test_abstention_is_identical_for_questions_differing_only_in_hidden_directions(
        conn, tiny) -> None:
    """q1 and q2 have the same component in the span of the chunks all-staff may see and
    opposite ones outside it, pointing at (q1) or away from (q2) an hr-only chunk: the same
    question to that caller, a different one to the hidden documents. The abstention (reason,
    clause counts) is identical; an operator sees the difference."""
    caller = ["all-staff"]
    rows = [r for r in tiny[1] if r["is_current"]]
    seen = np.array([r["embedding"] for r in rows if visible(r, caller)], dtype=np.float64)
    hidden = next(r for r in rows if r["document_id"] == "pol-hr-only")["embedding"]
    basis, _ = np.linalg.qr(seen.T)
    inside = basis @ (basis.T @ np.random.default_rng(7).normal(size=DIMS))
    outside = hidden - basis @ (basis.T @ hidden)
    inside, outside = inside / np.linalg.norm(inside), outside / np.linalg.norm(outside)
    q1, q2 = (inside + outside).astype(np.float32), (inside - outside).astype(np.float32)
    cosine = lambda q, x: float(q @ x / np.linalg.norm(q) / np.linalg.norm(x))  # noqa: E731
    best_visible = max(cosine(q1, x) for x in seen)
    assert abs(best_visible - max(cosine(q2, x) for x in seen)) < 1e-5
    threshold = round(best_visible + 0.05, 3)
    assert cosine(q1, hidden) > threshold + 0.05 > cosine(q2, hidden)
    contract = Contract(name="picky", min_similarity=threshold)
    answers = [search_contract(conn, q, k=5, contract=contract, groups=caller, now=NOW)
               for q in (q1, q2)]
    assert all(a.abstained for a in answers)
    assert answers[0].to_dict() == answers[1].to_dict()
    operator = [search_contract(conn, q, k=5, contract=contract, groups=ALL_GROUPS, now=NOW)
                for q in (q1, q2)]
    assert "pol-hr-only" in {c.document_id for c in operator[0]}
    assert operator[1].to_dict() != operator[0].to_dict()


# =========================================================================== abstention


def test_abstains_naming_the_clauses_when_nothing_is_eligible(search, tiny) -> None:
    q = queries(1)[0]
    contract = Contract(name="hr_policies", document_types=("procedure",),
                        min_chunk_completeness="section")
    result = search(q, k=5, contract=contract, groups=["finance"], now=NOW)
    assert result.abstained and len(result) == 0
    assert result.reason == ("no chunk satisfies contract 'hr_policies': no chunk in the "
                             "serving set is visible to the groups 'finance'")
    assert [c.remaining for c in result.clauses] == [0] * len(result.clauses)
    # the counts are over the visible chunks only: access is not a clause, it is the source
    staff = search(q, k=5, contract=replace(contract, **OPEN), groups=["all-staff"], now=NOW)
    data = staff.to_dict()
    assert data["abstained"] is True and "access" not in {c["clause"] for c in data["clauses"]}
    clauses = {c["clause"]: c for c in data["clauses"]}
    visible_chunks = len([r for r in tiny[1] if r["is_current"]
                          and visible(r, ["all-staff"], "allow")])
    assert clauses["serving_set"]["remaining"] == visible_chunks
    assert clauses["document_types"]["excluded"] == visible_chunks  # no visible procedure
    assert clauses["min_chunk_completeness"]["excluded"] > 0  # counted on its own, too
    assert "document_types: no visible chunk has document type 'procedure' (visible types: " \
        "'handbook', 'policy')" in staff.reason
    # similarity alone can empty a set the other clauses leave
    picky = Contract(name="picky", min_similarity=0.99, **OPEN)
    result = search(q, k=5, contract=picky, groups=CALLER, now=NOW)
    assert result.abstained
    last = result.clauses[-1]
    assert last.clause == "min_similarity" and last.remaining == 0 and last.excluded > 0
    assert "min_similarity leaves none" in result.reason
    # without a contract an empty eligible set abstains too, naming the valid types the
    # caller may see (hr sees policies only)
    empty = search(q, k=5, doc_types=["polcy"], groups=["hr"], now=NOW)
    assert empty.abstained and len(empty) == 0
    assert empty.reason == (
        "no chunk satisfies the request: doc_type_filter excludes 14 of 14; doc_type_filter "
        "leaves none; doc_type_filter: no visible chunk has document type 'polcy' (visible "
        "types: 'policy')")


def test_in_memory_vectors_abstain_and_answer_as_the_exact_search(conn, vectors) -> None:
    q = queries(1)[0]
    nothing = Contract(name="hr_policies", document_types=("procedure",),
                       min_chunk_completeness="section")
    memory = search_contract(conn, q, k=5, contract=nothing, groups=["finance"], now=NOW,
                             vectors=vectors)
    planned = search_contract(conn, q, k=5, contract=nothing, groups=["finance"], now=NOW)
    assert memory.abstained and memory.reason == planned.reason
    assert memory.clauses == planned.clauses
    # as-of searches the history: the in-memory vectors (the live set) are not used
    as_of = T0 + dt.timedelta(minutes=20)
    then = search_contract(conn, q, k=5, groups=CALLER, now=NOW, as_of=as_of, vectors=vectors)
    assert then.chunks == search_contract(conn, q, k=5, groups=CALLER, now=NOW,
                                          as_of=as_of).chunks
    assert then.strategy == "exact"
    # the vectors belong to one serving table
    with pytest.raises(RetrievalError, match="fct_chunk_embeddings_v1"):
        search_contract(conn, q, k=5, tables=Tables.for_version("v2"), vectors=vectors)


def test_in_memory_eligibility_follows_the_clock(conn, vectors) -> None:
    """A Retriever remembers which chunks a contract admits; max_document_age is the one clause
    the clock moves. Within ELIGIBILITY_TTL the remembered set serves as a superset of the
    candidates (the exact search drops what aged out since, and the count is not reported);
    after it, or for an earlier clock, the set is computed again."""
    contract = Contract(name="fresh", max_document_age=dt.timedelta(minutes=30), **OPEN)
    first = T0 + dt.timedelta(minutes=44, seconds=30)  # admits valid_from >= T0 + 14m30s
    steps = [(first, True), (first + dt.timedelta(seconds=50), False),  # hb-open (15) ages out
             (first + dt.timedelta(minutes=2), True), (first - dt.timedelta(minutes=10), True)]
    assert steps[1][0] - first < ELIGIBILITY_TTL < steps[2][0] - first
    for q in queries(3, seed=11):
        for now, counted in steps:
            memory = search_contract(conn, q, k=50, contract=contract, groups=CALLER, now=now,
                                     vectors=vectors)
            exact = search_contract(conn, q, k=50, contract=contract, groups=CALLER, now=now,
                                    exact=True)
            assert memory.chunks == exact.chunks and memory.strategy == "memory"
            assert memory.eligible_chunks == (exact.eligible_chunks if counted else None)
            admits_hb_open = now - contract.max_document_age <= T0 + dt.timedelta(minutes=15)
            assert ("hb-open" in {c.document_id for c in memory}) == admits_hb_open
    # without a clock-bound clause a contract's eligible set is computed once per reader
    remembered = len(vectors._eligible)
    for q in queries(3, seed=12):
        search_contract(conn, q, k=5, contract=Contract(name="hb", document_types=("handbook",),
                                                        **OPEN), groups=CALLER, vectors=vectors)
    assert len(vectors._eligible) == remembered + 1


def test_in_memory_vectors_need_a_read_only_connection(tiny) -> None:
    writable = connect(tiny[0])
    try:
        with pytest.raises(ReadOnlyRequiredError, match="read-only"):
            ServingVectors.load(writable, TABLES.serving)
    finally:
        writable.close()


def test_candidate_pools_stop_only_when_no_row_outside_can_be_nearer() -> None:
    """candidate_rounds + the stopping rule of _via_memory, with a filter that rejects most
    rows: the answer is the exact filtered top-k for every query."""
    rng = np.random.default_rng(5)
    n, k = 3000, 10
    matrix = rng.normal(size=(n, 24)).astype(np.float32)
    ids = np.array([f"c{i:05d}" for i in range(n)], dtype=object)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    vectors = ServingVectors(serving_table="t", chunk_ids=ids, matrix=unit)
    admitted = rng.random(n) < 0.02  # a chunk clause keeps 2%
    rows = np.arange(n)
    for _ in range(20):
        q = rng.normal(size=24).astype(np.float32)
        exact = sorted((float(1 - unit[i] @ (q / np.linalg.norm(q))), ids[i])
                       for i in range(n) if admitted[i])[:k]
        rounds = 0
        for pool, bound in vectors.candidate_rounds(q, rows, k):
            rounds += 1
            index = {c: i for i, c in enumerate(ids)}
            got = sorted((float(1 - unit[index[c]] @ (q / np.linalg.norm(q))), c)
                         for c in pool if admitted[index[c]])[:k]
            if bound is None or (len(got) >= k and got[k - 1][0] < bound):
                break
        assert got == exact
        assert rounds > 1  # the 2% filter forced the pool to widen


def test_retriever_holds_one_snapshot_and_answers_like_retrieve(tiny, tmp_path) -> None:
    db = tiny[0]
    provider = HashingProvider()
    with Retriever(db_path=db, provider=provider) as reader:
        assert reader.vectors is not None and reader.vectors.rows > 0
        for question in ("travel expenses", "security incident report"):
            held = reader.retrieve(question, k=5, groups=CALLER, now=NOW)
            once = retrieve(question, k=5, groups=CALLER, now=NOW, db_path=db,
                                      provider=provider)
            assert held.chunks == once.chunks and held.strategy == "memory"
        with pytest.raises(RetrievalError, match="empty"):
            reader.retrieve("  ")
    with pytest.raises(RetrievalError, match="does not exist"):
        Retriever(db_path=tmp_path / "missing.duckdb", provider=provider)


def _run_cli(monkeypatch, capsys, db: Path, contracts: Path | None, *args: str) -> tuple:
    monkeypatch.setenv("RAGMART_DB", str(db))
    monkeypatch.setenv("RAGMART_EMBEDDING_PROVIDER", "hash")
    if contracts is not None:
        monkeypatch.setenv("RAGMART_CONTRACTS", str(contracts))
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def contract_file(tmp_path) -> Path:
    path = tmp_path / "retrieval_contracts.yml"
    path.write_text(yaml.safe_dump({"version": 1, "contracts": {
        "policy_answers": {"document_types": ["policy"], "min_chunk_completeness": "paragraph"},
        "procedures": {"document_types": ["procedure"]},
        "open_handbook": {"document_types": ["handbook"],
                          "access": {"missing_allowed_groups": "allow"}},
    }}))
    return path


def test_cli_abstains_with_json_and_exit_code_3(monkeypatch, capsys, tiny, contract_file,
                                                engine, request):
    db = tiny[0]
    if engine == "postgres":  # `ragmart retrieve` reads the serving URL
        monkeypatch.setenv("RAGMART_SERVING_URL", request.getfixturevalue("tiny_postgres"))
    code, out, _ = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel rules",
                            "--contract", "procedures", "--groups", "all-staff", "--json")
    assert code == Exit.ABSTAINED == 3
    data = json.loads(out)
    assert data["abstained"] is True and data["results"] == []
    assert "document_types" in data["reason"]
    assert {c["clause"] for c in data["clauses"]} >= {"serving_set", "document_types"}
    code, out, _ = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel rules",
                            "--contract", "policy_answers", "--groups", "hr,all-staff",
                            "-k", "4", "--json")
    data = json.loads(out)
    assert code == 0 and not data["abstained"] and len(data["results"]) == 4
    assert {r["document_type"] for r in data["results"]} == {"policy"}
    assert {r["completeness"] for r in data["results"]} <= {"paragraph", "section"}
    code, out, _ = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel",
                            "--contract", "open_handbook")
    assert code == 0 and "hb-open" in out  # no groups: only documents without allowed_groups
    code, out, _ = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel",
                            "--contract", "procedures", "--groups", "all-staff")
    assert code == 3 and out.startswith("abstained: no chunk satisfies contract 'procedures'")
    # without a contract too; a type that matches nothing: the reason names the visible ones
    code, out, _ = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel",
                            "--doc-type", "polcy", "--groups", "hr")
    assert code == 3 and out.startswith("abstained: no chunk satisfies the request: ")
    assert "no visible chunk has document type 'polcy' (visible types: 'policy')" in out
    code, _, err = _run_cli(monkeypatch, capsys, db, contract_file, "retrieve", "travel",
                            "--contract", "nope")
    assert code == Exit.USAGE and "unknown retrieval contract 'nope'" in err


# =========================================================================== the index path


def test_index_strategy_recall_against_exact_over_the_eligible_set(tmp_path, monkeypatch):
    """Forced through HNSW (thresholds at 0): recall@10 >= 0.99 against the exact eligible
    top-10, always k rows, vectors waiting in the delta included."""
    path = tmp_path / "ragmart.duckdb"
    rows = build_tiny_database(path, seed=5, delta_share=0.2)
    monkeypatch.setattr(planner, "EXACT_MAX_DOCUMENTS", 0)
    monkeypatch.setattr(planner, "EXACT_MAX_ELIGIBLE", 0)
    monkeypatch.setattr(planner, "EXACT_IDS_ALWAYS", 0)
    monkeypatch.setattr(planner, "EXACT_SCAN_MAX_ROWS", 0)
    monkeypatch.setattr(planner, "MIN_CANDIDATES", 4)
    conn = connect(path, read_only=True)
    try:
        delta_ids = {r[0] for r in conn.execute(f"select chunk_id from {TABLES.delta}").fetchall()}
        assert delta_ids
        found_delta = False
        hits = total = 0
        strategies = set()
        for contract in (Contract(name="all", **OPEN),
                         Contract(name="pol", document_types=("policy",), **OPEN),
                         Contract(name="hb", document_types=("handbook",), **OPEN)):
            for q in queries(25, seed=21):
                result = search_contract(conn, q, k=10, contract=contract, groups=CALLER,
                                         now=NOW)
                strategies.add(result.strategy)
                want = reference(rows, q, contract, groups=CALLER, k=10)
                assert len(result) == len(want) == 10
                hits += len(set(_ids(result)) & set(want))
                total += len(want)
                found_delta |= bool(delta_ids & set(_ids(result)))
        assert hits / total >= 0.99
        assert "hnsw" in strategies
        assert found_delta
    finally:
        conn.close()


# =========================================================================== SQL path


def _vector_text(q: np.ndarray) -> str:
    """A query vector as text: the macro casts it (binding a Python list is slow)."""
    return "[" + ",".join(repr(float(x)) for x in q) + "]"


def _sql_arguments(contract: Contract | None, *, groups, as_of=None, doc_types=None,
                   now: dt.datetime | None = NOW) -> dict:
    """The named arguments of the SQL path (the table macro, the SQL function) for a search."""
    named = {
        # the macro takes no default access: no group is written groups := []
        "groups": None if groups is ALL_GROUPS else (groups if groups is not None else []),
        "all_groups": True if groups is ALL_GROUPS else None,
        "missing_allowed_groups": contract.missing_allowed_groups if contract else "deny",
        "document_types": (list(contract.document_types) if contract and contract.document_types
                           else doc_types),
        "required_metadata": list(contract.required_metadata) if contract else None,
        "max_document_age": contract.max_document_age if contract else None,
        "min_document_version": contract.min_document_version if contract else None,
        "min_effective_date": contract.min_effective_date if contract else None,
        "min_chunk_completeness": contract.min_chunk_completeness if contract else None,
        "min_similarity": contract.min_similarity if contract else None,
        "as_of": as_of,
        "now": now,
    }
    return {name: value for name, value in named.items() if value is not None}


def _macro_call(contract: Contract | None, *, k, **options) -> tuple:
    """DuckDB's table macro ragmart_retrieve_v1: SQL with $q for the vector, parameters."""
    params = {"k": k, **_sql_arguments(contract, **options)}
    args = ["$q::float[384]", "$k"] + [f"{name} := ${name}" for name in params if name != "k"]
    return f"select * from {TABLES.macro}({', '.join(args)})", params


def _function_call(contract: Contract | None, *, k, **options) -> tuple:
    """PostgreSQL's function ragmart.retrieve, with the same arguments (named: =>)."""
    params = {"k": k, **_sql_arguments(contract, **options)}
    types = parameter_types(DIMS)
    args = ["cast(%(q)s as vector)", "%(k)s"] + [
        f"{name} => cast(%({name})s as {postgres_type(types[name])})"
        for name in params if name != "k"]
    return f"select * from ragmart.retrieve({', '.join(args)})", params


@pytest.mark.parametrize("contract", [
    None,
    Contract(name="all", **OPEN),
    Contract(name="pol", document_types=("policy",), min_chunk_completeness="paragraph"),
    Contract(name="meta", required_metadata=("source_path", "title", "section"), **OPEN),
    Contract(name="recent", max_document_age=dt.timedelta(days=30), min_similarity=0.02,
             min_effective_date=T0 + dt.timedelta(minutes=5), min_document_version=200),
    Contract(name="sections", min_chunk_completeness="section", **OPEN),
])
def test_sql_macro_returns_the_same_rows_in_the_same_order(engine, search, sql_rows,
                                                           contract) -> None:
    """The Python path and the SQL path (DuckDB's table macro, PostgreSQL's function
    ragmart.retrieve) return the same rows, every column equal, in the same order."""
    # index_version is the Python result's; the SQL macro's name carries it (ragmart_retrieve_v1).
    # PostgreSQL's function has no source column yet (the README says so).
    # The SQL paths search by vector: no lexical or fused score (null in the Python result).
    left_out = {"index_version", "lexical_score", "fused_score"} | (
        {"source"} if engine == "postgres" else set())
    columns = [c for c in RetrievedChunk.__dataclass_fields__ if c not in left_out]
    for groups in (CALLER, ["all-staff"], None):
        if contract is None and groups is None:
            continue
        for as_of in (None, T0 + dt.timedelta(minutes=70)):
            for q in queries(3, seed=13):
                python = search(q, k=7, contract=contract, groups=groups, as_of=as_of, now=NOW)
                rows = sql_rows(q, contract, groups=groups, k=7, as_of=as_of)
                assert [r["chunk_id"] for r in rows] == _ids(python)
                for mine, theirs in zip(python, rows, strict=True):
                    for column in columns:
                        assert getattr(mine, column) == theirs[column], column


def test_sql_macro_applies_access_and_as_of(conn) -> None:
    q = _vector_text(queries(1)[0])
    ids = lambda sql, p: {r[0] for r in conn.execute(sql, {"q": q, **p}).fetchall()}  # noqa: E731
    macro = TABLES.macro
    staff = ids(f"select document_id from {macro}($q::float[384], 100, groups := $g)",
                {"g": ["all-staff"]})
    assert staff and staff.isdisjoint({"pol-hr-only", "hb-open", "hb-nobody",
                                       "pol-restricted-later"})
    nobody = ids(f"select document_id from {macro}($q::float[384], 100, groups := [])", {})
    assert nobody == set()  # no group: no documents
    with pytest.raises(duckdb.InvalidInputException, match=f"{macro}: groups is missing"):
        ids(f"select document_id from {macro}($q::float[384], 100)", {})  # never a default
    then = ids(f"select document_id from {macro}($q::float[384], 100, groups := $g, "
               "as_of := $t)", {"g": ["all-staff"], "t": T0 + dt.timedelta(minutes=35)})
    assert "proc-deleted" in then and "pol-restricted-later" not in then


# =========================================================================== the clause registry

# Per registered clause: a contract-file value that excludes some chunks the caller sees, and
# one the file must refuse. A clause added to ragmart.retrieval.clauses.CLAUSES without a case
# here fails the test below, and so does one missing from `reference` (it would not filter).
CLAUSE_CASES = {
    "document_types": (["handbook"], "handbook"),
    "required_metadata": (["source_path"], "source_path"),
    "max_document_age": ("30 days", "soon"),
    "min_document_version": (301, -1),
    "min_effective_date": ((T0 + dt.timedelta(minutes=16)).isoformat(), "yesterday"),
    "min_chunk_completeness": ("section", "whole"),
    "min_similarity": (0.05, 2),
}


def test_every_registered_clause_is_validated_rendered_applied_and_counted(
        tiny, engine, sql_rows, tmp_path, monkeypatch, capsys, request) -> None:
    """Each clause object, end to end, on both engines: the contract file refuses a bad value
    naming the field (CLI); a good value filters the same rows through ragmart.retrieve (the
    planned SQL), a Retriever (on DuckDB the in-memory path), the CLI and the SQL path (the
    clause as its named argument of the DuckDB macro or the PostgreSQL function), as the
    plain-Python reference does; an abstention counts the chunks it excludes on its own."""
    where = {"db_path": tiny[0]}
    if engine == "postgres":  # ragmart.retrieve, Retriever and the CLI read the serving URL
        monkeypatch.setenv("RAGMART_SERVING_URL", request.getfixturevalue("tiny_postgres"))
        where = {}
    assert set(CLAUSE_CASES) == {clause.name for clause in CLAUSES}
    provider = HashingProvider()
    question = "travel rules for staff"
    q = provider.embed([question])[0]
    rows = tiny[1]
    visible_total = len([r for r in rows if r["is_current"] and visible(r, CALLER, "allow")])
    everything = set(reference(rows, q, Contract(name="all", **OPEN), groups=CALLER, k=10**6))
    caller = ["--groups", ",".join(CALLER)]
    for clause in CLAUSES:
        good, bad = CLAUSE_CASES[clause.name]
        bad_file = tmp_path / f"bad_{clause.name}.yml"
        bad_file.write_text(yaml.safe_dump({"version": 1, "contracts": {
            "case": {clause.name: bad}}}))
        code, _, err = _run_cli(monkeypatch, capsys, tiny[0], bad_file, "retrieve", question,
                                "--contract", "case", *caller)
        assert code == Exit.USAGE and f"contract 'case', field '{clause.name}'" in err, err

        good_file = tmp_path / f"good_{clause.name}.yml"
        good_file.write_text(yaml.safe_dump({"version": 1, "contracts": {
            "case": {clause.name: good, "access": OPEN}}}))
        contract = load_contracts(good_file).get("case")
        want = set(reference(rows, q, contract, groups=CALLER, k=10**6))
        assert want and want < everything, clause.name  # the clause filters
        common = {"contract": "case", "contracts_path": good_file, "groups": CALLER}
        once = retrieve(question, k=1000, provider=provider, now=NOW, **where, **common)
        assert set(_ids(once)) == want, clause.name
        with Retriever(provider=provider, contracts_path=good_file, **where) as reader:
            held = reader.retrieve(question, k=1000, now=NOW, contract="case", groups=CALLER)
        assert held.chunks == once.chunks, clause.name
        assert held.strategy == ("memory" if engine == "duckdb" else "exact"), clause.name
        rows_sql = sql_rows(q, contract, groups=CALLER, k=1000, now=NOW)
        assert [r["chunk_id"] for r in rows_sql] == _ids(once), clause.name
        code, out, _ = _run_cli(monkeypatch, capsys, tiny[0], good_file, "retrieve", question,
                                "--contract", "case", "-k", "1000", "--json", *caller)
        now_clock = retrieve(question, k=1000, provider=provider, **where, **common)
        assert code == 0 and [r["chunk_id"] for r in json.loads(out)["results"]] == \
            _ids(now_clock), clause.name

        # the caller's own filter empties the set: the funnel still counts this clause alone
        abstained = retrieve(question, k=5, provider=provider, now=NOW,
                             doc_types=["no-such-type"], **where, **common)
        assert abstained.abstained
        counts = {count.clause: count for count in abstained.clauses}
        assert counts["serving_set"].remaining == visible_total
        assert counts[clause.name].excluded == visible_total - len(want), clause.name


# =========================================================================== hostile input

HOSTILE = [
    "'; drop table fct_chunk_embeddings_v1; --",
    "\" or 1=1 --",
    "x') union select * from dim_documents --",
    "/* comment */ policy",
    "$q",
    "'$.\"title\"",
    "ümlaut ☃ 😀 \u202e rtl",
    "\\x00",
    "a" * 5000,
]


def _database_state(path: Path) -> list:
    conn = connect(path, read_only=True)
    try:
        tables = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables "
            "where table_catalog = current_database() order by 1").fetchall()]
        return [(t, conn.execute(f'select count(*) from "{t}"').fetchone()[0]) for t in tables]
    finally:
        conn.close()


def test_hostile_strings_never_reach_sql_unescaped(tmp_path, monkeypatch, capsys,
                                                   contract_file) -> None:
    path = tmp_path / "ragmart.duckdb"
    build_tiny_database(path)
    before = _database_state(path)
    assert before
    for text in HOSTILE:
        for args in (
            ["retrieve", text, "--json"],
            ["retrieve", "travel", "--doc-type", text, "--json"],
            ["retrieve", "travel", "--groups", text, "--contract", "policy_answers", "--json"],
            ["retrieve", "travel", "--contract", text, "--json"],
            ["retrieve", "travel", "--as-of", text, "--json"],
            ["retrieve", "travel", "--contract", "open_handbook", "--doc-type", text,
             "--groups", text, "--as-of", "2026-11-01T09:30:00", "--json"],
        ):
            code, out, err = _run_cli(monkeypatch, capsys, path, contract_file, *args)
            assert code in (0, Exit.USAGE, Exit.ABSTAINED), (args, err)
            for leak in ("Catalog Error", "Parser Error", "Binder Error", "Conversion Error",
                         "Invalid Input Error", "LINE 1:", "Traceback", "duckdb"):
                assert leak not in err, (args, err)
            if code == 0:
                data = json.loads(out)
                assert all(r["document_type"] != text for r in data["results"])
            if code == Exit.USAGE:
                assert err.startswith("ragmart retrieve: ")
    # the Python API and the SQL macro take them as values too
    conn = connect(path, read_only=True)
    try:
        q = queries(1)[0]
        for text in HOSTILE:
            result = search_contract(conn, q, k=5, doc_types=[text], groups=[text],
                                     contract=Contract(name="x", document_types=(text,)),
                                     now=NOW)
            assert result.abstained
            rows = conn.execute(
                f"select * from {TABLES.macro}($q::float[384], 5, groups := $g, "
                "document_types := $t)",
                {"q": _vector_text(q), "g": [text], "t": [text]},
            ).fetchall()
            assert rows == []
            # not a field name: refused with the value quoted in the message, never run
            with pytest.raises(duckdb.InvalidInputException, match="is not a field name"):
                conn.execute(f"select * from {TABLES.macro}($q::float[384], 5, groups := $g, "
                             "required_metadata := $t)",
                             {"q": _vector_text(q), "g": [text], "t": [text]}).fetchall()
    finally:
        conn.close()
    assert _database_state(path) == before


# =========================================================================== determinism


def test_same_query_same_rows_same_order_across_processes(tiny, contract_file) -> None:
    script = (
        "import json, sys; import ragmart; "
        "r = ragmart.retrieve('travel rules for staff', k=8, contract='policy_answers', "
        "groups=['all-staff', 'hr'], db_path=sys.argv[1], contracts_path=sys.argv[2]); "
        "print(json.dumps([(c.chunk_id, c.distance) for c in r]))"
    )
    env = {"RAGMART_EMBEDDING_PROVIDER": "hash", "PATH": "/usr/bin:/bin"}
    outputs = [
        subprocess.run([sys.executable, "-c", script, str(tiny[0]), str(contract_file)],
                       capture_output=True, text=True, cwd=ROOT, env=env, check=True).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1]
    ranked = json.loads(outputs[0])
    assert len(ranked) == 8 and ranked == sorted(ranked, key=lambda r: (r[1], r[0]))


def test_ties_break_on_chunk_id(search, tiny) -> None:
    twin = next(r for r in tiny[1] if r["chunk_id"] == "pol-travel@101#0001")
    result = search(twin["embedding"], k=2, groups=["all-staff"], now=NOW)
    assert _ids(result) == ["pol-travel@101#0001", "pol-travel@101#0099"]
    assert result[0].distance == result[1].distance


def test_ragmart_retrieve_is_exported_lazily() -> None:
    code = ("import sys, ragmart; assert 'ragmart.retrieval.api' not in sys.modules; "
            "from ragmart.retrieval.api import retrieve; assert ragmart.retrieve is retrieve")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# =========================================================================== real dbt build


def _policy(name: str, n: int = 4, edit: int | None = None) -> str:
    paragraphs = [paragraph(name, i) for i in range(n)]
    if edit is not None:
        paragraphs[edit] = paragraphs[edit].replace("rule", "revised rule")
    return document(f"{name.title()} Policy", {"Scope": [paragraph(name + " scope", 99)],
                                                "Policy": paragraphs})


def test_real_build_serves_history_and_the_sql_macro_matches(tmp_path) -> None:
    project = Project(tmp_path)
    project.land("dms/0001_load.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": "alpha", "content": _policy("alpha")},
        {"op": "I", "seq": 2, "document_id": "bravo", "content": _policy("bravo")},
        {"op": "I", "seq": 3, "document_id": "guide", "document_type": "handbook",
         "content": _policy("guide")},
    ]))
    project.land("debezium/0002_changes.jsonl", debezium_jsonl([
        {"op": "u", "seq": 4, "document_id": "alpha", "content": _policy("alpha", edit=1),
         "allowed_groups": ["hr"]},
        {"op": "d", "seq": 5, "document_id": "bravo", "content": _policy("bravo")},
    ]))
    project.build()
    history = project.query(
        "select document_id, document_version, count(*), min(document_valid_to) "
        "from fct_chunk_history_v1 group by 1, 2 order by 1, 2")
    assert [(d, v) for d, v, _, _ in history] == [("alpha", 1), ("alpha", 4), ("bravo", 2),
                                                   ("guide", 3)]
    valid_to = {(d, v): t for d, v, _, t in history}
    assert valid_to[("alpha", 4)] is None and valid_to[("alpha", 1)] is not None
    assert valid_to[("bravo", 2)] is not None  # ended by its delete
    # int_chunks chunked the superseded version too; only new texts went to the provider
    assert project.query("select count(distinct document_version) from int_chunks "
                         "where document_id = 'alpha'") == [(2,)]
    live = project.query("select chunk_id from fct_chunk_embeddings_v1 order by 1")
    history_live = project.query(
        "select chunk_id from fct_chunk_history_v1 where document_valid_to is null order by 1")
    assert live == history_live
    assert project.query("select macro_name from retrieval_sql_macros") == [
        ("ragmart_retrieve_v1",)]

    provider = HashingProvider()
    q = provider.embed(["alpha rule employees approval"])[0]
    moment = dt.datetime(2026, 11, 2, 9, 2, 30)  # cdc_files.ts: seq minutes after 09:00
    conn = connect(project.db_path, read_only=True)
    try:
        open_contract = Contract(name="open", missing_allowed_groups="allow")
        for groups, as_of in ((["hr"], None), ([], None), ([], moment), (["hr"], moment)):
            python = search_contract(conn, q, k=6, contract=open_contract, groups=groups,
                                     as_of=as_of)
            sql, params = _macro_call(open_contract, groups=groups, k=6, as_of=as_of, now=None)
            params["q"] = _vector_text(q)
            rows = conn.execute(sql.replace("select *", "select chunk_id"), params).fetchall()
            assert [r[0] for r in rows] == _ids(python)
            documents = {c.document_id for c in python}
            if as_of is None:
                assert "bravo" not in documents  # deleted
            else:
                assert "bravo" in documents  # live at that moment
            if "hr" not in groups:
                assert "alpha" not in documents  # hr-only today, also through --as-of
            else:
                assert "alpha" in documents
    finally:
        conn.close()
    # Incremental: a new version of guide closes its window; only guide's rows are rewritten
    # (the delete+insert is by document), the others keep the invocation that wrote them.
    before = dict(project.query(
        "select chunk_id, dbt_invocation_id from fct_chunk_history_v1"))
    project.land("debezium/0003_edit.jsonl", debezium_jsonl([
        {"op": "u", "seq": 6, "document_id": "guide", "document_type": "handbook",
         "content": _policy("guide", edit=2)},
    ]))
    project.build("--select", "+fct_chunk_history")
    after = {c: (i, v, t) for c, i, v, t in project.query(
        "select chunk_id, dbt_invocation_id, document_version, document_valid_to "
        "from fct_chunk_history_v1")}
    assert set(before) < set(after)
    for chunk_id, invocation in before.items():
        rewritten = after[chunk_id][0] != invocation
        assert rewritten == chunk_id.startswith("guide@"), chunk_id
    assert all(t is not None for c, (_, v, t) in after.items() if c.startswith("guide@3#"))
    assert all(t is None for c, (_, v, t) in after.items() if c.startswith("guide@6#"))

    proc = project.ragmart("retrieve", "alpha rule", "--as-of", "2026-11-02T09:02:30",
                           "--groups", "hr", "--contract", "policy_answers", "--json",
                           "--contracts", str(ROOT / "retrieval_contracts.yml"), check=False)
    assert proc.returncode in (0, 3), proc.stderr
    data = json.loads(proc.stdout)
    assert data["as_of"] == "2026-11-02T09:02:30"
    assert all(r["document_version"] in (1, 2) for r in data["results"])


def test_narrowed_access_reaches_serving_at_the_next_publish_and_every_point_in_time(
        tmp_path) -> None:
    """A CDC update that narrows alpha's allowed_groups to security, then a delete carrying no
    groups: each reaches the published snapshot with the next build and a plain publish (no
    --force), and from then on all-staff sees no version of alpha at any time, through
    `ragmart retrieve --as-of` a moment when alpha was all-staff; security still does."""
    project = Project(tmp_path)
    common = {"document_type": "policy", "content": _policy("alpha")}
    project.land("debezium/0001_load.jsonl", debezium_jsonl([
        {"op": "c", "seq": 1, "document_id": "alpha", "allowed_groups": ["all-staff"], **common},
        {"op": "c", "seq": 2, "document_id": "bravo", "allowed_groups": ["all-staff"],
         "document_type": "policy", "content": _policy("bravo")},
    ]))
    before_narrowing = "2026-11-02T09:02:30"  # cdc_files.ts: seq minutes after 09:00

    def documents(*args: str) -> set[str]:
        proc = project.ragmart("retrieve", "alpha rule employees approval", "-k", "50",
                               "--json", *args, check=False)
        assert proc.returncode in (0, 3), proc.stderr
        return {r["document_id"] for r in json.loads(proc.stdout)["results"]}

    def build_and_publish() -> None:
        project.build()
        published = project.ragmart("publish", "v1", check=False)
        assert published.returncode == 0, published.stdout + published.stderr
        assert not json.loads(published.stdout)["forced"]

    build_and_publish()
    assert "alpha" in documents("--groups", "all-staff")
    project.land("debezium/0002_narrow.jsonl", debezium_jsonl([
        {"op": "u", "seq": 3, "document_id": "alpha", "allowed_groups": ["security"], **common},
    ]))
    build_and_publish()
    assert "alpha" not in documents("--groups", "all-staff")
    assert "alpha" not in documents("--groups", "all-staff", "--as-of", before_narrowing)
    assert "alpha" in documents("--groups", "security")
    project.land("debezium/0003_delete.jsonl", debezium_jsonl([
        {"op": "d", "seq": 4, "document_id": "alpha", **common},  # no allowed_groups
    ]))
    build_and_publish()
    assert project.query("select allowed_groups, is_deleted from dim_document_access "
                         "where document_id = 'alpha'") == [(["security"], True)]
    assert "alpha" not in documents("--groups", "all-staff")
    assert "alpha" not in documents("--groups", "all-staff", "--as-of", before_narrowing)
    assert "bravo" in documents("--groups", "all-staff", "--as-of", before_narrowing)
    assert "alpha" in documents("--groups", "all-staff,security", "--as-of", before_narrowing)
    assert "alpha" in documents("--all-groups", "--as-of", before_narrowing)
