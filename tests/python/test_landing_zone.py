"""Nothing landed disappears silently (issue 13): every file under the landing zone is read or
reported, every record is an event or a quarantine row with a stable code, conflicting
duplicates are quarantined, implausible timestamps are quarantined, and a landing dir that is
missing or holds no layout fails the build naming the path it looked at.

Package-level tests call what the dbt Python model calls (ragmart.ingest.landing,
ragmart.ingest.cdc); the dbt tests at the end check the same promises through `dbt build` and
`ragmart freshness`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cdc_files import debezium_jsonl, dms_csv
from dbt_harness import Project
from s3_landing import LANDING_KINDS, landing_project

from ragmart.ingest.cdc import parse_landing_file
from ragmart.ingest.landing import (
    LandingZoneError,
    clock_skew_setting,
    ingest_files,
    list_landing_files,
)
from ragmart.ingest.records import DEFAULT_MAX_CLOCK_SKEW

NOW = dt.datetime(2026, 11, 30, 12, 0, 0)
HEADER = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at"


def code(row: dict) -> str | None:
    reason = row["quarantine_reason"]
    return None if reason is None else reason.split(":", 1)[0]


def ingest_dir(landing: Path | str, **kwargs) -> list[dict]:
    table = ingest_files(list_landing_files(landing), seen_keys=set(), seen_hashes=set(),
                         max_content_bytes=1_000_000, now=NOW, **kwargs)
    return table.to_pylist()


# --------------------------------------------------------------------------- line endings


def test_cr_only_csv_is_read_line_by_line() -> None:
    data = (
        f"{HEADER}\r"
        "I,2026-11-02 09:00:00,1,alpha,policy,Alpha,one,2026-11-02 09:00:00\r"
        'U,2026-11-02 09:05:00,2,alpha,policy,Alpha,"two\rlines",2026-11-02 09:05:00\r'
        "I,2026-11-02 09:10:00,3,bravo,policy,Bravo,three,2026-11-02 09:10:00\r"
    ).encode()
    rows = parse_landing_file("dms/0001_mac.csv", data, now=NOW)
    assert [(r["document_id"], r["change_seq"], r["source_line"], code(r)) for r in rows] == [
        ("alpha", 1, 2, None), ("alpha", 2, 3, None), ("bravo", 3, 5, None)]
    assert rows[1]["content"] == "two\rlines"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_gives_the_same_events(newline: str) -> None:
    csv_text = dms_csv([{"op": "I", "seq": 1, "document_id": "a", "content": "x"},
                        {"op": "D", "seq": 2, "document_id": "a"}]).replace("\n", newline)
    jsonl = debezium_jsonl([{"op": "c", "seq": 1, "document_id": "a", "content": "x"},
                            {"op": "d", "seq": 2, "document_id": "a"}]).replace("\n", newline)
    for path, data in (("dms/a.csv", csv_text), ("debezium/a.jsonl", jsonl)):
        rows = parse_landing_file(path, data.encode(), now=NOW)
        assert [(r["op"], r["change_seq"], code(r)) for r in rows] == [
            ("I", 1, None), ("D", 2, None)], path


# --------------------------------------------------------------------------- empty files


@pytest.mark.parametrize("path", ["debezium/e.jsonl", "debezium/e.json", "dms/e.csv"])
@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n"])
def test_an_empty_file_of_any_layout_is_one_unreadable_file_row(path: str, data: bytes) -> None:
    rows = parse_landing_file(path, data, now=NOW)
    assert [(code(r), r["source_line"], r["source_file"]) for r in rows] == [
        ("unreadable_file", None, path)]
    assert "empty" in rows[0]["quarantine_reason"] or "no header" in rows[0]["quarantine_reason"]


# --------------------------------------------------------------------------- timestamp window


def _dms_record(commit_ts: str, updated_at: str = "2026-11-02 09:00:00") -> bytes:
    return f"{HEADER}\nI,{commit_ts},7,doc,policy,Doc,body,{updated_at}\n".encode()


@pytest.mark.parametrize(
    ("commit_ts", "detail"),
    [
        ("2099-01-01 00:00:00", "after the ingestion time"),
        ("9999-12-31 23:59:59", "after the ingestion time"),
        ("0001-01-01 00:00:00", "before 1970-01-01"),
        ("1969-12-31 23:59:59", "before 1970-01-01"),
        ("2026-11-30 12:16:00", "beyond the clock-skew tolerance of 15.0 minutes"),
    ],
)
def test_a_commit_outside_the_window_is_quarantined(commit_ts: str, detail: str) -> None:
    (row,) = parse_landing_file("dms/clock.csv", _dms_record(commit_ts), now=NOW)
    assert code(row) == "timestamp_out_of_window"
    assert detail in row["quarantine_reason"]
    assert "commit_ts" in row["quarantine_reason"]


def test_the_window_edges_and_updated_at() -> None:
    ok = ["1970-01-01 00:00:00", "2026-11-30 12:15:00", "2026-11-30 12:14:59"]
    for commit_ts in ok:
        (row,) = parse_landing_file("dms/clock.csv", _dms_record(commit_ts), now=NOW)
        assert code(row) is None, (commit_ts, row["quarantine_reason"])
    (row,) = parse_landing_file("dms/clock.csv", _dms_record(ok[0], "2099-01-01"), now=NOW)
    assert code(row) == "timestamp_out_of_window" and "updated_at" in row["quarantine_reason"]


def test_debezium_ts_ms_outside_the_window_is_quarantined() -> None:
    line = {"op": "c", "after": {"document_id": "d", "content": "x"}, "source": {"lsn": 1}}
    for ts_ms, detail in ((-1, "before 1970"), (4102444800000, "after the ingestion time")):
        data = json.dumps(line | {"ts_ms": ts_ms}).encode()
        (row,) = parse_landing_file("debezium/clock.jsonl", data, now=NOW)
        assert code(row) == "timestamp_out_of_window" and "ts_ms" in row["quarantine_reason"]
        assert detail in row["quarantine_reason"]


def test_the_clock_skew_tolerance_is_configurable() -> None:
    two_hours_ahead = _dms_record("2026-11-30 14:00:00")
    (row,) = parse_landing_file("dms/c.csv", two_hours_ahead, now=NOW)
    assert code(row) == "timestamp_out_of_window"
    (row,) = parse_landing_file("dms/c.csv", two_hours_ahead, now=NOW,
                                max_clock_skew=clock_skew_setting("180"))
    assert code(row) is None
    assert clock_skew_setting(None) == clock_skew_setting("") == DEFAULT_MAX_CLOCK_SKEW
    assert clock_skew_setting("0") == dt.timedelta(0)
    for bad in ("soon", "-5", "nan", "1e300"):
        with pytest.raises(ValueError, match="max_clock_skew_minutes"):
            clock_skew_setting(bad)


# --------------------------------------------------------------------------- the listing


@pytest.mark.parametrize("kind", LANDING_KINDS)
def test_every_file_under_the_landing_zone_is_read_or_reported(tmp_path: Path, kind: str,
                                                               request, monkeypatch) -> None:
    project = landing_project(kind, tmp_path, request)
    for name, value in project.env().items():  # the S3 settings, as dbt passes them
        monkeypatch.setenv(name, value)
    landing = getattr(project, "landing_url", project.landing)
    files = {
        "dms/0001_load.csv": dms_csv([{"op": "I", "seq": 1, "document_id": "a"}]),
        "debezium/0002.jsonl": debezium_jsonl([{"op": "c", "seq": 2, "document_id": "b"}]),
        "dms/nested/0003_load.csv": dms_csv([{"op": "I", "seq": 3, "document_id": "c"}]),
        "0004_top.csv": dms_csv([{"op": "I", "seq": 4, "document_id": "d"}]),
        "dms/0005_notes.txt": "notes",
        "other/0006.jsonl": debezium_jsonl([{"op": "c", "seq": 6, "document_id": "f"}]),
        "debezium/0007_no_extension": "{}",
        # hidden: a producer's temporary file, renamed when complete; skipped
        "dms/.0008_upload.csv.tmp": "partial",
        ".hidden/0009.csv": dms_csv([{"op": "I", "seq": 9, "document_id": "i"}]),
    }
    for name, text in files.items():
        project.land(name, text)
    rows = ingest_dir(landing)
    events = sorted(r["document_id"] for r in rows if r["quarantine_reason"] is None)
    assert events == ["a", "b"]
    reported = {r["source_file"]: code(r) for r in rows if r["quarantine_reason"]}
    assert reported == {
        "dms/nested/0003_load.csv": "unsupported_file",
        "0004_top.csv": "unsupported_file",
        "dms/0005_notes.txt": "unsupported_file",
        "other/0006.jsonl": "unsupported_file",
        "debezium/0007_no_extension": "unsupported_file",
    }
    nested = next(r for r in rows if r["source_file"] == "dms/nested/0003_load.csv")
    assert "subfolder of dms/" in nested["quarantine_reason"]
    listed = {f.relative_path: f.is_hidden for f in list_landing_files(landing)}
    assert listed == {name: name.split("/")[-1].startswith(".")
                      for name in files if not name.startswith(".hidden/")}


def test_a_missing_landing_dir_raises_naming_its_absolute_path(tmp_path: Path,
                                                                monkeypatch) -> None:
    with pytest.raises(LandingZoneError, match=f"{tmp_path / 'nowhere'} does not exist"):
        list_landing_files(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LandingZoneError) as caught:
        list_landing_files("data/landing")
    message = str(caught.value)
    assert f"landing directory {tmp_path / 'data' / 'landing'} " in message
    assert f"resolved from the current directory {tmp_path}" in message
    assert "RAGMART_LANDING_DIR" in message
    (tmp_path / "file").write_text("x")
    with pytest.raises(LandingZoneError, match="is not a directory"):
        list_landing_files(tmp_path / "file")


def test_a_landing_dir_without_a_layout_raises_and_an_empty_one_is_valid(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    assert list_landing_files(landing) == []  # an empty landing zone: valid, no events
    (landing / ".DS_Store").write_text("")
    assert [f.is_hidden for f in list_landing_files(landing)] == [True]
    (landing / "exports").mkdir()
    (landing / "readme.txt").write_text("")
    with pytest.raises(LandingZoneError,
                       match=rf"{landing} holds no dms/ or debezium/ folder \(found: exports, "
                             r"readme.txt\)"):
        list_landing_files(landing)
    (landing / "debezium").mkdir()  # one layout folder, even empty, is a landing zone
    assert [f.relative_path for f in list_landing_files(landing)] == [".DS_Store", "readme.txt"]


# --------------------------------------------------------------------------- through dbt


def _dms_rows(rows: list[tuple]) -> str:
    """(op, commit_ts, seq, document_id, content) rows as a DMS CSV."""
    lines = [HEADER]
    for op, commit_ts, seq, doc, content in rows:
        lines.append(f"{op},{commit_ts},{seq},{doc},policy,{doc},{content},2026-11-02 09:00:00")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", params=LANDING_KINDS)
def landed(tmp_path_factory, request) -> tuple[Project, subprocess.CompletedProcess]:
    # the same landing zone in a local folder and in an S3 bucket
    project = landing_project(request.param, tmp_path_factory.mktemp("landing_zone"), request)
    ts = "2026-11-02 09:00:00"
    project.land("dms/0001_mac.csv", _dms_rows([("I", ts, 1, "cr-alpha", "Alpha body"),
                                                ("I", ts, 2, "cr-bravo", "Bravo body")])
                 .replace("\n", "\r"))
    # conflicting duplicates across two files, and inside one; an identical duplicate
    project.land("dms/0002_batch.csv", _dms_rows([("I", ts, 10, "conflict-a", "Version A"),
                                                  ("I", ts, 12, "same", "Same body")]))
    project.land("debezium/0003_batch.jsonl", debezium_jsonl([
        {"op": "c", "seq": 10, "document_id": "conflict-a", "content": "Version B",
         "title": "conflict-a"},
        {"op": "c", "seq": 12, "document_id": "same", "content": "Same body", "title": "same"},
    ]))
    project.land("dms/0004_batch.csv", _dms_rows([("I", ts, 11, "conflict-b", "One"),
                                                  ("I", ts, 11, "conflict-b", "Other")]))
    project.land("dms/0005_clocks.csv", _dms_rows([
        ("I", "2099-01-01 00:00:00", 20, "future", "From the future"),
        ("I", "9999-12-31 23:59:59", 21, "far-future", "Far"),
        ("I", "0001-01-01 00:00:00", 22, "year-one", "Old"),
    ]))
    project.land("debezium/0006_empty.jsonl", b"")
    project.land("dms/nested/0007_load.csv", _dms_rows([("I", ts, 30, "nested", "n")]))
    project.land("0008_top.csv", _dms_rows([("I", ts, 31, "top", "t")]))
    project.land("dms/0009_notes.txt", "notes")
    return project, project.build()


def test_dbt_build_lands_or_quarantines_every_record_and_reports_every_file(landed) -> None:
    project, proc = landed
    events = project.query(
        "select document_id, change_seq, delivery_count from stg_cdc__document_events order by 2")
    assert events == [("cr-alpha", 1, 1), ("cr-bravo", 2, 1), ("same", 12, 2)]
    assert [r[0] for r in project.query("select document_id from dim_documents order by 1")] == [
        "cr-alpha", "cr-bravo", "same"]
    quarantined = project.query(
        "select quarantine_code, coalesce(document_id, source_file), source_line "
        "from fct_quarantined_events order by 1, 2, 3")
    assert quarantined == [
        ("conflicting_duplicate", "conflict-a", 1),
        ("conflicting_duplicate", "conflict-a", 2),
        ("conflicting_duplicate", "conflict-b", 2),
        ("conflicting_duplicate", "conflict-b", 3),
        ("timestamp_out_of_window", "far-future", 3),
        ("timestamp_out_of_window", "future", 2),
        ("timestamp_out_of_window", "year-one", 4),
        ("unreadable_file", "debezium/0006_empty.jsonl", None),
        ("unsupported_file", "0008_top.csv", None),
        ("unsupported_file", "dms/0009_notes.txt", None),
        ("unsupported_file", "dms/nested/0007_load.csv", None),
    ]
    (reason,) = project.query("select quarantine_reason from fct_quarantined_events "
                              "where document_id = 'conflict-a' and source_line = 1")[0]
    assert "debezium/0003_batch.jsonl:1, dms/0002_batch.csv:2" in reason

    assert "assert_landed_files_are_read" in proc.stdout
    assert any("WARN" in line and "assert_landed_files_are_read" in line
               for line in proc.stdout.splitlines()), proc.stdout[-3000:]

    shown = project.ragmart("freshness", "--json", check=False)
    assert shown.stdout, shown.stderr
    freshness = json.loads(shown.stdout)
    assert freshness["unread_file_count"] == 4
    assert [f["source_file"] for f in freshness["unread_files"]] == [
        "0008_top.csv", "debezium/0006_empty.jsonl", "dms/0009_notes.txt",
        "dms/nested/0007_load.csv"]
    assert freshness["quarantined"] == {"conflicting_duplicate": 4, "timestamp_out_of_window": 3,
                                        "unreadable_file": 1, "unsupported_file": 3}
    # the 2099 and year-one commits never reach the lag percentiles (they were 207,205 days)
    assert 0 < freshness["lag_seconds"]["max"] < 365 * 86400
    text = project.ragmart("freshness", check=False).stdout
    assert "landing files not read: 4" in text and "dms/nested/0007_load.csv" in text


def test_a_later_conflicting_delivery_unseats_an_applied_version(landed) -> None:
    project, _ = landed
    project.land("debezium/0010_late.jsonl", debezium_jsonl([
        {"op": "c", "seq": 1, "document_id": "cr-alpha", "content": "Rewritten",
         "title": "cr-alpha"}]))
    project.build()
    assert [r[0] for r in project.query("select document_id from dim_documents order by 1")] == [
        "cr-bravo", "same"]
    assert project.query("select count(*) from int_document_versions "
                         "where document_id = 'cr-alpha'") == [(0,)]
    assert project.query("select count(*) from fct_chunk_embeddings_v1 "
                         "where document_id = 'cr-alpha'") == [(0,)]
    assert project.query("select count(*) from fct_quarantined_events "
                         "where document_id = 'cr-alpha'") == [(2,)]


def _dbt(project: Project, *args: str, cwd: Path, landing: str) -> subprocess.CompletedProcess:
    env = project.env() | {"RAGMART_LANDING_DIR": landing}
    return subprocess.run([sys.executable, "-m", "dbt.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_dbt_build_fails_on_a_missing_landing_dir_naming_the_path(tmp_path: Path) -> None:
    project = Project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # run from another directory with the default-style relative path
    proc = _dbt(project, "build", cwd=elsewhere, landing="data/landing")
    assert proc.returncode != 0
    assert f"landing directory {elsewhere / 'data' / 'landing'} " in proc.stdout
    assert "does not exist" in proc.stdout
    if project.db_path.exists():  # no empty database passing as a built one
        tables = {r[0] for r in project.query("select table_name from duckdb_tables()")}
        assert not tables & {"dim_documents", "stg_landing__document_events"}


def test_dbt_build_fails_without_a_layout_and_passes_on_an_empty_landing_zone(
        tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.land("exports/0001.csv", "x")
    proc = project.build("--select", "stg_landing__document_events", check=False)
    assert proc.returncode != 0
    assert f"landing directory {project.landing} holds no dms/ or debezium/ folder" in proc.stdout
    (project.landing / "exports" / "0001.csv").unlink()
    (project.landing / "exports").rmdir()
    assert os.listdir(project.landing) == []
    proc = project.build()  # an empty landing zone that exists is a valid state
    assert "PASS" in proc.stdout
    assert project.query("select count(*) from dim_documents") == [(0,)]
    assert project.query("select count(*) from fct_quarantined_events") == [(0,)]


def test_the_clock_skew_tolerance_reaches_the_build(tmp_path: Path) -> None:
    project = Project(tmp_path, extra_env={"RAGMART_MAX_CLOCK_SKEW_MINUTES": "0"})
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S")
    project.land("dms/0001.csv", _dms_rows([("I", ahead, 1, "ahead", "Body")]))
    project.build("--select", "stg_landing__document_events")
    assert project.query("select split_part(quarantine_reason, ':', 1) "
                         "from stg_landing__document_events") == [("timestamp_out_of_window",)]
    project.build("--select", "stg_landing__document_events", "--full-refresh",
                  "--vars", "{max_clock_skew_minutes: 60}")
    assert project.query("select quarantine_reason from stg_landing__document_events") == [
        (None,)]



def test_without_a_setting_the_build_tolerates_the_default_clock_skew(tmp_path: Path) -> None:
    """Neither the var nor RAGMART_MAX_CLOCK_SKEW_MINUTES: the build applies ragmart's default
    (DEFAULT_MAX_CLOCK_SKEW, written only in ragmart.ingest.records), no other."""
    project = Project(tmp_path)
    assert "RAGMART_MAX_CLOCK_SKEW_MINUTES" not in project.env()
    now = dt.datetime.now(dt.UTC)
    within = (now + DEFAULT_MAX_CLOCK_SKEW / 3).strftime("%Y-%m-%d %H:%M:%S")
    beyond = (now + DEFAULT_MAX_CLOCK_SKEW * 3).strftime("%Y-%m-%d %H:%M:%S")
    project.land("dms/0001.csv", _dms_rows([("I", within, 1, "within", "Body"),
                                            ("I", beyond, 2, "beyond", "Body")]))
    project.build("--select", "stg_landing__document_events")
    reasons = dict(project.query("select document_id, quarantine_reason "
                                 "from stg_landing__document_events"))
    assert reasons["within"] is None
    assert reasons["beyond"].startswith("timestamp_out_of_window")
    assert f"{DEFAULT_MAX_CLOCK_SKEW.total_seconds() / 60:,.1f} minutes" in reasons["beyond"]
