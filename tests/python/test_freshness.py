"""Freshness: `dbt source freshness` thresholds, the stale / orphan / lag-SLA dbt tests (each
proven to fail, naming the document, on a tampered scratch database) and `ragmart freshness`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import time

import pytest
from cdc_files import document, paragraph
from dbt_harness import Project

from ragmart.duck import connect
from ragmart.exit_codes import Exit
from ragmart.quality.freshness import FreshnessError, freshness, render

TESTS = ("assert_live_versions_are_served", "assert_no_orphaned_embeddings",
         "assert_embedding_lag_within_sla")
STRICT = "{embedding_lag_sla_severity: error}"


def _dms(rows: list[dict]) -> str:
    """A DMS CSV whose changes were committed minutes ago (a live feed, not a replay)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Op", "commit_ts", "change_seq", "document_id", "document_type", "title",
                     "content", "updated_at"])
    for row in rows:
        committed = now - dt.timedelta(minutes=30 - row["seq"])
        writer.writerow([row["op"], committed.isoformat(sep=" "), row["seq"], row["document_id"],
                         "policy", row["document_id"], row.get("content", ""),
                         committed.isoformat(sep=" ")])
    return out.getvalue()


def _policy(name: str, edit: bool = False) -> str:
    paragraphs = [paragraph(name, i) for i in range(3)]
    if edit:
        paragraphs[1] = paragraphs[1].replace("rule", "revised rule")
    return document(f"{name.title()} Policy", {"Scope": [paragraph(name, 9)],
                                                "Policy": paragraphs})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("freshness"))
    project.land("dms/0001_load.csv", _dms([
        {"op": "I", "seq": 1, "document_id": "alpha", "content": _policy("alpha")},
        {"op": "I", "seq": 2, "document_id": "bravo", "content": _policy("bravo")},
        {"op": "I", "seq": 3, "document_id": "charlie", "content": _policy("charlie")},
        {"op": "I", "seq": 4, "document_id": "delta", "content": _policy("delta")},
        {"op": "U", "seq": 5, "document_id": "bravo", "content": _policy("bravo", edit=True)},
        {"op": "D", "seq": 6, "document_id": "delta"},
    ]))
    # both layouts land files (a layout that never landed a file is stale: an error)
    project.land("debezium/0002_noop.jsonl", "")
    # the SLA test as an error: a fresh feed passes it
    project.build("--vars", STRICT)
    return project


def _stored_failures(project: Project, test: str) -> list[dict]:
    conn = connect(project.db_path, read_only=True)
    try:
        cursor = conn.execute(f'select * from main_dbt_test__audit."{test}"')
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def test_source_freshness_passes_fresh_files_and_warns_or_errors_on_old_ones(built) -> None:
    project = built
    fresh = project.dbt("source", "freshness", check=False)
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert "PASS" in fresh.stdout and "WARN" not in fresh.stdout
    old = time.time() - 30 * 3600  # 30 h: past warn_after (24 h), before error_after (72 h)
    for path in project.landing.rglob("*.*"):
        os.utime(path, (old, old))
    warned = project.dbt("source", "freshness", check=False)
    assert warned.returncode == 0 and "WARN" in warned.stdout, warned.stdout[-3000:]
    # the thresholds are vars
    errored = project.dbt("source", "freshness", "--vars",
                          "{source_freshness_warn_after_hours: 6, "
                          "source_freshness_error_after_hours: 12}", check=False)
    assert errored.returncode != 0 and "ERROR STALE" in errored.stdout, errored.stdout[-3000:]


def test_freshness_tests_fail_naming_the_documents_when_tampered(built, capsys) -> None:
    project = built
    healthy = freshness(project.db_path)
    assert healthy.healthy and healthy.live_versions == 3
    assert healthy.last_change_applied["document_id"] == "delta"
    assert healthy.last_change_applied["op"] == "D"
    assert healthy.lag_seconds["max"] is not None and healthy.lag_seconds["max"] < 3600

    conn = connect(project.db_path)
    try:
        # stale: a live version loses one of its served chunks
        conn.execute("delete from fct_chunk_embeddings_v1 where document_id = 'alpha' "
                     "and chunk_index = 0")
        # orphan: rows of bravo's superseded version come back into the serving set
        conn.execute(
            "insert into fct_chunk_embeddings_v1 by name "
            "select * exclude (metadata, document_valid_to, superseded_by_version) "
            "from fct_chunk_history_v1 where document_id = 'bravo' and document_version = 2")
        # lag: charlie's vectors were ready three days after its change was committed
        conn.execute("update fct_chunk_embeddings_v1 set created_at = created_at + "
                     "interval 3 day where document_id = 'charlie'")
        conn.execute("checkpoint")
    finally:
        conn.close()

    # rebuild the freshness facts and run their tests, keeping the failing rows
    proc = project.dbt("build", "--select", "int_document_versions_served+", "--vars", STRICT,
                       "--store-failures", check=False)
    assert proc.returncode != 0
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    for test in TESTS:
        assert f"FAIL 1 {test}" in output, (test, output[-4000:])
    # the build output names the documents (dbt itself only counts failing rows)
    assert re.search(r"stale embeddings: alpha v1 \(.*missing_chunks=1", output), output[-4000:]
    assert "orphaned embeddings: bravo v2 (version_state=superseded" in output
    assert re.search(r"embedding lag over the SLA: charlie v3 \(", output)
    assert not re.search(r"(stale embeddings|orphaned embeddings|over the SLA): "
                         r"(delta|echo)", output)
    stale = _stored_failures(project, "assert_live_versions_are_served")
    assert [(r["document_id"], r["missing_chunks"]) for r in stale] == [("alpha", 1)]
    orphans = _stored_failures(project, "assert_no_orphaned_embeddings")
    assert [(r["document_id"], r["document_version"], r["version_state"]) for r in orphans] == [
        ("bravo", 2, "superseded")]
    late = _stored_failures(project, "assert_embedding_lag_within_sla")
    assert [r["document_id"] for r in late] == ["charlie"]
    assert late[0]["lag_seconds"] > 3 * 86400 - 3600

    # `ragmart freshness` states the same facts
    report = freshness(project.db_path)
    assert not report.healthy
    assert (report.stale_count, report.orphan_count, report.over_sla_count) == (1, 1, 1)
    assert [r["document_id"] for r in report.stale] == ["alpha"]
    assert [(r["document_id"], r["document_version"]) for r in report.orphans] == [("bravo", 2)]
    assert [r["document_id"] for r in report.over_sla] == ["charlie"]
    text = render(report)
    assert re.search(r"alpha v1: (\d+)/(\d+) chunks served", text) and "NOT healthy" in text
    cli = project.ragmart("freshness", "--json", "--check", check=False)
    assert cli.returncode == Exit.CHECK_FAILED
    data = json.loads(cli.stdout)
    assert data["stale_count"] == 1 and data["orphans"][0]["document_id"] == "bravo"
    assert set(data["lag_seconds"]) == {"p50", "p90", "p99", "max"}
    # a longer SLA forgives charlie
    assert freshness(project.db_path, sla_minutes=5 * 1440).over_sla_count == 0


def test_freshness_names_a_database_that_was_never_built(tmp_path) -> None:
    with pytest.raises(FreshnessError, match="does not exist"):
        freshness(tmp_path / "missing.duckdb")
    empty = tmp_path / "empty.duckdb"
    connect(empty).close()
    with pytest.raises(FreshnessError, match="run `dbt build` first"):
        freshness(empty)
