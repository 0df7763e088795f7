"""POST /v1/retrieve has two ways through `ragmart serve`: a plain request (one
`Content-Type: application/json`, no query string, a known key, a body pydantic's JSON parser
accepts) is answered by LeanRetrieve ahead of FastAPI's router; anything else by FastAPI's
route. Both must answer the same bytes with the same status and headers: the same request sent
both ways (`application/json; charset=utf-8` goes to the route) is compared, and the lean path
is shown to have answered its half."""

from __future__ import annotations

import codecs
import datetime as dt
import json

import orjson
import pytest
from fastapi.testclient import TestClient
from test_http import QUESTION, bearer, deployment, env, keys  # noqa: F401

import ragmart
import ragmart.http.app as service
from ragmart.http.app import create_app
from ragmart.http.limits import Limits
from ragmart.retrieval.document import document_json, retrieval_document
from ragmart.retrieval.request import ALL_GROUPS
from ragmart.retrieval.results import RetrievalError
from ragmart.serving.lag import ServingState

LEAN = "application/json"
ROUTE = "application/json; charset=utf-8"
HEADERS = ("content-type", "content-length", "x-ragmart-abstained", "x-ragmart-index-version",
           "retry-after", "www-authenticate")


@pytest.fixture
def lean_answers(monkeypatch) -> list[object]:
    """The requests the lean path accepted (a spy on its validation)."""
    accepted: list[object] = []
    valid = service._valid

    def spy(body: bytes) -> object:
        request = valid(body)
        if request is not None:
            accepted.append(request)
        return request

    monkeypatch.setattr(service, "_valid", spy)
    return accepted


def both_ways(client: TestClient, body: bytes, key: str) -> tuple:
    answers = []
    for content_type in (LEAN, ROUTE):
        response = client.post("/v1/retrieve", content=body,
                               headers={**bearer(key), "content-type": content_type})
        answers.append((response.status_code, response.content,
                        {h: response.headers.get(h) for h in HEADERS}))
    return tuple(answers)


PLAIN = [
    b'{"question": "%s"}' % QUESTION.encode(),
    b'{"question": "%s", "k": 3, "mode": "vector"}' % QUESTION.encode(),
    b'{"question": "%s", "k": 4, "mode": "lexical"}' % QUESTION.encode(),
    b'{"question": "%s", "k": 4, "mode": "hybrid", "as_of": "2026-10-05"}' % QUESTION.encode(),
    b'{"question": "%s", "doc_types": ["no-such-type"]}' % QUESTION.encode(),  # abstains
    b'{"question": "%s", "contract": "policy_answer"}' % QUESTION.encode(),  # 400
    b'{"question": "%s", "as_of": "last tuesday"}' % QUESTION.encode(),
    b'{"question": "%s", "k": 0}' % QUESTION.encode(),
    b'{"question": "%s", "k": 101}' % QUESTION.encode(),
    b'{"question": "%s", "k": 100000000000000000000000}' % QUESTION.encode(),
    b'{"question": "   "}',
    b'{"question": "caf\\u00e9 r\xc3\xa9f\xc3\xa9rence", "question": "%s"}' % QUESTION.encode(),
]
OTHER = [
    codecs.BOM_UTF8 + b'{"question": "%s"}' % QUESTION.encode(),  # json.loads reads it
    b'{"question": "%s", "groups": ["hr"]}' % QUESTION.encode(),  # 422
    b'{"question": ',  # 422, not JSON
    b'',
]


def test_the_lean_path_answers_what_fastapis_route_answers(
        keys, lean_answers) -> None:  # noqa: F811
    with TestClient(create_app(keys_file=keys["file"])) as client:
        for i, body in enumerate(PLAIN):
            lean, route = both_ways(client, body, keys["staff"])
            # the lean path answered the first of the two, the route the second
            assert len(lean_answers) == i + 1, body
            assert lean == route, body
            assert lean[0] in (200, 400) and lean[1].startswith(b'{"'), lean
        for body in OTHER:  # what the lean path does not accept, FastAPI answers
            lean, route = both_ways(client, body, keys["staff"])
            unknown = client.post("/v1/retrieve", content=body,
                                  headers={**bearer("rmk_unknown"), "content-type": LEAN})
            assert lean == route and lean[0] in (200, 422), (body, lean)
            assert unknown.status_code == (422 if b"not valid JSON" in lean[1] else 401)
        assert len(lean_answers) == len(PLAIN)


def test_the_lean_path_keeps_the_rate_and_the_key_order(keys, lean_answers) -> None:  # noqa: F811
    limits = Limits(rate=0.001, burst=1)
    body = b'{"question": "%s"}' % QUESTION.encode()
    with TestClient(create_app(keys_file=keys["file"], limits=limits)) as client:
        post = [client.post("/v1/retrieve", content=body,
                            headers={**bearer(keys["hr"]), "content-type": LEAN})
                for _ in range(2)]
        query = client.post("/v1/retrieve?k=3", content=body,
                            headers={**bearer(keys["staff"]), "content-type": LEAN})
        metrics = client.get("/metrics").text
    assert [p.status_code for p in post] == [200, 429]
    assert post[1].json()["error"]["code"] == "rate_limited" and post[1].headers["retry-after"]
    assert query.status_code == 422 and "query parameters" in query.text
    assert len(lean_answers) == 2  # the query string went to FastAPI's route
    assert 'ragmart_http_requests_total{endpoint="/v1/retrieve",status="429"} 1.0' in metrics


def test_the_answers_json_is_the_documents(env) -> None:  # noqa: F811
    """document_json writes the chunks without RetrievedChunk.to_dict: the same bytes as the
    document retrieval_document builds, encoded, for answers of every mode, as of a date, with
    metadata, and an abstention."""
    with ragmart.Retriever() as retriever:
        results = [retriever.retrieve(QUESTION, k=8, groups=ALL_GROUPS, mode=mode)
                   for mode in ("vector", "lexical", "hybrid")]
        results += [retriever.retrieve(QUESTION, k=3, groups=ALL_GROUPS,
                                       as_of=dt.datetime(2026, 10, 5)),
                    retriever.retrieve(QUESTION, groups=["all-staff"], doc_types=["nothing"])]
    assert results[-1].abstained and all(len(r) > 0 for r in results[:3])
    state = ServingState(version="v1", snapshot="v1.duckdb", published_at="2026-11-30T08:00:00",
                         serving_built_at=None, build_built_at=None, serving_behind_build=False)
    for result in results:
        for served in (state, None):
            document = retrieval_document("é " + QUESTION, result, served)
            assert document_json("é " + QUESTION, result, served) == orjson.dumps(document)
            assert json.loads(document_json("q", result, served)) == json.loads(
                json.dumps(retrieval_document("q", result, served)))


def test_a_question_unicode_cannot_hold_is_a_400_not_a_500(keys) -> None:  # noqa: F811
    """A lone surrogate (JSON's "\\ud800" escape, which json.loads reads into a str) is refused
    with a reason, over HTTP (in every mode) and through the Python API."""
    body = b'{"question": "\\ud800 %s", "mode": "%s"}'
    with TestClient(create_app(keys_file=keys["file"])) as client:
        for mode in (b"vector", b"lexical", b"hybrid"):
            for content_type in (LEAN, ROUTE):
                response = client.post("/v1/retrieve", content=body % (QUESTION.encode(), mode),
                                       headers={**bearer(keys["staff"]),
                                                "content-type": content_type})
                assert response.status_code == 400, (mode, response.text)
                assert "lone surrogate '\\ud800' at character 0" in response.json()[
                    "error"]["message"]
    with pytest.raises(RetrievalError, match="lone surrogate"):
        ragmart.retrieve("\ud800 " + QUESTION, groups=ALL_GROUPS)
