"""Property: whatever lands, the build succeeds and nothing disappears silently (issue 13).

Hypothesis writes landing zones from a grammar of valid and broken pieces: every layout (DMS
csv and parquet, Debezium jsonl and json arrays), placed where ingestion reads or where it does
not (a subfolder, the top of the zone, a wrong extension, a hidden name); encodings (UTF-8, a
byte-order mark, Latin-1 bytes), line endings (LF, CRLF, CR), quoting (quotes, commas, line
breaks in values), truncated last records, identical and conflicting duplicates (in one file,
across files and layouts, across builds), extreme values (int64 sequences, the edges of the
timestamp window, 2099, 9999-12-31, year 1, oversized content) and the record defects the
quarantine knows.

Each landing zone goes through the real ingestion: the functions the dbt Python model
stg_landing__document_events calls (ragmart.ingest.landing.list_landing_files and
ingest_files, in two incremental rounds), then the SQL dbt compiles for stg_cdc__document_events and
fct_quarantined_events, run on the ingested rows. Checked: nothing raises; every landed record
is an event or a quarantine row (a file ingestion does not read is one row); every good record
of a partly bad file lands with its content; every broken record is quarantined with the code
its defect calls for; conflicting duplicates are all quarantined and none wins.

`make test` runs a few examples; `pytest -m slow` runs many, and real `dbt build`s of a few.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dbt_harness import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragmart.ingest.landing import ingest_files, list_landing_files
from ragmart.ingest.records import QUARANTINE_CODES
from ragmart.ingest.store import open_store

NOW = dt.datetime(2026, 11, 30, 12, 0, 0)
MAX_CONTENT_BYTES = 3000
HEADER = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at,allowed_groups"
SQL_MODELS = {
    "events": "models/staging/landing/stg_cdc__document_events.sql",
    "quarantine": "models/marts/fct_quarantined_events.sql",
}

# --------------------------------------------------------------------------- the grammar

# A defect and the quarantine code it must produce (truncation depends on the format).
DEFECTS = {
    "unknown_op": "unknown_op",
    "missing_id": "missing_document_id",
    "bad_seq": "missing_change_seq",
    "bad_ts": "invalid_timestamp",
    "future_ts": "timestamp_out_of_window",
    "far_future_ts": "timestamp_out_of_window",
    "year_one_ts": "timestamp_out_of_window",
    "pre_epoch_ts": "timestamp_out_of_window",
    "latin1": "invalid_utf8",
    "too_large": "content_too_large",
    "truncated": None,
}
WINDOW_TS = {
    "future_ts": dt.datetime(2099, 1, 1),
    "far_future_ts": dt.datetime(9999, 12, 31, 23, 59, 59),
    "year_one_ts": dt.datetime(1, 1, 1),
    "pre_epoch_ts": dt.datetime(1969, 12, 31, 23, 59, 59),
}


@dataclass(frozen=True)
class Rec:
    op: str  # I, U, D
    document_id: str
    seq: int
    content: str
    title: str
    groups: tuple[str, ...] | None
    commit_ts: dt.datetime
    defect: str | None = None

    def payload(self) -> tuple:
        """What makes two deliveries of one (document_id, seq) the same event."""
        if self.op == "D":
            return ("D",)
        return (self.op, self.title, self.content, self.groups or None)


text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('abc ,"\n\r\t;[]{}\\\'é€😀')),
        st.characters(blacklist_categories=["Cs"], max_codepoint=0x2FFFF),
    ),
    max_size=30,
)
good_records = st.builds(
    Rec,
    op=st.sampled_from(["I", "U", "D"]),
    document_id=st.sampled_from(["alpha", "bravo", "charlie", "dé jà,\"vu\""]),
    seq=st.one_of(st.integers(1, 6), st.sampled_from([0, -(2**63), 2**63 - 1])),
    content=st.one_of(text, st.just(""), st.just("x" * (MAX_CONTENT_BYTES - 10))),
    title=text,
    groups=st.one_of(st.none(), st.lists(st.sampled_from(["hr", "all-staff", "ops"]), min_size=1,
                                         max_size=2, unique=True).map(tuple)),
    commit_ts=st.sampled_from([
        dt.datetime(2026, 11, 2, 9, 0, 0), dt.datetime(1970, 1, 1),
        NOW + dt.timedelta(minutes=14), dt.datetime(2001, 2, 3, 4, 5, 6, 789000)]),
)


@st.composite
def records(draw) -> list[Rec]:
    """Good and broken records; duplicates and conflicts reuse earlier keys."""
    out: list[Rec] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["good", "good", "duplicate", "conflict", "broken"]))
        earlier = [r for r in out if r.defect is None]
        if kind == "duplicate" and earlier:
            out.append(draw(st.sampled_from(earlier)))
        elif kind == "conflict" and earlier:
            base = draw(st.sampled_from(earlier))
            out.append(replace(base, op="U" if base.op == "D" else base.op,
                               content=base.content + "!"))
        elif kind == "broken":
            defect = draw(st.sampled_from(sorted(DEFECTS)))
            out.append(replace(draw(good_records), defect=defect, op="I"))
        else:
            out.append(draw(good_records))
    return out


@dataclass
class LandedSpec:
    name: str  # relative path
    fmt: str  # csv, parquet, jsonl, json
    records: list[Rec]
    readable: bool  # placed where ingestion reads it
    hidden: bool
    round: int  # 1 or 2: landed before the first or the second ingestion


@st.composite
def landing_zones(draw) -> list[LandedSpec]:
    files = []
    for index in range(draw(st.integers(1, 5))):
        fmt = draw(st.sampled_from(["csv", "parquet", "jsonl", "json"]))
        layout = "dms" if fmt in ("csv", "parquet") else "debezium"
        place = draw(st.sampled_from(["ok"] * 6 + ["nested", "top", "other", "ext", "hidden"]))
        stem = f"{index:04d}_batch"
        name = {
            "ok": f"{layout}/{stem}.{fmt}",
            "nested": f"{layout}/2026/{stem}.{fmt}",
            "top": f"{stem}.{fmt}",
            "other": f"exports/{stem}.{fmt}",
            "ext": f"{layout}/{stem}.{fmt}.bak",
            "hidden": f"{layout}/.{stem}.{fmt}.part",
        }[place]
        recs = draw(records())
        if fmt in ("parquet", "json"):  # no bytes-level defects in these formats
            recs = [r for r in recs if r.defect not in ("latin1", "truncated")]
        if fmt in ("csv", "jsonl"):  # truncation can only hit the last record
            recs = [r for r in recs[:-1] if r.defect != "truncated"] + recs[-1:]
        files.append(LandedSpec(name, fmt, recs, place == "ok", place == "hidden",
                                draw(st.sampled_from([1, 2]))))
    return files


# --------------------------------------------------------------------------- writing files


def _field(rec: Rec) -> dict:
    """The record's source-table values with its defect applied (text values)."""
    ts = WINDOW_TS.get(rec.defect, rec.commit_ts)
    return {
        "op": "X" if rec.defect == "unknown_op" else rec.op,
        "commit_ts": "not a time" if rec.defect == "bad_ts" else ts.isoformat(sep=" "),
        "commit_dt": ts,
        "seq": "seq-7" if rec.defect == "bad_seq" else str(rec.seq),
        "document_id": "" if rec.defect == "missing_id" else rec.document_id,
        "content": "y" * (MAX_CONTENT_BYTES + 1) if rec.defect == "too_large" else rec.content,
        "title": rec.title,
        "groups": list(rec.groups) if rec.groups else None,
    }


def _quote(value: str) -> bytes:
    return b'"' + value.encode().replace(b'"', b'""') + b'"'


def write_csv(recs: list[Rec], newline: bytes, bom: bool) -> tuple[bytes, list[int]]:
    data = (b"\xef\xbb\xbf" if bom else b"") + HEADER.encode() + newline
    lines = []
    for i, rec in enumerate(recs):
        f = _field(rec)
        content = _quote("" if f["op"] == "D" else f["content"])
        if rec.defect == "latin1":
            content = b'"caf\xe9 ' + content[1:]
        groups = ";".join(f["groups"]) if f["groups"] else ""
        row = b",".join([f["op"].encode(), f["commit_ts"].encode(), f["seq"].encode(),
                         _quote(f["document_id"]) if f["document_id"] else b"",
                         b"policy", _quote(f["title"]), content,
                         b"2026-11-01 08:00:00", _quote(groups) if groups else b""])
        if rec.defect == "truncated" and i == len(recs) - 1:
            cut = row.index(content) + max(1, len(content) // 2)  # inside the quoted content
            row = row[:cut]
        lines.append(data.count(newline[-1:]) + 1)
        data += row + (b"" if rec.defect == "truncated" else newline)
    return data, lines


def _envelope(rec: Rec) -> tuple[dict, bool]:
    f = _field(rec)
    image = {"document_id": f["document_id"] or None, "document_type": "policy",
             "title": f["title"], "content": f["content"], "updated_at": "2026-11-01T08:00:00Z"}
    if f["groups"]:
        image["allowed_groups"] = f["groups"]
    op = {"I": "c", "U": "u", "D": "d", "X": "x"}[f["op"]]
    ts_ms = (f["commit_dt"] - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
    envelope = {"before": image if op in ("u", "d") else None,
                "after": None if op == "d" else image, "op": op,
                "ts_ms": "not a time" if rec.defect == "bad_ts" else ts_ms,
                "source": {"lsn": f["seq"] if rec.defect == "bad_seq" else rec.seq}}
    return envelope, rec.defect == "latin1"


def write_jsonl(recs: list[Rec], newline: bytes, bom: bool) -> tuple[bytes, list[int]]:
    data = b"\xef\xbb\xbf" if bom else b""
    lines = []
    for i, rec in enumerate(recs):
        envelope, latin1 = _envelope(rec)
        if latin1:
            image = envelope["before"] or envelope["after"]
            image["content"] = "@@LATIN1@@"
        line = json.dumps(envelope, ensure_ascii=False).encode().replace(b"@@LATIN1@@",
                                                                          b"caf\xe9")
        if rec.defect == "truncated" and i == len(recs) - 1:
            line = line[: len(line) // 2]
        lines.append(data.count(newline[-1:]) + 1)
        data += line + (b"" if rec.defect == "truncated" else newline)
    return data, lines


def write_json(recs: list[Rec]) -> tuple[bytes, list[int]]:
    elements = [json.dumps(_envelope(rec)[0], ensure_ascii=False) for rec in recs]
    return ("[\n" + ",\n".join(elements) + "\n]\n").encode(), [i + 2 for i in range(len(recs))]


def write_parquet(recs: list[Rec]) -> tuple[bytes, list[int]]:
    fields = [_field(rec) for rec in recs]
    table = pa.table({
        "Op": pa.array([f["op"] for f in fields], pa.string()),
        "commit_ts": pa.array([f["commit_ts"] for f in fields], pa.string()),
        "change_seq": pa.array([f["seq"] for f in fields], pa.string()),
        "document_id": pa.array([f["document_id"] or None for f in fields], pa.string()),
        "document_type": pa.array(["policy"] * len(fields), pa.string()),
        "title": pa.array([f["title"] for f in fields], pa.string()),
        "content": pa.array([f["content"] for f in fields], pa.string()),
        "allowed_groups": pa.array([f["groups"] for f in fields], pa.list_(pa.string())),
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue(), list(range(1, len(recs) + 1))


def write_file(spec: LandedSpec, newline: bytes, bom: bool) -> tuple[bytes, list[int]]:
    if spec.fmt == "csv":
        return write_csv(spec.records, newline, bom)
    if spec.fmt == "jsonl":
        return write_jsonl(spec.records, newline, bom)
    if spec.fmt == "json":
        return write_json(spec.records)
    return write_parquet(spec.records)


# --------------------------------------------------------------------------- the real ingestion


class CompiledModels(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<compiled SQL of {', '.join(SQL_MODELS.values())}>"


@pytest.fixture(scope="module")
def compiled_sql(tmp_path_factory) -> CompiledModels:
    """The SQL dbt compiles for the staging and quarantine models (one `dbt compile`)."""
    project = Project(tmp_path_factory.mktemp("compile"))
    project.landing.mkdir(parents=True)
    project.dbt("compile", "--select", "stg_cdc__document_events", "fct_quarantined_events")
    compiled = project.workdir / "target" / "compiled" / "ragmart"
    return CompiledModels({key: (compiled / path).read_text()
                           for key, path in SQL_MODELS.items()})


def land(put, files: list[LandedSpec], written: dict, round_: int) -> None:
    """Land the files of one round with `put(relative_path, data)` (a landing store's put)."""
    for spec in files:
        if spec.round == round_:
            put(spec.name, written[spec.name][0])


def ingest_rounds(landing: Path | str, files: list[LandedSpec], written: dict) -> pa.Table:
    """Land round 1, ingest; land round 2, ingest what is new (as the incremental model). The
    landing zone is a folder or an s3:// URL (ragmart.ingest.store)."""
    put = open_store(landing).put
    tables, seen_keys, seen_hashes, seen_etags = [], set(), set(), set()
    for round_ in (1, 2):
        land(put, files, written, round_)
        table = ingest_files(list_landing_files(landing), seen_keys=seen_keys,
                             seen_hashes=seen_hashes, seen_etags=seen_etags,
                             max_content_bytes=MAX_CONTENT_BYTES,
                             now=NOW + dt.timedelta(seconds=round_))
        for row in table.select(["source_file", "file_size", "file_modified_at",
                                 "file_sha256", "file_etag"]).to_pylist():
            seen_keys.add((row["source_file"], row["file_size"], row["file_modified_at"]))
            seen_hashes.add((row["source_file"], row["file_sha256"]))
            if row["file_etag"]:
                seen_etags.add((row["source_file"], row["file_size"], row["file_etag"]))
        tables.append(table)
    return pa.concat_tables(tables)


def run_models(landed: pa.Table, sql: dict[str, str]) -> tuple[list[dict], list[dict]]:
    conn = duckdb.connect()
    try:
        conn.execute("attach ':memory:' as ragmart")
        conn.register("landed_rows", landed)
        conn.execute("create table ragmart.main.stg_landing__document_events as "
                     "select * from landed_rows")
        out = []
        for key in ("events", "quarantine"):
            cursor = conn.execute(sql[key])
            names = [d[0] for d in cursor.description]
            out.append([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
        return out[0], out[1]
    finally:
        conn.close()


def check_landing_zone(tmp: Path | str, files: list[LandedSpec], newline: bytes, bom: bool,
                       sql: dict[str, str]) -> None:
    """`tmp`: a scratch folder (the landing zone is a folder in it) or an s3:// landing URL."""
    landing = tmp if isinstance(tmp, str) else tmp / "landing"
    if isinstance(landing, str):
        open_store(landing).put("dms/", b"")  # an empty dms/ folder (a marker)
    else:
        (landing / "dms").mkdir(parents=True)
    written = {spec.name: write_file(spec, newline, bom) for spec in files}
    landed = ingest_rounds(landing, files, written)
    events, quarantine = run_models(landed, sql)
    check_outcome(files, written, landed.to_pylist(), events, quarantine)


def check_outcome(files: list[LandedSpec], written: dict, landed: list[dict], events: list[dict],
                  quarantine: list[dict]) -> None:
    """The promises, on the landed rows, the events and the quarantine of one landing zone."""
    by_file: dict[str, list[dict]] = {}
    for row in landed:
        by_file.setdefault(row["source_file"], []).append(row)
    event_keys = {(e["document_id"], e["change_seq"]): e for e in events}
    quarantined = {(q["source_file"], q["source_line"]): q for q in quarantine}
    codes = {*QUARANTINE_CODES, "conflicting_duplicate"}
    assert {q["quarantine_code"] for q in quarantine} <= codes

    # every landed row is an event or a quarantine row
    for rows in by_file.values():
        for row in rows:
            if row["quarantine_reason"] is None:
                key = (row["document_id"], row["change_seq"])
                assert key in event_keys or quarantined[(row["source_file"], row["source_line"])][
                    "quarantine_code"] == "conflicting_duplicate", row
            else:
                assert (row["source_file"], row["source_line"]) in quarantined, row

    # every file under the landing zone is read or reported; hidden ones are skipped
    good: dict[tuple[str, int], set[tuple]] = {}
    good_rows: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for spec in files:
        rows = by_file.get(spec.name, [])
        if spec.hidden:
            assert rows == []
            continue
        if not spec.readable:
            assert [(r["source_line"], r["quarantine_reason"].split(":")[0]) for r in rows] == [
                (None, "unsupported_file")], spec.name
            continue
        if not spec.records and spec.fmt == "jsonl":
            assert [r["quarantine_reason"].split(":")[0] for r in rows] == ["unreadable_file"]
            continue
        _, lines = written[spec.name]
        assert len(rows) == len(spec.records), (spec.name, rows)
        for rec, line in zip(spec.records, lines, strict=True):
            (row,) = [r for r in rows if r["source_line"] == line]
            if rec.defect is None:
                good.setdefault((rec.document_id, rec.seq), set()).add(rec.payload())
                good_rows.setdefault((rec.document_id, rec.seq), []).append((spec.name, line))
            else:
                # a cut may also split a multi-byte character
                expected = {DEFECTS[rec.defect]} if DEFECTS[rec.defect] else {
                    "unreadable_file" if spec.fmt == "csv" else "invalid_json", "invalid_utf8"}
                assert quarantined[(spec.name, line)]["quarantine_code"] in expected, (
                    rec, row["quarantine_reason"])

    # every good record lands with its content, unless a conflicting one shares its key
    for key, payloads in good.items():
        if len(payloads) > 1:
            assert key not in event_keys, key
            for place in good_rows[key]:  # every delivery, agreeing ones too
                assert quarantined[place]["quarantine_code"] == "conflicting_duplicate", place
            continue
        event = event_keys[key]
        (payload,) = payloads
        got = ("D",) if event["op"] == "D" else (
            event["op"], event["title"], event["content"],
            tuple(event["allowed_groups"]) if event["allowed_groups"] else None)
        assert got == payload, key
    assert set(event_keys) == {k for k, p in good.items() if len(p) == 1}


zones = st.tuples(landing_zones(), st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans())


@settings(max_examples=int(os.environ.get("RAGMART_PROPERTY_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(zone=zones)
def test_every_landed_record_is_an_event_or_a_quarantine_row(zone, compiled_sql,
                                                             tmp_path_factory) -> None:
    files, newline, bom = zone
    check_landing_zone(tmp_path_factory.mktemp("zone"), files, newline, bom, compiled_sql)


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(zone=zones)
def test_every_landed_record_is_an_event_or_a_quarantine_row_from_s3(zone, compiled_sql,
                                                                     s3_server, monkeypatch):
    """The same property with the landing zone in a bucket (a new one per example)."""
    from s3_landing import new_bucket, s3_environment

    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)
    files, newline, bom = zone
    check_landing_zone(f"s3://{new_bucket(s3_server)}/landing", files, newline, bom,
                       compiled_sql)


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(zone=zones)
def test_every_landed_record_is_an_event_or_a_quarantine_row_many(zone, compiled_sql,
                                                                  tmp_path_factory) -> None:
    files, newline, bom = zone
    check_landing_zone(tmp_path_factory.mktemp("zone"), files, newline, bom, compiled_sql)


def _query(project: Project, sql: str) -> list[dict]:
    from ragmart.duck import connect

    conn = connect(project.db_path, read_only=True)
    try:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


@pytest.mark.slow
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(zone=zones)
def test_dbt_build_of_any_landing_zone_succeeds_and_keeps_every_record(zone,
                                                                       tmp_path_factory) -> None:
    """The same promises through two real `dbt build`s (the second incremental). The build
    runs now, not at NOW: a tolerance of a day accepts the grammar's "14 minutes ahead of NOW"
    whatever the clock says today, and still quarantines 2099."""
    files, newline, bom = zone
    # max_content_bytes does not reach the Python model yet (issue 13, "Every setting is
    # honoured", another branch): leave oversized contents to the package-level property
    for spec in files:
        spec.records = [r for r in spec.records if r.defect != "too_large"]
    project = Project(tmp_path_factory.mktemp("dbt_zone"))
    (project.landing / "dms").mkdir(parents=True)
    written = {spec.name: write_file(spec, newline, bom) for spec in files}
    for round_ in (1, 2):
        land(open_store(project.landing).put, files, written, round_)
        project.build("--vars", json.dumps({"max_clock_skew_minutes": 1440,
                                            "max_content_bytes": MAX_CONTENT_BYTES}),
                      "--exclude-resource-type", "unit_test")
    check_outcome(files, written, _query(project, "select * from stg_landing__document_events"),
                  _query(project, "select * from stg_cdc__document_events"),
                  _query(project, "select * from fct_quarantined_events"))
