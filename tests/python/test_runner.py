"""`ragmart build [--watch]`: dbt kept warm in one process, builds when files land."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dbt_harness import SAMPLE_LANDING, Project, copy_project

from ragmart.build.runner import BuildOutcome, WarmDbt, landing_fingerprint, parse_args, watch
from ragmart.duck import connect

SAMPLE_FILES = sorted((p for layout in ("dms", "debezium")
                       for p in (SAMPLE_LANDING / layout).iterdir()), key=lambda p: p.name)


class FakeBuilds:
    """Outcomes to hand out in order; records the landing listing seen by each build."""

    def __init__(self, landing: Path, outcomes: list[bool]) -> None:
        self.landing, self.outcomes, self.seen = landing, list(outcomes), []

    def __call__(self) -> BuildOutcome:
        self.seen.append(len(landing_fingerprint(self.landing)))
        return BuildOutcome(self.outcomes.pop(0), 0.1, parsed=False)


def _land(landing: Path, name: str, data: bytes = b"x") -> None:
    (landing / "dms").mkdir(parents=True, exist_ok=True)
    (landing / "dms" / name).write_bytes(data)


def test_watch_builds_when_files_land_and_backs_off_on_failure(tmp_path) -> None:
    landing = tmp_path / "landing"
    _land(landing, "0001.csv")
    builds = FakeBuilds(landing, [True, True, False, False, True])
    waits: list[float] = []
    script = {
        # after build 1 nothing lands for two polls, then a file lands; a hidden file
        # (a copy in progress) changes nothing
        1: lambda: _land(landing, ".0002.csv.tmp"),
        3: lambda: _land(landing, "0002.csv"),
        # build 3 fails and is retried though nothing landed, waiting 2x then 4x the interval
        5: lambda: _land(landing, "0003.csv"),
    }

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        script.get(len(waits), lambda: None)()

    last = watch(builds, landing, interval=1.0, max_builds=5, max_backoff=3.0, sleep=sleep)
    assert last is not None and last.success
    # files seen by each build: the start, 0002, 0003 (fails), retry (fails), retry
    assert builds.seen == [1, 2, 3, 3, 3]
    assert waits == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0]


def test_a_warm_process_builds_like_the_cli_and_releases_the_file(tmp_path, monkeypatch) -> None:
    project_dir = copy_project(tmp_path / "project")
    warm_db, landing = tmp_path / "warm.duckdb", tmp_path / "landing"
    for key, value in {
        "RAGMART_DB": str(warm_db), "RAGMART_LANDING_DIR": str(landing),
        "RAGMART_EMBEDDING_PROVIDER": "hash", "DBT_PROFILES_DIR": str(project_dir),
        "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs"),
        "DO_NOT_TRACK": "1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("RAGMART_KILL_AT", "RAGMART_EMBEDDING_MODEL", "DBT_PROJECT_DIR"):
        monkeypatch.delenv(key, raising=False)

    def land(files: list[Path]) -> None:
        for src in files:
            (landing / src.parent.name).mkdir(parents=True, exist_ok=True)
            (landing / src.parent.name / src.name).write_bytes(src.read_bytes())

    warm = WarmDbt(project_dir, dbt_args=["--quiet"])
    land(SAMPLE_FILES[:4])
    first = warm.build()
    assert first.success and first.parsed, first.failures
    # the file is closed between builds: a writer can open it
    connect(warm_db).close()
    land(SAMPLE_FILES[4:])
    second = warm.build()
    assert second.success and not second.parsed and warm.parses == 1, second.failures
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())
    assert len(results["results"]) > 40
    assert all(r["status"] in ("success", "pass", "warn")
               or (r["unique_id"].startswith("exposure.") and r["status"] == "no-op")
               for r in results["results"]), results["results"]

    # a changed project file means a new parse before the next build
    model = project_dir / "models" / "marts" / "dim_documents.sql"
    model.write_text(model.read_text() + "\n")
    os.utime(model, ns=(model.stat().st_mtime_ns + 10**9,) * 2)
    third = warm.build("--select", "dim_documents")  # one model: the parse is what is tested
    assert third.success and third.parsed and warm.parses == 2, third.failures

    # the same landing zone built by `dbt build` in a fresh process, from scratch (its models:
    # the tests passed above, and they change no table)
    cold = Project(tmp_path / "cold")
    cold.land_sample()
    cold.build("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")
    state = ("select chunk_id, chunk_hash, embedding from fct_chunk_embeddings_v1 order by 1",
             "select document_id, document_version, title from dim_documents order by 1")
    warm_conn = connect(warm_db, read_only=True)
    try:
        for sql in state:
            assert warm_conn.execute(sql).fetchall() == cold.query(sql), sql
    finally:
        warm_conn.close()


def test_the_parse_gets_the_build_arguments_it_takes() -> None:
    # `ragmart build -- --select ...` once failed: dbt parse refuses selection options
    given = ["--quiet", "--select", "+a", "b", "--vars", "{x: 1}", "--full-refresh", "-t", "dev",
             "-s", "c", "--vars={y: 2}", "--exclude-resource-type", "unit_test"]
    assert parse_args(given) == ["--quiet", "--vars", "{x: 1}", "-t", "dev", "--vars={y: 2}"]


def test_a_failed_parse_is_a_failed_build_not_a_crash(tmp_path, monkeypatch) -> None:
    project_dir = copy_project(tmp_path / "project")
    (project_dir / "models" / "marts" / "broken.sql").write_text("select {{ ref('nope') }}")
    monkeypatch.setenv("DBT_PROFILES_DIR", str(project_dir))
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    monkeypatch.setenv("RAGMART_DB", str(tmp_path / "x.duckdb"))
    outcome = WarmDbt(project_dir, dbt_args=["--quiet"]).build()
    assert not outcome.success and "parse failed" in outcome.failures[0]


def test_the_cli_documents_build(capsys) -> None:
    from ragmart.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["build", "--help"])
    assert done.value.code == 0
    assert "--watch" in capsys.readouterr().out
