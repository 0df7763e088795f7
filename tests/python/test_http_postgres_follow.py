"""`ragmart serve` on PostgreSQL serving says what serves now: after `ragmart publish` to the
serving database, /metrics (ragmart_serving_info) and /healthz name the new version without a
restart, as the answers already do."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from test_http import (  # noqa: F401
    QUESTION,
    bearer,
    cli,
    deployment,
    metric_samples,
    published_to_postgres,
)

from ragmart.exit_codes import Exit
from ragmart.http.app import create_app
from ragmart.http.limits import POSTGRES_WORKERS


def serving_versions(client: TestClient) -> list[str]:
    samples = metric_samples(client.get("/metrics").text)
    return [dict(labels)["version"] for (name, labels), value in samples.items()
            if name == "ragmart_serving_info" and value == 1]


def test_the_serving_version_follows_a_publish_to_postgresql(
        deployment, tmp_path, postgres_url, monkeypatch, capsys) -> None:  # noqa: F811
    path, key = published_to_postgres(deployment, tmp_path, postgres_url, monkeypatch, capsys)
    body = {"question": QUESTION, "k": 3, "mode": "vector"}
    with TestClient(create_app(keys_file=str(path), recheck_seconds=0.05)) as client:
        # a search waits on the server most of its time: 8 threads (connections), not the cores
        assert len(client.app.state.pool.current._readers) == POSTGRES_WORKERS == 8
        assert serving_versions(client) == ["v1"]
        assert client.get("/healthz").json()["version"] == "v1"
        code, _out, err = cli(capsys, "publish", "v2", "--force")
        assert code == Exit.OK, err
        answer = client.post("/v1/retrieve", json=body, headers=bearer(key))
        assert {r["index_version"] for r in answer.json()["results"]} == {"v2"}
        deadline = time.monotonic() + 60  # the watcher reads it within a few checks
        while serving_versions(client) != ["v2"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert serving_versions(client) == ["v2"]
        assert client.get("/healthz").json()["version"] == "v2"
        assert answer.headers["x-ragmart-index-version"] in ("v1", "v2")
        code, _out, err = cli(capsys, "rollback")
        assert code == Exit.OK, err
        deadline = time.monotonic() + 60
        while serving_versions(client) != ["v1"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert serving_versions(client) == ["v1"]
        samples = metric_samples(client.get("/metrics").text)
        assert samples[("ragmart_serving_switches_total", ())] == 3
