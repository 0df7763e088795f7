"""The openai provider with the real `openai` client against a real local HTTP server.

tests/python/openai_server.py serves an OpenAI-compatible POST /v1/embeddings on 127.0.0.1
with scripted faults; nothing here reaches the network.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import os
import random
import traceback

import duckdb
import numpy as np
import pytest
from cdc_files import dms_csv, document, paragraph
from dbt_harness import Project
from openai_server import EmbeddingServer, Reply, expected_vectors, usage_tokens

from ragmart.embedding.pipeline import EmbeddingIncompleteError, embed_texts
from ragmart.embedding.prices import load_price_table
from ragmart.embedding.providers import get_provider
from ragmart.embedding.providers.openai import OpenAIProvider, PartialEmbeddingError
from ragmart.embedding.providers.openai_client import parse_retry_after
from ragmart.embedding.providers.openai_settings import OpenAISettings, estimate_tokens
from ragmart.embedding.runs import EmbeddingRun, record_run

TEXTS = [f"Policy {i}: employees file expense reports within {i + 3} days." for i in range(10)]


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("RAGMART_OPENAI_") or name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("RAGMART_PRICE_TABLE", raising=False)
    return monkeypatch


@pytest.fixture
def server(clean_env):
    with EmbeddingServer() as srv:
        clean_env.setenv("OPENAI_API_KEY", srv.api_key)
        yield srv


def provider(server: EmbeddingServer, **options) -> OpenAIProvider:
    """A provider on the test server; waits are recorded in .sleeps, not slept."""
    sleeps: list[float] = []
    options = {"base_url": server.base_url, "backoff_base": 0.001, **options}
    p = OpenAIProvider(sleep=sleeps.append, rng=random.Random(0), **options)
    p.sleeps = sleeps  # type: ignore[attr-defined]
    return p


def assert_vectors(actual: np.ndarray, texts: list[str], dimensions: int = 384) -> None:
    np.testing.assert_allclose(actual, expected_vectors(texts, dimensions), atol=1e-6)


# --------------------------------------------------------------------------- settings


def test_settings_from_env_and_model_name(clean_env):
    p = get_provider("openai")
    assert (p.name, p.model, p.dimensions) == ("openai", "text-embedding-3-small@384", 384)
    assert p.settings.base_url is None and p.settings.long_text == "truncate"
    clean_env.setenv("OPENAI_BASE_URL", "http://fallback.invalid/v1")
    assert get_provider("openai").settings.base_url == "http://fallback.invalid/v1"
    clean_env.setenv("RAGMART_OPENAI_BASE_URL", "http://first.invalid/v1")
    clean_env.setenv("RAGMART_OPENAI_MODEL", " text-embedding-3-large ")
    clean_env.setenv("RAGMART_OPENAI_DIMENSIONS", "1024")
    p = get_provider("openai")
    assert (p.model, p.dimensions) == ("text-embedding-3-large@1024", 1024)
    assert p.settings.base_url == "http://first.invalid/v1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAGMART_OPENAI_DIMENSIONS", "0384"),
        ("RAGMART_OPENAI_DIMENSIONS", "-1"),
        ("RAGMART_OPENAI_MODEL", "bad'model"),
        ("RAGMART_OPENAI_LONG_TEXT", "drop"),
        ("RAGMART_OPENAI_MAX_CONCURRENCY", "0"),
        ("RAGMART_OPENAI_BATCH_SIZE", "2049"),
        ("RAGMART_OPENAI_BACKOFF_BASE", "soon"),
        ("RAGMART_OPENAI_TIMEOUT", "0"),
        ("RAGMART_OPENAI_ENCODING_FORMAT", "binary"),
    ],
)
def test_bad_settings_name_the_variable(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        OpenAISettings.from_env()


def test_missing_api_key_fails_clearly_before_any_request(clean_env):
    with EmbeddingServer() as srv:
        p = OpenAIProvider(base_url=srv.base_url)
        assert p.embed([]).shape == (0, 384)  # no texts: no key needed
        with pytest.raises(Exception, match="OPENAI_API_KEY is not set"):
            p.embed(["x"])
        assert srv.requests == []


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_vectors_requests_and_usage(server, encoding):
    p = provider(server, batch_size=4, encoding_format=encoding)
    vectors = p.embed(TEXTS)
    assert_vectors(vectors, TEXTS)
    # up to 4 requests in flight: they may arrive in any order
    assert sorted(len(r.inputs) for r in server.requests) == [2, 4, 4]
    assert sorted(server.texts) == sorted(TEXTS)
    first = server.requests[0]
    assert first.path == "/v1/embeddings"
    assert first.headers["authorization"] == f"Bearer {server.api_key}"
    assert {k: first.body[k] for k in ("model", "dimensions", "encoding_format")} == {
        "model": "text-embedding-3-small", "dimensions": 384, "encoding_format": encoding}
    assert (p.stats.calls, p.stats.texts, p.stats.retries) == (3, 10, 0)
    assert p.stats.approx_tokens == usage_tokens(TEXTS)  # what the endpoint billed


def test_requests_stay_within_the_api_limits(server):
    short = [f"t{i}" for i in range(2100)]
    p = provider(server, batch_size=2048)
    assert_vectors(p.embed(short), short)
    assert sorted(len(r.inputs) for r in server.requests) == [52, 2048]
    server.reset()
    big = [f"doc{i} " + "lorem " * 4000 for i in range(40)]  # ~8,000 estimated tokens each
    assert_vectors(provider(server, batch_size=2048).embed(big), big)
    sizes = [[estimate_tokens(t) for t in r.inputs] for r in server.requests]
    assert sorted(len(s) for s in sizes) == [3, 37]
    assert all(sum(s) <= 300_000 and max(s) <= 8191 for s in sizes)


@pytest.mark.parametrize("policy", ["truncate", "split"])
def test_long_texts_follow_the_declared_policy(server, policy):
    long = "alpha beta gamma " * 2000  # 34,000 bytes: ~11,334 estimated tokens > 8191
    p = provider(server, long_text=policy)
    table = embed_texts([("h-long", long), ("h-short", "short text")], p)
    rows = {r["chunk_hash"]: r for r in table.to_pylist()}
    assert rows["h-short"]["long_text_policy_applied"] is None
    assert rows["h-long"]["long_text_policy_applied"] == policy
    sent = [t for t in server.texts if t != "short text"]
    assert all(len(t.encode()) <= 8191 * 3 for t in sent)
    if policy == "truncate":
        assert len(sent) == 1 and long.startswith(sent[0]) and len(sent[0]) > 24_000
        expected = expected_vectors(sent, 384)[0]
    else:
        assert len(sent) == 2 and "".join(sent) == long
        weights = np.array([estimate_tokens(t) for t in sent], dtype=np.float64)
        mean = (expected_vectors(sent, 384).astype(np.float64) * weights[:, None]).sum(axis=0)
        expected = mean / np.linalg.norm(mean)
    np.testing.assert_allclose(rows["h-long"]["embedding"], expected, atol=1e-6)


# --------------------------------------------------------------------------- faults


def test_retry_after_in_seconds_and_http_date_is_honoured(server):
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    server.script(
        Reply(429, headers={"Retry-After": "7"}),
        Reply(429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)}),
        Reply(503, headers={"retry-after-ms": "1500"}),
    )
    p = provider(server)
    assert_vectors(p.embed(TEXTS), TEXTS)
    assert len(server.requests) == 4 and p.stats.retries == 3
    assert 7 <= p.sleeps[0] < 7.01
    assert 28 < p.sleeps[1] <= 30.01
    assert 1.5 <= p.sleeps[2] < 1.51


def test_parse_retry_after():
    now = dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "Mon, 02 Nov 2026 09:00:42 GMT"}, now) == 42
    assert parse_retry_after({"retry-after": "Mon, 02 Nov 2026 08:00:00 GMT"}, now) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_transient_faults_are_retried_with_backoff(server):
    server.script(
        Reply(500),
        Reply(delay=1.0),  # the client times out first
        Reply(body=b"this is not json"),
        Reply(body=b'{"object": "list"}'),  # no data
    )
    p = provider(server, timeout=0.25, max_concurrency=1)
    assert_vectors(p.embed(TEXTS), TEXTS)
    assert len(server.requests) == 5 and p.stats.retries == 4 and p.stats.calls == 5
    assert all(r.inputs == TEXTS for r in server.requests)
    # exponential, with jitter: each wait in [base * 2^n / 2, base * 2^n]
    for attempt, wait in enumerate(p.sleeps):
        assert 0.001 * 2**attempt / 2 <= wait <= 0.001 * 2**attempt


def test_retries_exhausted_is_a_permanent_failure(server):
    server.script(*[Reply(503)] * 3)
    p = provider(server, max_retries=2)
    with pytest.raises(PartialEmbeddingError, match="gave up after 3 attempts") as err:
        p.embed(TEXTS)
    assert len(server.requests) == 3 and err.value.vectors == {}


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(400), "400"),
        (Reply(404), "RAGMART_OPENAI_MODEL"),
        (Reply(drop_vectors=1), "returned 9 embeddings for 10 inputs"),
        (Reply(dimensions=1536), r"shape \(1536,\), expected \(384,\)"),
        (Reply(429, headers={"Retry-After": "3600"}), "RAGMART_OPENAI_BACKOFF_MAX"),
    ],
)
def test_permanent_failures_are_not_retried(server, reply, message):
    server.script(reply)
    with pytest.raises(PartialEmbeddingError, match=message):
        provider(server).embed(TEXTS)
    assert len(server.requests) == 1


@pytest.mark.parametrize("key", ["sk-wrong-key-987", "plain-wrong-key-5150"])
def test_a_wrong_key_fails_without_leaking_it(server, clean_env, key):
    clean_env.setenv("OPENAI_API_KEY", key)  # the server echoes it in its 401 body
    with pytest.raises(PartialEmbeddingError, match="401.*OPENAI_API_KEY") as err:
        provider(server).embed(TEXTS)
    assert len(server.requests) == 1
    assert key not in "".join(traceback.format_exception(err.value))


def test_vectors_before_a_permanent_failure_are_kept(server):
    server.script(Reply(), Reply(400))
    p = provider(server, batch_size=2, max_concurrency=1)
    items = [(f"h{i}", t) for i, t in enumerate(TEXTS)]  # hash order == text order
    with pytest.raises(EmbeddingIncompleteError, match="after 2 of 10 texts") as err:
        embed_texts(items, p)
    assert len(server.requests) == 2  # nothing started after the failure
    table = err.value.table
    assert table.column("chunk_hash").to_pylist() == ["h0", "h1"]
    assert_vectors(np.array(table.column("embedding").to_pylist()), TEXTS[:2])


def test_requests_in_flight_are_bounded(server):
    server.script(*[Reply(delay=0.15)] * 12)
    p = provider(server, batch_size=1, max_concurrency=3)
    assert_vectors(p.embed(TEXTS[:12]), TEXTS[:12])
    assert server.max_in_flight == 3


# --------------------------------------------------------------------------- dbt side


OLD_RUNS_DDL = """create table embedding_runs (invocation_id varchar, provider varchar,
    embedding_model varchar, started_at timestamp, finished_at timestamp,
    chunks_in_serving_set bigint, chunks_needing_vectors bigint, provider_calls bigint,
    texts_sent bigint, cache_hits bigint, approx_tokens bigint, seconds double)"""


def test_runs_gain_cost_and_retries_on_an_old_table(clean_env, tmp_path):
    conn = duckdb.connect()
    conn.execute(OLD_RUNS_DDL)
    conn.execute("insert into embedding_runs values ('old', 'hash', 'hash-384-v1', now(), "
                 "now(), 1, 1, 1, 1, 0, 1, 0.1)")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"prices": {"openai": {"text-embedding-3-small": 2.0}}}))
    clean_env.setenv("RAGMART_PRICE_TABLE", str(prices))
    run = EmbeddingRun.start(provider="openai", embedding_model="text-embedding-3-small@384")
    stats = OpenAIProvider().stats
    stats.calls, stats.texts, stats.approx_tokens, stats.retries = 3, 10, 250_000, 2
    run.finish(stats)
    record_run(conn, run)
    rows = conn.execute("select invocation_id, retries, estimated_cost_usd, error "
                        "from embedding_runs order by started_at").fetchall()
    assert rows == [("old", None, None, None), (run.invocation_id, 2, 0.5, None)]
    clean_env.delenv("RAGMART_PRICE_TABLE")
    assert load_price_table()["hash"] == {"*": 0.0} and load_price_table()["local"] == {"*": 0.0}
    clean_env.setenv("RAGMART_PRICE_TABLE", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="missing.json not found.*RAGMART_PRICE_TABLE"):
        EmbeddingRun.start(provider="hash", embedding_model="hash-384-v1")
    prices.write_text(json.dumps({"prices": {"openai": {"m": -1}}}))
    with pytest.raises(ValueError, match="prices.openai.m must be a non-negative"):
        load_price_table(prices)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def served(project: Project) -> list[tuple[str, str, list[float]]]:
    return project.query(
        "select document_id, chunk_text, embedding::float[] from fct_chunk_embeddings_v1 "
        "order by chunk_id"
    )


def cached_hashes(project: Project) -> set[str]:
    return {h for (h,) in project.query("select chunk_hash from int_chunk_embeddings")}


def test_dbt_build_keeps_vectors_of_a_failed_run_and_never_resends_them(tmp_path):
    def doc(name: str, n: int) -> str:
        return document(name.title(), {"Rules": [paragraph(name, i) for i in range(n)]})

    secret = "sk-test-secret-5f2c9e71"
    with EmbeddingServer(api_key=secret) as server:
        project = Project(tmp_path, provider="openai", extra_env={
            "OPENAI_API_KEY": secret,
            "RAGMART_OPENAI_BASE_URL": server.base_url,
            "RAGMART_OPENAI_BATCH_SIZE": "4",
            "RAGMART_OPENAI_MAX_CONCURRENCY": "1",
            "RAGMART_OPENAI_BACKOFF_BASE": "0.001",
        })
        project.land("dms/0001.csv", dms_csv([
            {"op": "I", "seq": 10, "document_id": "alpha", "content": doc("alpha", 10)}]))

        # 1. first build: 500 (retried), then a permanent 400 on the third batch of 4
        server.script(Reply(), Reply(500), Reply(), Reply(400))
        proc = project.build(check=False)
        assert proc.returncode != 0 and "are kept in the cache" in proc.stdout
        assert [len(r.inputs) for r in server.requests] == [4, 4, 4, 2]
        kept = server.requests[0].inputs + server.requests[2].inputs
        assert cached_hashes(project) == {sha256(t) for t in kept}
        run = project.last_run()
        assert (run["provider_calls"], run["retries"], run["texts_sent"]) == (4, 1, 8)
        assert run["approx_tokens"] == usage_tokens(kept)
        assert run["estimated_cost_usd"] == pytest.approx(usage_tokens(kept) * 0.02 / 1e6)
        assert "400" in run["error"]
        assert not project.query("select * from information_schema.tables "
                                 "where table_name = 'fct_chunk_embeddings_v1'")
        # an older database: the cache and the runs table without the new columns
        conn = duckdb.connect(str(project.db_path))
        conn.execute("alter table int_chunk_embeddings drop column long_text_policy_applied")
        for column in ("retries", "estimated_cost_usd", "error"):
            conn.execute(f"alter table embedding_runs drop column {column}")
        conn.close()

        # 2. the next build sends only the 2 texts without a vector, in one request
        server.reset()
        project.build()
        assert len(server.requests) == 1 and not set(server.texts) & set(kept)
        assert len(server.texts) == 2
        run = project.last_run()
        assert (run["provider_calls"], run["texts_sent"], run["retries"]) == (1, 2, 0)
        assert run["error"] is None
        rows = served(project)
        assert len(rows) == 10
        np.testing.assert_allclose(
            np.array([r[2] for r in rows]), expected_vectors([r[1] for r in rows], 384),
            atol=1e-6)
        assert project.query("select count(*) from int_chunk_embeddings "
                             "where long_text_policy_applied is null") == [(10,)]

        # 3. an incremental build that fails: the vectors obtained join the cache, the
        #    serving table stays as the previous build left it
        project.land("dms/0002.csv", dms_csv([
            {"op": "I", "seq": 20, "document_id": "bravo", "content": doc("bravo", 6)}]))
        server.reset()
        server.script(Reply(), Reply(401))
        before = cached_hashes(project)
        assert project.build(check=False).returncode != 0
        assert [len(r.inputs) for r in server.requests] == [4, 2]
        assert cached_hashes(project) - before == {sha256(t) for t in server.requests[0].inputs}
        assert served(project) == rows

    for path in tmp_path.rglob("*"):  # the key is in no database, artifact or log
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
