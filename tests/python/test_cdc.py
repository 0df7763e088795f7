"""Tests for ragmart.ingest.cdc: one landing file -> typed event rows, bad records quarantined."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragmart.ingest.cdc import landing_records, parse_landing_file, without_records
from ragmart.ingest.records import ROW_SCHEMA, rows_to_arrow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cdc"
BASECAMP = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "basecamp-policies"

REASONS = {
    "unknown_op",
    "missing_document_id",
    "missing_change_seq",
    "invalid_json",
    "invalid_envelope",
    "invalid_timestamp",
    "invalid_utf8",
    "content_too_large",
    "unreadable_file",
    "unsupported_file",
    "timestamp_out_of_window",
}

EXPECTED_COLUMNS = [
    ("source_file", pa.string()),
    ("source_line", pa.int64()),
    ("source_layout", pa.string()),
    ("file_sha256", pa.string()),
    ("op", pa.string()),
    ("source_op", pa.string()),
    ("change_seq", pa.int64()),
    ("commit_ts", pa.timestamp("us")),
    ("document_id", pa.string()),
    ("document_type", pa.string()),
    ("title", pa.string()),
    ("content", pa.string()),
    ("updated_at", pa.timestamp("us")),
    ("allowed_groups", pa.list_(pa.string())),
    ("metadata", pa.string()),
    ("quarantine_reason", pa.string()),
    ("raw_record", pa.string()),
]


def reason(row: dict) -> str | None:
    """The quarantine reason code (before the ': detail')."""
    q = row["quarantine_reason"]
    return None if q is None else q.split(":", 1)[0]


def valid(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["quarantine_reason"] is None]


def assert_well_formed(rows: list[dict]) -> None:
    """Every row fits the schema and is either valid (with an op) or quarantined (with a code)."""
    rows_to_arrow(rows)  # raises if a value does not fit ROW_SCHEMA
    for row in rows:
        assert list(row) == ROW_SCHEMA.names
        if row["quarantine_reason"] is None:
            assert row["op"] in {"I", "U", "D"}
            assert row["document_id"] and row["document_id"].strip()
            assert row["change_seq"] is not None
            assert row["commit_ts"] is not None
            assert row["raw_record"] is None
        else:
            assert row["op"] is None
            assert reason(row) in REASONS, row["quarantine_reason"]
            assert ": " in row["quarantine_reason"]
            assert row["raw_record"] is None or len(row["raw_record"]) <= 2000


# --------------------------------------------------------------------------- schema


def test_row_schema_columns_in_order() -> None:
    assert [(f.name, f.type) for f in ROW_SCHEMA] == EXPECTED_COLUMNS


def test_rows_to_arrow_empty_has_schema() -> None:
    table = rows_to_arrow([])
    assert table.num_rows == 0
    assert table.schema == ROW_SCHEMA


# --------------------------------------------------------------------------- DMS CSV

DMS_CSV = (
    "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at,"
    "allowed_groups,owner\n"
    'I,2026-11-02 09:15:00,1,hr-remote,policy,Remote Work,"# Remote\n\nSay ""hi"", then\n'
    'leave.",2026-10-01 08:00:00,"[""hr"",""managers""]",alice\n'
    "U,2026-11-02T10:15:00.123456+01:00,2,hr-remote,policy,Remote Work,Short body,"
    "2026-11-02T09:15:00Z,hr;managers,\n"
    'D,2026-11-03 09:00:00,3,hr-remote,policy,Remote Work,"",2026-11-02 09:15:00,"hr, ops",bob\n'
)


def test_dms_csv_typed_rows_with_physical_line_numbers() -> None:
    data = DMS_CSV.encode()
    rows = parse_landing_file("dms/0001_batch.csv", data)
    assert_well_formed(rows)
    assert len(valid(rows)) == 3
    first, second, third = rows
    assert [r["source_line"] for r in rows] == [2, 6, 7]
    assert {r["source_layout"] for r in rows} == {"dms"}
    assert {r["file_sha256"] for r in rows} == {hashlib.sha256(data).hexdigest()}
    assert [r["op"] for r in rows] == ["I", "U", "D"]
    assert [r["source_op"] for r in rows] == ["I", "U", "D"]
    assert [r["change_seq"] for r in rows] == [1, 2, 3]
    assert first["content"] == '# Remote\n\nSay "hi", then\nleave.'
    assert first["commit_ts"] == dt.datetime(2026, 11, 2, 9, 15)
    assert first["updated_at"] == dt.datetime(2026, 10, 1, 8, 0)
    assert first["allowed_groups"] == ["hr", "managers"]
    assert json.loads(first["metadata"]) == {"owner": "alice"}
    # an offset is converted to UTC, fractions kept
    assert second["commit_ts"] == dt.datetime(2026, 11, 2, 9, 15, 0, 123456)
    assert second["updated_at"] == dt.datetime(2026, 11, 2, 9, 15)
    assert second["allowed_groups"] == ["hr", "managers"]
    assert json.loads(second["metadata"]) == {"owner": None}
    # a delete carries the last values and an empty content
    assert third["document_id"] == "hr-remote"
    assert third["title"] == "Remote Work"
    assert not third["content"]
    assert third["allowed_groups"] == ["hr", "ops"]


def test_dms_csv_without_op_column_is_a_full_load() -> None:
    data = (
        b"commit_ts,change_seq,document_id,document_type,title,content,updated_at\n"
        b"2026-11-02 09:00:00,1,a,policy,A,Body a,2026-10-01 08:00:00\n"
        b"2026-11-02 09:00:00,2,b,policy,B,Body b,2026-10-01 08:00:00\n"
    )
    rows = parse_landing_file("dms/0001_full_load.csv", data)
    assert_well_formed(rows)
    assert [r["op"] for r in rows] == ["I", "I"]
    assert [r["document_id"] for r in rows] == ["a", "b"]
    assert all(r["allowed_groups"] is None and r["metadata"] is None for r in rows)


def test_dms_csv_crlf_and_bom() -> None:
    data = (
        "\ufeffOp,commit_ts,change_seq,document_id,document_type,title,content,updated_at\r\n"
        'I,2026-11-02 09:00:00,1,a,policy,A,"line1\r\nline2",2026-10-01 08:00:00\r\n'
        "U,2026-11-02 09:01:00,2,a,policy,A,plain,2026-10-01 08:00:00\r\n"
    ).encode()
    rows = parse_landing_file("dms/x.csv", data)
    assert_well_formed(rows)
    assert [r["op"] for r in rows] == ["I", "U"]
    assert rows[0]["content"] == "line1\r\nline2"
    assert rows[1]["content"] == "plain"
    assert [r["source_line"] for r in rows] == [2, 4]


HEADER = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at\n"


@pytest.mark.parametrize(
    ("line", "code", "detail"),
    [
        ("X,2026-11-02 09:00:00,1,a,policy,A,body,", "unknown_op", "'X'"),
        (",2026-11-02 09:00:00,1,a,policy,A,body,", "unknown_op", "''"),
        ("I,2026-11-02 09:00:00,1,,policy,A,body,", "missing_document_id", "document_id"),
        ("I,2026-11-02 09:00:00,1,  ,policy,A,body,", "missing_document_id", "document_id"),
        ("D,2026-11-02 09:00:00,1,,policy,A,,", "missing_document_id", "document_id"),
        ("I,2026-11-02 09:00:00,,a,policy,A,body,", "missing_change_seq", "change_seq"),
        ("I,2026-11-02 09:00:00,seven,a,policy,A,body,", "missing_change_seq", "'seven'"),
        ("I,yesterday,1,a,policy,A,body,", "invalid_timestamp", "'yesterday'"),
        ("I,,1,a,policy,A,body,", "invalid_timestamp", "commit_ts"),
        ("I,2026-11-02 09:00:00,1,a,policy,A,body,2026-13-45", "invalid_timestamp", "updated_at"),
        ("I,2026-11-02 09:00:00,1,a,policy,A,body,,extra", "unreadable_file", "9 fields"),
        ("I,2026-11-02 09:00:00,1,a,policy", "unreadable_file", "5 fields"),
        ('I,2026-11-02 09:00:00,1,a,policy,A,"body"x,', "unreadable_file", "quot"),
    ],
)
def test_dms_csv_bad_record_is_quarantined_alone(line: str, code: str, detail: str) -> None:
    good = "U,2026-11-02 09:05:00,9,z,policy,Z,fine,2026-10-01 08:00:00\n"
    data = (HEADER + good + line + "\n" + good).encode()
    rows = parse_landing_file("dms/bad.csv", data)
    assert_well_formed(rows)
    assert len(rows) == 3
    assert [r["quarantine_reason"] is None for r in rows] == [True, False, True]
    bad = rows[1]
    assert reason(bad) == code
    assert detail in bad["quarantine_reason"]
    assert bad["source_line"] == 3
    assert bad["raw_record"] == line
    assert (bad["source_op"] or "") == line.split(",", 1)[0]


def test_dms_csv_allowed_groups_invalid_json_is_quarantined() -> None:
    data = (
        HEADER.rstrip("\n") + ",allowed_groups\n"
        'I,2026-11-02 09:00:00,1,a,policy,A,body,,"[""hr"","\n'
    ).encode()
    rows = parse_landing_file("dms/acl.csv", data)
    assert_well_formed(rows)
    assert reason(rows[0]) == "invalid_json"
    assert "allowed_groups" in rows[0]["quarantine_reason"]


def test_dms_csv_invalid_utf8_quarantines_only_that_record() -> None:
    good = b"I,2026-11-02 09:00:00,1,a,policy,A,caf\xc3\xa9,\n"
    bad = b'I,2026-11-02 09:00:00,2,b,policy,B,"bad \xff\nbyte",\n'
    data = HEADER.encode() + good + bad + good.replace(b",1,a,", b",3,c,")
    rows = parse_landing_file("dms/utf8.csv", data)
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == [None, "invalid_utf8", None]
    assert rows[0]["content"] == "café"
    assert rows[1]["raw_record"] == 'I,2026-11-02 09:00:00,2,b,policy,B,"bad \\xff\nbyte",'
    assert rows[1]["source_line"] == 3
    assert rows[2]["source_line"] == 5


def test_dms_csv_content_too_large() -> None:
    body = "é" * 600  # 1,200 utf-8 bytes
    data = (HEADER + f"I,2026-11-02 09:00:00,1,a,policy,A,{body},\n").encode()
    rows = parse_landing_file("dms/big.csv", data, max_content_bytes=1000)
    assert_well_formed(rows)
    assert reason(rows[0]) == "content_too_large"
    assert "1200" in rows[0]["quarantine_reason"]
    assert "max_content_bytes" in rows[0]["quarantine_reason"]
    assert len(rows[0]["raw_record"]) <= 2000
    ok = parse_landing_file("dms/big.csv", data, max_content_bytes=1200)
    assert valid(ok) == ok


def test_dms_csv_raw_record_is_capped() -> None:
    body = "x" * 5000
    data = (HEADER + f"Q,2026-11-02 09:00:00,1,a,policy,A,{body},\n").encode()
    rows = parse_landing_file("dms/cap.csv", data)
    assert reason(rows[0]) == "unknown_op"
    assert len(rows[0]["raw_record"]) == 2000


def test_dms_csv_unterminated_quote_is_one_quarantined_record() -> None:
    data = (
        HEADER
        + "I,2026-11-02 09:00:00,1,a,policy,A,fine,\n"
        + 'I,2026-11-02 09:00:00,2,b,policy,B,"never closed\nmore,\n'
    ).encode()
    rows = parse_landing_file("dms/open.csv", data)
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == [None, "unreadable_file"]
    assert "unterminated" in rows[1]["quarantine_reason"]
    assert rows[1]["source_line"] == 3


def test_dms_csv_header_only_and_empty_file() -> None:
    assert parse_landing_file("dms/empty_batch.csv", HEADER.encode()) == []
    rows = parse_landing_file("dms/zero.csv", b"")
    assert [reason(r) for r in rows] == ["unreadable_file"]
    assert rows[0]["source_line"] is None
    assert "empty" in rows[0]["quarantine_reason"]


def test_dms_csv_undecodable_header_is_one_unreadable_row() -> None:
    data = b"Op,\xffcommit_ts\n" + b"I,2026-11-02 09:00:00\n" * 3
    rows = parse_landing_file("dms/header.csv", data)
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == ["unreadable_file"]
    assert rows[0]["source_line"] is None
    assert "header" in rows[0]["quarantine_reason"]


def test_dms_csv_missing_document_id_column_quarantines_each_row() -> None:
    data = "Op,commit_ts,change_seq,title\nI,2026-11-02 09:00:00,1,A\nU,2026-11-02,2,B\n"
    rows = parse_landing_file("dms/nocol.csv", data.encode())
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == ["missing_document_id"] * 2


# --------------------------------------------------------------------------- DMS parquet


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_dms_parquet_typed_columns() -> None:
    table = pa.table(
        {
            "Op": ["I", "U", "D", "Z"],
            "commit_ts": pa.array(
                [dt.datetime(2026, 11, 5, 10, tzinfo=dt.UTC)] * 4, pa.timestamp("us", tz="UTC")
            ),
            "change_seq": pa.array([10, 11, 12, 13], pa.int64()),
            "document_id": ["a", "a", "a", "b"],
            "document_type": ["policy"] * 4,
            "title": ["A"] * 4,
            "content": ["body", "body 2", "", "x"],
            "updated_at": ["2026-11-05 10:00:00", None, "2026-11-05T11:00:00+01:00", None],
            "allowed_groups": pa.array([["hr"], None, ["hr", "ops"], []], pa.list_(pa.string())),
            "region": ["eu", "eu", "us", None],
        }
    )
    rows = parse_landing_file("dms/0005_inserts.parquet", _parquet_bytes(table))
    assert_well_formed(rows)
    assert [r["source_line"] for r in rows] == [1, 2, 3, 4]
    assert [r["op"] for r in rows] == ["I", "U", "D", None]
    assert reason(rows[3]) == "unknown_op"
    assert rows[0]["commit_ts"] == dt.datetime(2026, 11, 5, 10)
    assert rows[0]["allowed_groups"] == ["hr"]
    assert rows[1]["allowed_groups"] is None
    assert rows[1]["updated_at"] is None
    assert rows[2]["updated_at"] == dt.datetime(2026, 11, 5, 10)
    assert json.loads(rows[0]["metadata"]) == {"region": "eu"}
    assert rows[3]["raw_record"] and '"Z"' in rows[3]["raw_record"]


def test_dms_parquet_string_groups_and_no_op_column() -> None:
    table = pa.table(
        {
            "commit_ts": ["2026-11-05 10:00:00"],
            "change_seq": ["7"],
            "document_id": ["a"],
            "content": ["body"],
            "allowed_groups": ['["hr","managers"]'],
        }
    )
    rows = parse_landing_file("dms/full.parquet", _parquet_bytes(table))
    assert_well_formed(rows)
    assert rows[0]["op"] == "I"
    assert rows[0]["change_seq"] == 7
    assert rows[0]["allowed_groups"] == ["hr", "managers"]


def test_dms_parquet_corrupt_is_one_unreadable_row() -> None:
    data = b"PAR1" + b"\x00garbage" * 20
    rows = parse_landing_file("dms/broken.parquet", data)
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == ["unreadable_file"]
    assert rows[0]["source_line"] is None
    assert rows[0]["source_layout"] == "dms"


# --------------------------------------------------------------------------- Debezium


def envelope(op: str, before: dict | None, after: dict | None, lsn: int, ts_ms: int) -> str:
    return json.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": ts_ms,
            "source": {"lsn": lsn, "table": "documents"},
        }
    )


DOC = {
    "document_id": "hr-remote",
    "document_type": "policy",
    "title": "Remote Work",
    "content": "# Remote\n\nBody.",
    "updated_at": "2026-10-01T08:00:00Z",
}
TS = 1793610000000  # 2026-11-02 09:00:00 UTC


def test_debezium_ops_and_lines() -> None:
    upd = dict(DOC, content="# Remote\n\nBody 2.", updated_at=1793613600123456)  # epoch us
    upd_ms = dict(DOC, content="# Remote\n\nBody 3.", updated_at=1793613600123)  # epoch ms
    lines = [
        envelope("r", None, DOC, 1, TS),
        "",
        envelope("u", DOC, upd, 2, TS + 60_000),
        "   ",
        json.dumps(
            {
                "schema": {"type": "struct"},
                "payload": json.loads(envelope("u", upd, upd_ms, 3, TS + 120_000)),
            }
        ),
        envelope("d", upd_ms, None, 4, TS + 180_000),
        envelope("c", None, dict(DOC, document_id="new", allowed_groups=["hr"], x=1), 5, TS),
    ]
    data = "\n".join(lines).encode()
    rows = parse_landing_file("debezium/0002.jsonl", data)
    assert_well_formed(rows)
    assert len(valid(rows)) == 5
    assert [r["source_line"] for r in rows] == [1, 3, 5, 6, 7]
    assert [r["op"] for r in rows] == ["I", "U", "U", "D", "I"]
    assert [r["source_op"] for r in rows] == ["r", "u", "u", "d", "c"]
    assert [r["change_seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["source_layout"] for r in rows} == {"debezium"}
    assert rows[0]["commit_ts"] == dt.datetime(2026, 11, 2, 9, 0)
    assert rows[0]["updated_at"] == dt.datetime(2026, 10, 1, 8, 0)
    assert rows[1]["updated_at"] == dt.datetime(2026, 11, 2, 10, 0, 0, 123456)
    assert rows[2]["updated_at"] == dt.datetime(2026, 11, 2, 10, 0, 0, 123000)
    assert rows[2]["content"] == "# Remote\n\nBody 3."
    # a delete takes its document fields from `before`
    assert rows[3]["document_id"] == "hr-remote"
    assert rows[3]["title"] == "Remote Work"
    assert rows[4]["allowed_groups"] == ["hr"]
    assert json.loads(rows[4]["metadata"]) == {"x": 1}
    assert rows[0]["metadata"] is None


@pytest.mark.parametrize(
    ("line", "code", "detail"),
    [
        ("{not json", "invalid_json", ""),
        ("[1, 2]", "invalid_envelope", "object"),
        ('"just a string"', "invalid_envelope", "object"),
        ('{"payload": null}', "invalid_envelope", "payload"),
        (
            json.dumps({"before": None, "after": DOC, "ts_ms": TS, "source": {"lsn": 1}}),
            "invalid_envelope",
            "op",
        ),
        (envelope("t", None, None, 1, TS), "unknown_op", "'t'"),
        (envelope("u", DOC, None, 1, TS), "invalid_envelope", "after"),
        (envelope("d", None, None, 1, TS), "invalid_envelope", "before"),
        (
            json.dumps(
                {"before": None, "after": "x", "op": "c", "ts_ms": TS, "source": {"lsn": 1}}
            ),
            "invalid_envelope",
            "after",
        ),
        (envelope("c", None, dict(DOC, document_id=""), 1, TS), "missing_document_id", ""),
        (
            envelope("c", None, {k: v for k, v in DOC.items() if k != "document_id"}, 1, TS),
            "missing_document_id",
            "",
        ),
        (
            json.dumps({"before": None, "after": DOC, "op": "c", "ts_ms": TS, "source": {}}),
            "missing_change_seq",
            "lsn",
        ),
        (
            json.dumps({"before": None, "after": DOC, "op": "c", "ts_ms": TS}),
            "missing_change_seq",
            "lsn",
        ),
        (envelope("c", None, DOC, "abc", TS), "missing_change_seq", "'abc'"),  # type: ignore[arg-type]
        (
            json.dumps({"before": None, "after": DOC, "op": "c", "source": {"lsn": 1}}),
            "invalid_timestamp",
            "ts_ms",
        ),
        (envelope("c", None, DOC, 1, "soon"), "invalid_timestamp", "'soon'"),  # type: ignore[arg-type]
        (
            envelope("c", None, dict(DOC, updated_at="not a date"), 1, TS),
            "invalid_timestamp",
            "updated_at",
        ),
        (envelope("c", None, dict(DOC, content={"a": 1}), 1, TS), "invalid_envelope", "content"),
        (
            envelope("c", None, dict(DOC, allowed_groups="[oops"), 1, TS),
            "invalid_json",
            "allowed_groups",
        ),
    ],
)
def test_debezium_bad_line_is_quarantined_alone(line: str, code: str, detail: str) -> None:
    good = envelope("c", None, DOC, 99, TS)
    data = "\n".join([good, line, good]).encode()
    rows = parse_landing_file("debezium/bad.jsonl", data)
    assert_well_formed(rows)
    assert [r["quarantine_reason"] is None for r in rows] == [True, False, True]
    bad = rows[1]
    assert reason(bad) == code, bad["quarantine_reason"]
    assert detail in bad["quarantine_reason"]
    assert bad["source_line"] == 2
    assert bad["raw_record"] == line


def test_debezium_invalid_utf8_line_and_too_large_content() -> None:
    good = envelope("c", None, DOC, 1, TS).encode()
    bad = b'{"op": "c", "after": {"document_id": "\xfe"}}'
    big = envelope("c", None, dict(DOC, content="y" * 3000), 2, TS).encode()
    rows = parse_landing_file(
        "debezium/x.jsonl", b"\r\n".join([good, bad, big]) + b"\r\n", max_content_bytes=2000
    )
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == [None, "invalid_utf8", "content_too_large"]
    assert rows[1]["raw_record"] == '{"op": "c", "after": {"document_id": "\\xfe"}}'
    assert rows[2]["document_id"] == "hr-remote"
    assert rows[2]["change_seq"] == 2


def test_debezium_json_extension_accepted() -> None:
    data = (envelope("c", None, DOC, 1, TS) + "\n").encode()
    rows = parse_landing_file("debezium/0001.json", data)
    assert_well_formed(rows)
    assert [r["op"] for r in rows] == ["I"]


def test_debezium_json_array_file() -> None:
    doc2 = dict(DOC, document_id="b")
    data = (
        "[\n  "
        + envelope("c", None, DOC, 1, TS)
        + ",\n  "
        + envelope("c", None, doc2, 2, TS)
        + "\n]\n"
    ).encode()
    rows = parse_landing_file("debezium/array.json", data)
    assert_well_formed(rows)
    assert [r["document_id"] for r in rows] == ["hr-remote", "b"]
    assert [r["source_line"] for r in rows] == [2, 3]


# --------------------------------------------------------------------------- unsupported


@pytest.mark.parametrize(
    "path",
    ["other/0001.csv", "dms/0001.txt", "debezium/0001.csv", "dms/0001", "0001.csv", "dms/x.jsonl"],
)
def test_unsupported_file_is_one_row(path: str) -> None:
    data = b"Op,commit_ts\nI,2026-11-02\n"
    rows = parse_landing_file(path, data)
    assert_well_formed(rows)
    assert [reason(r) for r in rows] == ["unsupported_file"]
    assert rows[0]["source_file"] == path
    assert rows[0]["source_line"] is None
    assert rows[0]["file_sha256"] == hashlib.sha256(data).hexdigest()
    assert path in rows[0]["quarantine_reason"] or "extension" in rows[0]["quarantine_reason"]


def test_extension_is_case_insensitive() -> None:
    rows = parse_landing_file("dms/0001.CSV", HEADER.encode() + b"I,2026-11-02,1,a,p,A,b,\n")
    assert valid(rows) == rows and len(rows) == 1


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    path=st.sampled_from(
        ["dms/f.csv", "dms/f.parquet", "debezium/f.jsonl", "debezium/f.json", "x/f.csv"]
    ),
    data=st.binary(max_size=600),
)
def test_arbitrary_bytes_never_raise(path: str, data: bytes) -> None:
    rows = parse_landing_file(path, data)
    assert_well_formed(rows)
    if path.endswith(".jsonl"):
        first = re.search(rb"\r\n?|\n", data)  # a file whose first line ends in a lone CR
        newline = b"\r" if first is not None and first.group() == b"\r" else b"\n"
        non_blank = [line for line in data.split(newline) if line.strip()]
        assert len(rows) == max(len(non_blank), 1)  # an empty file: one unreadable_file row
    if path.endswith(".parquet") or path.startswith("x/"):
        assert len(rows) == 1


csv_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.sampled_from(["I", "U", "D", "X", ""]),
            st.one_of(st.just("2026-11-02 09:00:00"), csv_text),
            st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str), csv_text),
            csv_text,
            st.one_of(csv_text, st.binary(max_size=30)),
        ),
        max_size=8,
    )
)
def test_every_csv_record_becomes_exactly_one_row(records: list[tuple]) -> None:
    header = b"Op,commit_ts,change_seq,document_id,content\n"
    data = header
    starts = []
    for op, ts, seq, doc, content in records:
        out = io.StringIO()
        shown = content if isinstance(content, str) else "@@BYTES@@"
        csv.writer(out, lineterminator="\n").writerow([op, ts, seq, doc, shown])
        encoded = out.getvalue().encode()
        if isinstance(content, bytes):  # raw, possibly invalid UTF-8, quoted per RFC 4180
            quoted = b'"' + content.replace(b'"', b'""') + b'"'
            encoded = encoded.replace(b'"@@BYTES@@"', quoted).replace(b"@@BYTES@@", quoted)
        starts.append(data.count(b"\n") + 1)
        data += encoded
    rows = parse_landing_file("dms/p.csv", data)
    assert_well_formed(rows)
    assert len(rows) == len(records)
    assert [r["source_line"] for r in rows] == starts


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {
                "Op": st.one_of(st.none(), st.sampled_from(["I", "U", "D", "?"])),
                "change_seq": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                "document_id": st.one_of(st.none(), csv_text),
                "commit_ts": st.one_of(st.none(), csv_text, st.just("2026-11-02 09:00:00")),
                "allowed_groups": st.one_of(st.none(), st.lists(csv_text, max_size=3)),
            }
        ),
        max_size=6,
    )
)
def test_every_parquet_row_becomes_exactly_one_row(records: list[dict]) -> None:
    schema = pa.schema(
        [
            ("Op", pa.string()),
            ("change_seq", pa.int64()),
            ("document_id", pa.string()),
            ("commit_ts", pa.string()),
            ("allowed_groups", pa.list_(pa.string())),
        ]
    )
    data = _parquet_bytes(pa.Table.from_pylist(records, schema=schema))
    rows = parse_landing_file("dms/p.parquet", data)
    assert_well_formed(rows)
    assert len(rows) == len(records)
    assert [r["source_line"] for r in rows] == list(range(1, len(records) + 1))


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.recursive(
                st.none() | st.booleans() | st.integers() | csv_text,
                lambda kids: (
                    st.lists(kids, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "op",
                                "before",
                                "after",
                                "source",
                                "lsn",
                                "ts_ms",
                                "payload",
                                "document_id",
                                "content",
                                "updated_at",
                                "allowed_groups",
                            ]
                        ),
                        kids,
                        max_size=5,
                    )
                ),
                max_leaves=12,
            ).map(lambda v: json.dumps(v).encode()),
        ),
        max_size=8,
    )
)
def test_every_jsonl_line_becomes_exactly_one_row(lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b" ") for line in lines]
    data = b"\n".join(lines)
    rows = parse_landing_file("debezium/p.jsonl", data)
    assert_well_formed(rows)
    # a file without any "\n" but with a "\r" is a carriage-return-only file (classic Mac)
    if b"\n" not in data and b"\r" in data:
        lines = data.split(b"\r")
    assert len(rows) == max(sum(1 for line in lines if line.strip()), 1)  # empty: one row


# --------------------------------------------------------------------------- real corpus


@pytest.fixture(scope="module")
def basecamp() -> Path:
    if not BASECAMP.is_dir():
        pytest.skip(f"real CDC corpus not present at {BASECAMP} (lives outside the project)")
    return BASECAMP


def _replay(rows: list[dict]) -> dict[str, dict]:
    events = {(r["document_id"], r["change_seq"]): r for r in rows}
    state: dict[str, dict] = {}
    for key in sorted(events, key=lambda k: k[1]):
        ev = events[key]
        if ev["op"] == "D":
            state.pop(ev["document_id"], None)
        else:
            state[ev["document_id"]] = ev
    return state


@pytest.mark.parametrize(("layout", "ext"), [("dms", "csv"), ("debezium", "jsonl")])
def test_basecamp_corpus_parses_cleanly_and_replays_to_final_state(
    basecamp: Path, layout: str, ext: str
) -> None:
    rows: list[dict] = []
    for path in sorted((basecamp / layout).glob(f"*.{ext}")):
        rows += parse_landing_file(f"{layout}/{path.name}", path.read_bytes())
    assert [r["quarantine_reason"] for r in rows if r["quarantine_reason"]] == []
    assert len(rows) == 362
    final = json.loads((basecamp / "final_state.json").read_text(encoding="utf-8"))
    state = _replay(rows)
    assert sorted(state) == sorted(final)
    for doc_id, want in final.items():
        got = state[doc_id]
        assert got["title"] == want["title"]
        assert got["document_type"] == want["document_type"]
        assert len(got["content"]) == want["content_len"]
        assert got["updated_at"] == dt.datetime.fromisoformat(want["updated_at"])


def test_basecamp_layouts_carry_the_same_events(basecamp: Path) -> None:
    by_layout: dict[str, dict[int, tuple]] = {}
    for layout, ext in (("dms", "csv"), ("debezium", "jsonl")):
        events = {}
        for path in sorted((basecamp / layout).glob(f"*.{ext}")):
            for r in parse_landing_file(f"{layout}/{path.name}", path.read_bytes()):
                content = r["content"] if r["op"] != "D" else None
                events[r["change_seq"]] = (r["op"], r["commit_ts"], r["document_id"], content)
        by_layout[layout] = events
    assert by_layout["dms"] == by_layout["debezium"]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_fixture_files_parse(kind: str, request, tmp_path, monkeypatch) -> None:
    """Every file under tests/fixtures/cdc/landing, landed in a folder or a bucket and read back
    through the landing store, parses to the rows its sidecar expects."""
    from s3_landing import landing_project

    from ragmart.ingest.landing import list_landing_files

    landing = FIXTURES / "landing"
    expected = json.loads((landing / "expected_reasons.json").read_text(encoding="utf-8"))
    project = landing_project(kind, tmp_path, request)
    for path in sorted(landing.rglob("*")):
        if path.is_file():
            project.land(path.relative_to(landing).as_posix(), path.read_bytes())
    for name, value in project.env().items():
        monkeypatch.setenv(name, value)
    seen = {}
    for landed in list_landing_files(getattr(project, "landing_url", project.landing)):
        if landed.relative_path != "expected_reasons.json":
            rows = parse_landing_file(landed.relative_path, landed.read())
            assert_well_formed(rows)
            seen[landed.relative_path] = [reason(r) for r in rows]
    assert seen == expected


def test_debezium_lone_surrogate_escape_is_quarantined() -> None:
    line = envelope("c", None, dict(DOC, title="bad \\ud800 title"), 1, TS).replace(
        "\\\\ud800", "\\ud800"
    )
    assert "\\ud800" in line
    rows = parse_landing_file("debezium/s.jsonl", line.encode())
    assert_well_formed(rows)
    assert reason(rows[0]) == "invalid_utf8"
    assert "title" in rows[0]["quarantine_reason"]


# --------------------------------------------------------------------------- record removal


def _comparable(row: dict) -> tuple:
    """A row without what removing other records may change (its file hash and position)."""
    return tuple((k, v) for k, v in row.items() if k not in ("file_sha256", "source_line"))


def _landing_files() -> list[tuple[str, bytes]]:
    sample = Path(__file__).resolve().parents[2] / "sample" / "landing"
    files = []
    for root in (sample, FIXTURES / "landing"):
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel.split("/")[0] in ("dms", "debezium"):
                files.append((rel, path.read_bytes()))
    return files


@pytest.mark.parametrize(("rel", "data"), _landing_files(), ids=lambda v: str(v)[:40])
def test_without_records_removes_exactly_one_documents_records(rel: str, data: bytes) -> None:
    """The purge's rewrite, read back by the same reader, leaves every other record as it was
    (same order, same values) and none of the removed document's; with nothing removed the
    bytes are untouched."""
    records = landing_records(rel, data)
    assert [r.row for r in records] == parse_landing_file(rel, data)
    assert without_records(rel, data, []) == data
    ids = {r.row["document_id"] for r in records if r.span is not None} - {None}
    for document_id in sorted(ids)[:6]:
        drop = [r for r in records if r.row["document_id"] == document_id]
        rest = without_records(rel, data, drop)
        after = parse_landing_file(rel, rest)
        expected = [_comparable(r.row) for r in records if r.row["document_id"] != document_id]
        if not expected and not rel.endswith((".csv", ".parquet")):
            # a JSON file left without records reads as an empty file (purge deletes it)
            assert [(r["quarantine_reason"] or "").split(":")[0] for r in after] == [
                "unreadable_file"]
            continue
        assert [_comparable(r) for r in after] == expected


@pytest.mark.parametrize("layout_file", ["debezium/a.json", "debezium/a.jsonl", "dms/a.csv"])
def test_without_records_of_every_record_leaves_a_file_with_no_records(layout_file: str) -> None:
    docs = [dict(DOC, document_id=f"d{i}") for i in range(3)]
    lines = [envelope("c", None, d, i + 1, TS) for i, d in enumerate(docs)]
    if layout_file.endswith(".json"):
        data = ("\ufeff[\n  " + ",\n  ".join(lines) + "\n]\n").encode()
    elif layout_file.endswith(".jsonl"):
        data = ("\ufeff" + "\r\n".join(lines)).encode()
    else:
        data = ("\ufeff" + HEADER + "".join(
            f'I,2026-11-02,{i},"d{i}",p,A,b,\r\n' for i in range(3))).encode()
    records = landing_records(layout_file, data)
    assert len(records) == 3
    for keep in range(3):
        drop = [r for i, r in enumerate(records) if i != keep]
        rest = parse_landing_file(layout_file, without_records(layout_file, data, drop))
        assert [r["document_id"] for r in rest] == [f"d{keep}"]
    emptied = parse_landing_file(layout_file, without_records(layout_file, data, records))
    if layout_file.endswith(".jsonl"):
        # a JSONL file left with only a byte-order mark reads as empty (purge deletes it)
        assert [(r["quarantine_reason"] or "").split(":")[0] for r in emptied] == [
            "unreadable_file"]
    else:
        assert emptied == []
