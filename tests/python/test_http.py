"""`ragmart serve`: the HTTP retrieval service, tested as a client meets it.

One deployment is built once for the module (the sample corpus, v1 and v2, v1 published, hash
provider). Most cases run the application in-process (FastAPI's TestClient, or httpx on the
ASGI app for concurrent requests); one real `ragmart serve` process on a loopback port answers a
client loop while `ragmart publish` and `ragmart rollback` switch what serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from dbt_harness import ROOT, Project
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragmart.cli.main import main
from ragmart.exit_codes import Exit
from ragmart.http.app import create_app
from ragmart.http.keys import KeyRing, KeysFileError
from ragmart.http.limits import Limits, LimitsError
from ragmart.retrieval.api import Retriever

QUESTION = "referral bonus for a hired candidate"
HR_ONLY = {"hr-hiring-referrals", "hr-offboarding-final-pay"}  # allowed_groups [hr, managers]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, built_samples) -> Project:
    project = built_samples.copy(tmp_path_factory.mktemp("serve"))  # the sample, built
    skip = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")
    project.build(*skip, "--vars", "{index_version: v2, chunker_version: md-sections-v2}")
    project.ragmart("publish", "v1")
    return project


@pytest.fixture
def env(deployment, monkeypatch) -> Project:
    for name, value in deployment.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    return deployment


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return int(code), out, err


@pytest.fixture
def keys(env, tmp_path, capsys, monkeypatch) -> dict[str, str]:
    """Keys made by `ragmart keys add` (name -> key), in a keys file of this test."""
    path = tmp_path / "keys.json"
    monkeypatch.setenv("RAGMART_API_KEYS_FILE", str(path))
    made = {}
    for name, access in (("staff", ["--groups", "all-staff"]), ("hr", ["--groups", "hr"]),
                         ("ops", ["--all-groups"])):
        code, out, err = cli(capsys, "keys", "add", name, *access, "--keys", str(path))
        assert code == Exit.OK, err
        made[name] = out.strip()
    made["file"] = str(path)
    return made


@pytest.fixture
def client(keys):
    with TestClient(create_app(keys_file=keys["file"])) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def documents(answer: dict) -> set[str]:
    return {r["document_id"] for r in answer["results"]}


# ================================================================ the answer is the CLI's


@pytest.mark.parametrize(("key", "access", "body", "argv"), [
    ("staff", ["--groups", "all-staff"], {"k": 3}, ["-k", "3"]),
    ("hr", ["--groups", "hr"], {"k": 10}, ["-k", "10"]),
    ("ops", ["--all-groups"], {"contract": "policy_answers", "as_of": "2026-10-05"},
     ["--contract", "policy_answers", "--as-of", "2026-10-05"]),
    ("staff", ["--groups", "all-staff"], {"doc_types": ["no-such-type"]},
     ["--doc-type", "no-such-type"]),
    # the search modes (hybrid search): the request's mode is the CLI's --mode
    ("staff", ["--groups", "all-staff"], {"k": 4, "mode": "vector"},
     ["-k", "4", "--mode", "vector"]),
    ("hr", ["--groups", "hr"], {"k": 4, "mode": "lexical"}, ["-k", "4", "--mode", "lexical"]),
    ("staff", ["--groups", "all-staff"], {"k": 4, "mode": "hybrid"},
     ["-k", "4", "--mode", "hybrid"]),
])
def test_the_answer_is_the_json_of_ragmart_retrieve(client, keys, capsys, key, access, body,
                                                    argv) -> None:
    code, out, err = cli(capsys, "retrieve", QUESTION, *access, *argv, "--json")
    expected = json.loads(out)
    response = client.post("/v1/retrieve", json={"question": QUESTION, **body},
                           headers=bearer(keys[key]))
    assert response.status_code == 200, response.text
    answer = response.json()
    # how the search ran differs, not what it found: the service's long-lived reader scores the
    # vectors it keeps in memory ('memory', counting the eligible chunks), the CLI's one-off
    # search reads them from the file (an as-of search and an abstention run alike)
    strategy, cli_strategy = answer.pop("strategy"), expected.pop("strategy")
    eligible, cli_eligible = answer.pop("eligible_chunks"), expected.pop("eligible_chunks")
    assert (strategy, eligible) == (cli_strategy, cli_eligible) or (
        "memory" in strategy and eligible >= len(answer["results"]))
    assert answer == expected
    assert response.headers["x-ragmart-abstained"] == str(expected["abstained"]).lower()
    assert code == (Exit.ABSTAINED if expected["abstained"] else Exit.OK), err
    assert expected["serving"]["version"] == "v1"
    if key == "hr":
        assert documents(expected) & HR_ONLY  # the case below hides something real
    if body.get("doc_types"):
        assert expected["abstained"] and expected["reason"]


def test_errors_map_to_statuses_with_ragmarts_message(client, keys, capsys) -> None:
    staff = bearer(keys["staff"])

    def post(body: dict, headers=staff) -> httpx.Response:
        return client.post("/v1/retrieve", json=body, headers=headers)

    code, _, err = cli(capsys, "retrieve", QUESTION, "--contract", "policy_answer")
    refused = post({"question": QUESTION, "contract": "policy_answer"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "bad_request")
    assert code == Exit.USAGE and refused.json()["error"]["message"] in err  # ragmart's words
    assert "Did you mean 'policy_answers'" in refused.json()["error"]["message"]
    cases = [
        ({"question": QUESTION, "as_of": "last tuesday"}, 400, "as_of 'last tuesday' is not"),
        ({"question": QUESTION, "k": 0}, 400, "k must be a positive integer"),
        ({"question": QUESTION, "k": 101}, 400, "at most 100 on this service"),
        ({"question": "   "}, 400, "the question is empty"),
        ({"question": QUESTION, "k": "5"}, 422, "k: Input should be a valid integer"),
        ({"question": QUESTION, "mode": "fuzzy"}, 422, "mode"),
        ({"k": 5}, 422, "question: Field required"),
    ]
    for body, status, words in cases:
        answer = post(body)
        assert answer.status_code == status and words in answer.json()["error"]["message"], \
            (body, answer.text)
    broken = client.post("/v1/retrieve", content=b'{"question": ',
                         headers={**staff, "content-type": "application/json"})
    assert broken.status_code == 422 and "body: not valid JSON" in broken.text
    # the key is checked first: a caller without one learns nothing of the body's schema
    for body in ({"question": QUESTION}, {"question": QUESTION, "groups": ["hr"]}, {}):
        assert post(body, headers={}).status_code == 401
    unauthorized = post({"question": QUESTION}, headers={})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"].startswith("Bearer")
    assert set(unauthorized.json()) == {"error"}
    big = client.post("/v1/retrieve", content=b'{"question": "' + b"x" * 70_000 + b'"}',
                      headers={**staff, "content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v2/nothing").json()["error"]["code"] == "not_found"


def test_nothing_published_is_503_and_the_build_database_is_never_held(
        deployment, keys, monkeypatch, tmp_path) -> None:
    unpublished = tmp_path / "build.duckdb"
    shutil.copy(deployment.db_path, unpublished)
    monkeypatch.setenv("RAGMART_DB", str(unpublished))
    with TestClient(create_app(keys_file=keys["file"])) as c:
        health = c.get("/healthz")  # open to load balancers: says nothing of the disk
        assert health.status_code == 503 and str(tmp_path) not in health.text
        health = c.get("/healthz", headers=bearer(keys["staff"]))  # a key: why
        assert health.status_code == 503 and "ragmart publish" in health.text
        answer = c.post("/v1/retrieve", json={"question": QUESTION},
                        headers=bearer(keys["staff"]))
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
        writer = duckdb.connect(str(unpublished))  # a build could take the file
        writer.close()
    # --db names a file to serve as it is
    with TestClient(create_app(keys_file=keys["file"], db_path=unpublished)) as c:
        answer = c.post("/v1/retrieve", json={"question": QUESTION},
                        headers=bearer(keys["staff"]))
        assert answer.status_code == 200 and answer.json()["serving"] is None


# ================================================================ access comes from the key


def test_a_caller_cannot_widen_its_access(client, keys) -> None:
    staff = bearer(keys["staff"])
    body = {"question": QUESTION, "k": 20}
    baseline = client.post("/v1/retrieve", json=body, headers=staff).json()
    hr_view = client.post("/v1/retrieve", json=body, headers=bearer(keys["hr"])).json()
    assert documents(hr_view) & HR_ONLY and not documents(baseline) & HR_ONLY

    # fields naming groups or the switch: refused, whatever their spelling or nesting
    for extra in ({"groups": ["hr"]}, {"all_groups": True}, {"allowed_groups": ["hr"]},
                  {"GROUPS": ["hr"]}, {"caller": {"groups": ["hr"]}}, {"key": keys["ops"]},
                  {"options": {"all_groups": True}}, {"__proto__": {"all_groups": True}}):
        answer = client.post("/v1/retrieve", json={**body, **extra}, headers=staff)
        assert answer.status_code == 422 and "Extra inputs are not permitted" in answer.text
    nested = client.post("/v1/retrieve", json={**body, "question": {"text": QUESTION,
                                                                    "groups": ["hr"]}},
                         headers=staff)
    assert nested.status_code == 422
    # query parameters: refused
    for query in ("groups=hr", "all_groups=true", "k=3"):
        answer = client.post(f"/v1/retrieve?{query}", json=body, headers=staff)
        assert answer.status_code == 422 and "query parameters" in answer.text
    # headers: ignored, the answer is the key's
    for name, value in (("X-Ragmart-Groups", "hr"), ("X-Groups", "hr,managers"),
                        ("X-All-Groups", "true"), ("X-Forwarded-User", "ops"),
                        ("Groups", "hr"), ("X-Api-Key", keys["ops"])):
        answer = client.post("/v1/retrieve", json=body, headers={**staff, name: value})
        assert answer.status_code == 200 and answer.json() == baseline, name
    # the JSON body as another content type, a form, a duplicated member: no way in
    form = client.post("/v1/retrieve", data={"question": QUESTION, "groups": "hr"},
                       headers=staff)
    assert form.status_code == 422
    duplicated = '{"question": "' + QUESTION + '", "k": 20, "groups": ["hr"], "groups": null}'
    answer = client.post("/v1/retrieve", content=duplicated,
                         headers={**staff, "content-type": "application/json"})
    assert answer.status_code == 422
    # Authorization: one header, one bearer token, a key of the file
    two = [("authorization", f"Bearer {keys['staff']}"), ("authorization",
                                                          f"Bearer {keys['ops']}")]
    for headers in (two, list(reversed(two))):
        answer = client.post("/v1/retrieve", json=body, headers=httpx.Headers(headers))
        assert answer.status_code == 401
    for value in (f"Bearer {keys['staff']}, {keys['ops']}", f"Bearer {keys['staff']}x",
                  f"Basic {keys['ops']}", keys["ops"], "Bearer ", f"Bearer {keys['ops'][:-1]}",
                  f"Bearer {hashlib.sha256(keys['ops'].encode()).hexdigest()}"):
        answer = client.post("/v1/retrieve", json=body, headers={"Authorization": value})
        assert answer.status_code == 401, value
    # the operator switch is the key's: the ops key sees what no group-less request could
    ops = client.post("/v1/retrieve", json=body, headers=bearer(keys["ops"])).json()
    assert documents(ops) & HR_ONLY


def test_keys_are_stored_hashed_and_read_again_when_the_file_changes(client, keys, capsys
                                                                     ) -> None:
    text = Path(keys["file"]).read_text()
    for name in ("staff", "hr", "ops"):
        assert keys[name] not in text
        assert hashlib.sha256(keys[name].encode()).hexdigest() in text
    assert oct(Path(keys["file"]).stat().st_mode & 0o777) == "0o600"
    body = {"question": QUESTION}
    assert client.post("/v1/retrieve", json=body, headers=bearer(keys["hr"])).status_code == 200
    code, _, err = cli(capsys, "keys", "remove", "hr", "--keys", keys["file"])
    assert code == Exit.OK, err
    assert client.post("/v1/retrieve", json=body, headers=bearer(keys["hr"])).status_code == 401
    code, out, _ = cli(capsys, "keys", "add", "late", "--groups", "hr", "--keys", keys["file"])
    assert client.post("/v1/retrieve", json=body,
                       headers=bearer(out.strip())).status_code == 200
    code, _, err = cli(capsys, "keys", "add", "late", "--groups", "x", "--keys", keys["file"])
    assert code == Exit.USAGE and "a key named 'late' exists" in err
    code, _, err = cli(capsys, "keys", "add", "both", "--groups", "x", "--all-groups",
                       "--keys", keys["file"])
    assert code == Exit.USAGE and "not allowed with argument" in err


def test_a_keys_file_in_yaml_and_the_entries_it_refuses(tmp_path, capsys) -> None:
    path = tmp_path / "keys.yml"
    code, out, err = cli(capsys, "keys", "add", "app", "--groups", "hr,managers", "--keys",
                         str(path))
    assert code == Exit.OK, err
    ring = KeyRing.load(path)
    assert ring.find(out.strip()).groups == ("hr", "managers")
    assert ring.find(out.strip() + "x") is None
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"keys": [
        {"name": "a", "key": "rmk_secret", "groups": ["hr"]},
        {"name": "b", "sha256": "ABC", "groups": ["hr"]},
        {"name": "c", "sha256": "0" * 64, "groups": "hr", "all_groups": "yes"}]}))
    with pytest.raises(KeysFileError) as refused:
        KeyRing.load(plain)
    message = str(refused.value)
    assert "unknown field(s) ['key']" in message and "never the key itself" in message
    assert "64 lowercase hex" in message and "groups must be a list" in message
    code, _, err = cli(capsys, "serve", "--keys", str(tmp_path / "none.json"))
    assert code == Exit.USAGE and "does not exist" in err
    code, _, err = cli(capsys, "serve", "--keys", str(path), "--workers", "0")
    assert code == Exit.USAGE and "--workers 0 is out of range" in err


# ================================================================ bounds


def test_rate_and_k_caps_answer_4xx_per_key(keys, env) -> None:
    limits = Limits(rate=0.001, burst=2, max_k=3)
    with TestClient(create_app(keys_file=keys["file"], limits=limits)) as c:
        body = {"question": QUESTION, "k": 3}
        statuses = [c.post("/v1/retrieve", json=body, headers=bearer(keys["staff"]))
                    for _ in range(3)]
        assert [s.status_code for s in statuses] == [200, 200, 429]
        assert "RAGMART_SERVE_RATE" in statuses[2].text
        assert int(statuses[2].headers["retry-after"]) >= 1
        other = c.post("/v1/retrieve", json=body, headers=bearer(keys["hr"]))
        assert other.status_code == 200  # another key has its own bucket
        over = c.post("/v1/retrieve", json={**body, "k": 4}, headers=bearer(keys["ops"]))
        assert over.status_code == 400 and "RAGMART_SERVE_MAX_K" in over.text


def test_limits_come_from_the_environment(keys, env, monkeypatch) -> None:
    monkeypatch.setenv("RAGMART_SERVE_MAX_BODY_BYTES", "100")
    with TestClient(create_app(keys_file=keys["file"])) as c:
        answer = c.post("/v1/retrieve", json={"question": "x" * 100},
                        headers=bearer(keys["staff"]))
        assert answer.status_code == 413 and "100 bytes" in answer.text
    monkeypatch.setenv("RAGMART_SERVE_WORKERS", "zero")
    with pytest.raises(LimitsError, match="RAGMART_SERVE_WORKERS='zero'"):
        Limits.from_env()


class Gate:
    """Retriever.retrieve held on the question "slow" until released (a test-only fault)."""

    def __init__(self, monkeypatch) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        original = Retriever.retrieve

        def retrieve(reader, question, **options):
            if question == "slow":
                self.entered.set()
                self.release.wait(60)  # the test releases it; never hangs the suite
            return original(reader, question, **options)

        monkeypatch.setattr(Retriever, "retrieve", retrieve)


async def _with_slow_request(app, keys: dict, gate: Gate, during) -> tuple[httpx.Response, ...]:
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://test") as c:
        slow = asyncio.create_task(c.post("/v1/retrieve", json={"question": "slow"},
                                          headers=bearer(keys["staff"])))
        assert await asyncio.to_thread(gate.entered.wait, 60)
        answers = await during(c)
        assert not slow.done()  # still held: the answers above did not wait for it
        gate.release.set()
        return (*answers, await slow)


def test_a_slow_search_delays_neither_healthz_nor_another_search(keys, env, monkeypatch
                                                                 ) -> None:
    gate = Gate(monkeypatch)
    app = create_app(keys_file=keys["file"], limits=Limits(workers=2))

    async def during(c: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        return (await c.get("/healthz"),
                await c.post("/v1/retrieve", json={"question": QUESTION},
                             headers=bearer(keys["hr"])))

    health, other, slow = asyncio.run(_with_slow_request(app, keys, gate, during))
    assert health.status_code == 200 and health.json()["version"] == "v1"
    assert other.status_code == 200 and other.json()["results"]
    assert slow.status_code == 200


def test_requests_over_the_concurrency_cap_are_refused_at_once(keys, env, monkeypatch) -> None:
    gate = Gate(monkeypatch)
    app = create_app(keys_file=keys["file"], limits=Limits(max_concurrency=1, workers=2))

    async def during(c: httpx.AsyncClient) -> tuple[httpx.Response, ...]:
        return (await c.post("/v1/retrieve", json={"question": QUESTION},
                             headers=bearer(keys["hr"])),)

    refused, slow = asyncio.run(_with_slow_request(app, keys, gate, during))
    assert refused.status_code == 429 and "RAGMART_SERVE_MAX_CONCURRENCY" in refused.text
    assert slow.status_code == 200


# ================================================================ metrics, OpenAPI, mode


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_latency_abstentions_and_what_serves(client, keys) -> None:
    staff = bearer(keys["staff"])
    client.post("/v1/retrieve", json={"question": QUESTION}, headers=staff)
    client.post("/v1/retrieve", json={"question": QUESTION, "doc_types": ["none"]},
                headers=staff)
    client.post("/v1/retrieve", json={"question": QUESTION})
    samples = metric_samples(client.get("/metrics").text)
    requests = "ragmart_http_requests_total"
    assert samples[(requests, (("endpoint", "/v1/retrieve"), ("status", "200")))] == 2
    assert samples[(requests, (("endpoint", "/v1/retrieve"), ("status", "401")))] == 1
    assert samples[("ragmart_http_request_seconds_count", (("endpoint", "/v1/retrieve"),))] == 3
    abstained = {labels: v for (name, labels), v in samples.items()
                 if name == "ragmart_retrieve_abstentions_total"}
    assert abstained == {(("clause", "doc_type_filter"),): 1}
    serving = [dict(labels) for (name, labels), v in samples.items()
               if name == "ragmart_serving_info" and v == 1]
    assert [s["version"] for s in serving] == ["v1"]
    # the matrix products of the vectors in memory, by the searches each served
    products = {dict(labels)["queries"]: v for (name, labels), v in samples.items()
                if name == "ragmart_search_products"}
    assert products and sum(int(n) * v for n, v in products.items()) >= 1


def test_openapi_describes_the_request_without_any_access_field(client) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["RetrieveRequest"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"question", "k", "contract", "as_of", "doc_types",
                                         "mode"}
    assert "/v1/retrieve" in spec["paths"] and client.get("/docs").status_code == 200


def test_healthz_tells_a_caller_without_a_key_the_status_and_version_only(client, keys
                                                                             ) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "version": "v1"}
    for headers in ({"Authorization": "Bearer rgm_unknown"}, {"X-Api-Key": keys["staff"]}):
        assert client.get("/healthz", headers=headers).json() == {"status": "ok",
                                                                  "version": "v1"}
    known = client.get("/healthz", headers=bearer(keys["hr"])).json()
    assert known["snapshot"].endswith(".duckdb") and known["chunks"] > 0


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json", "/docs"])
def test_private_endpoints_need_a_key_when_the_operator_says_so(keys, monkeypatch, path
                                                                ) -> None:
    with TestClient(create_app(keys_file=keys["file"])) as c:  # default: open
        assert c.get(path).status_code == 200
    monkeypatch.setenv("RAGMART_SERVE_PRIVATE_ENDPOINTS", "true")
    with TestClient(create_app(keys_file=keys["file"])) as c:
        for headers in ({}, {"Authorization": "Bearer rgm_unknown"},
                        {"Authorization": f"Basic {keys['staff']}"}):
            refused = c.get(path, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
            assert refused.json()["error"]["code"] == "unauthorized"
            assert "RAGMART_SERVE_PRIVATE_ENDPOINTS" in refused.json()["error"]["message"]
        assert c.get(path + "?x=1").status_code == 401
        assert c.get(path, headers=bearer(keys["hr"])).status_code == 200
        assert c.get("/healthz").json() == {"status": "ok", "version": "v1"}  # stays open
        samples = metric_samples(c.get("/metrics", headers=bearer(keys["ops"])).text)
        assert samples[("ragmart_http_requests_total",
                        (("endpoint", path), ("status", "401")))] == 4
    monkeypatch.setenv("RAGMART_SERVE_PRIVATE_ENDPOINTS", "maybe")
    with pytest.raises(LimitsError, match="RAGMART_SERVE_PRIVATE_ENDPOINTS"):
        Limits.from_env()


def published_to_postgres(deployment, tmp_path, postgres_url, monkeypatch, capsys
                          ) -> tuple[Path, str]:
    """A copy of `deployment` with RAGMART_SERVING_URL set and v1 published there; (a keys
    file, its key for the group all-staff)."""
    project = Project(tmp_path / "copy")
    shutil.copytree(deployment.workdir, project.workdir, ignore=shutil.ignore_patterns("logs"))
    for name, value in project.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAGMART_SERVING_URL", postgres_url)
    monkeypatch.chdir(ROOT)
    code, _out, err = cli(capsys, "publish", "v1")
    assert code == Exit.OK, err
    path = tmp_path / "keys.json"
    code, out, err = cli(capsys, "keys", "add", "staff", "--groups", "all-staff", "--keys",
                         str(path))
    assert code == Exit.OK, err
    return path, out.strip()


def test_with_a_serving_url_the_service_answers_from_postgresql(
        deployment, tmp_path, postgres_url, monkeypatch, capsys) -> None:
    """RAGMART_SERVING_URL set: the service answers what `ragmart retrieve` answers from
    PostgreSQL, in vector and lexical mode (with their scores), and follows a publish there
    without a restart."""
    path, key = published_to_postgres(deployment, tmp_path, postgres_url, monkeypatch, capsys)
    code, out, err = cli(capsys, "retrieve", QUESTION, "--groups", "all-staff", "-k", "3",
                         "--mode", "vector", "--json")
    assert code == Exit.OK, err
    expected = json.loads(out)
    code, out, err = cli(capsys, "retrieve", QUESTION, "--groups", "all-staff", "-k", "3",
                         "--mode", "lexical", "--json")
    assert code == Exit.OK, err
    expected_lexical = json.loads(out)
    assert expected_lexical["strategy"] == "bm25"
    assert all(r["lexical_score"] for r in expected_lexical["results"])
    body = {"question": QUESTION, "k": 3, "mode": "vector"}
    with TestClient(create_app(keys_file=str(path))) as c:
        answer = c.post("/v1/retrieve", json=body, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
        assert {r["index_version"] for r in expected["results"]} == {"v1"}
        # lexical search on PostgreSQL too: the answer `ragmart retrieve --mode lexical` gives
        lexical = c.post("/v1/retrieve", json={**body, "mode": "lexical"}, headers=bearer(key))
        assert lexical.status_code == 200, lexical.text
        assert lexical.json() == expected_lexical and lexical.json()["results"]
        code, _out, err = cli(capsys, "publish", "v2", "--force")
        assert code == Exit.OK, err
        after = c.post("/v1/retrieve", json=body, headers=bearer(key))
        assert after.status_code == 200, after.text
        assert {r["index_version"] for r in after.json()["results"]} == {"v2"}


# ================================================================ a real server, switching


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_running_server_follows_publish_and_rollback_without_a_failed_request(
        deployment, tmp_path) -> None:
    project = Project(tmp_path / "copy")
    shutil.copytree(deployment.workdir, project.workdir, ignore=shutil.ignore_patterns("logs"))
    keys_file = tmp_path / "keys.json"
    key = project.ragmart("keys", "add", "app", "--groups", "all-staff", "--keys",
                          str(keys_file)).stdout.strip()
    port = free_port()
    # the client loop asks as fast as the server answers (over 50 requests/s on the sample):
    # the key's rate is set past it, so that a 429 cannot hide or fake a failed switch (the
    # rate limit has tests of its own)
    env = {**project.env(), "RAGMART_SERVING_RECHECK_SECONDS": "0.2",
           "RAGMART_API_KEYS_FILE": str(keys_file), "RAGMART_SERVE_RATE": "100000",
           "RAGMART_SERVE_BURST": "100000"}
    server = subprocess.Popen([sys.executable, "-m", "ragmart.cli.main", "serve", "--port",
                               str(port), "--workers", "8"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    seen: list[tuple[int, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/retrieve", json={"question": QUESTION, "k": 3},
                               headers=bearer(key))
                    versions = {x["index_version"] for x in r.json().get("results", [])}
                    seen.append((r.status_code, r.json().get("serving", {}).get("version")))
                    if r.status_code != 200 or len(versions) != 1:
                        failures.append(r.text)
                except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                    failures.append(repr(exc))

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 120
        while not (seen and seen[-1][1] == version) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen and seen[-1][1] == version, (seen[-5:], failures[:3])

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = threading.Thread(target=loop)
        client.start()
        wait_for("v1")
        project.ragmart("publish", "v2", "--force")
        wait_for("v2")
        project.ragmart("rollback")
        wait_for("v1")
        stop.set()
        client.join(60)
        metrics = metric_samples(httpx.get(f"{base}/metrics").text)
    finally:
        stop.set()
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert not failures, (failures[:3], output[-3000:])
    order = [version for _, version in seen]
    switches = [v for i, v in enumerate(order) if i == 0 or v != order[i - 1]]
    assert switches == ["v1", "v2", "v1"], switches
    assert all(status == 200 for status, _ in seen) and len(seen) > 10
    assert metrics[("ragmart_serving_switches_total", ())] == 3
    assert "serving v2" in output and "serving v1" in output
