"""Compliance purge through the real CLI after a real dbt build: nothing of the document is left
in any file of the deployment (database, snapshots, landing zone, target, logs), whatever the
layout spells its id like, and a purge interrupted anywhere is completed by the next one.

One deployment is built once per module (sample corpus + one victim document per layout +
decoys); each test works on its own copy of it. The check is a byte search of every file for a
distinctive sentence of the victim in UTF-8, UTF-16-LE/BE and JSON-escaped form (`traces`).
"""

from __future__ import annotations

import io
import json
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cdc_files import document, ts
from dbt_harness import SAMPLE_LANDING, Project
from purge_landing import LocalLanding, S3Landing, forms, move_to_s3

from ragmart.duck import connect

TS_MS = 1793610000000  # 2026-11-02 09:00:00 UTC


def sentence(word: str) -> str:
    return f"Élodie's {word} heron counted forty-one amber lanterns on the quay at dawn."


# layout -> (document id, landing file, its distinctive sentence)
VICTIMS = {
    "dms_csv": ('purge-csv,"quoted" ü', "dms/0100_victim.csv", sentence("csv")),
    "dms_parquet": ("purge-parquet-ß", "dms/0101_victim.parquet", sentence("parquet")),
    "debezium_jsonl": ("purge-jsonl-café", "debezium/0102_victim.jsonl", sentence("jsonl")),
    "debezium_json_array": ("purge-array/é", "debezium/0103_victim.json", sentence("array")),
}
# quarantined records of the jsonl victim: an unknown op (its id readable) and a line that is
# not JSON (no readable id: it belongs to the victim because its raw text names the id)
QUARANTINED = (sentence("unknown-op"), sentence("broken-json"))
KEEPER = "purge-keeper"  # shares the victims' files: must survive every purge
KEEPER_SENTENCE = "The keeper's lighthouse stays lit through every purge of its neighbours."


def _content(doc_id: str, text: str) -> str:
    return document(f"Purge test {doc_id}", {"Body": [text, f"Filler for {doc_id} " * 12]})


def _envelope(doc_id: str, text: str, seq: int, op: str = "c") -> dict:
    image = {"document_id": doc_id, "document_type": "policy", "title": f"Purge test {doc_id}",
             "content": _content(doc_id, text), "updated_at": ts(seq).isoformat()}
    return {"before": None, "after": image, "op": op, "ts_ms": TS_MS + seq,
            "source": {"lsn": seq}}


def _land_victims(project: Project) -> None:
    csv_id = VICTIMS["dms_csv"][0].replace('"', '""')
    header = "OP,Commit_TS,CHANGE_SEQ,Document_ID,DOCUMENT_TYPE,Title,CONTENT,updated_at\r\n"
    rows = "".join(
        f'I,2026-11-02 09:00:00,{seq},"{doc_id}",policy,T,'
        f'"{_content(raw, text).replace(chr(34), chr(34) * 2)}",'
        f"2026-11-02 09:00:00\r\n"
        for seq, doc_id, raw, text in (
            (5001, csv_id, VICTIMS["dms_csv"][0], VICTIMS["dms_csv"][2]),
            (5002, f"{KEEPER}-csv", f"{KEEPER}-csv", KEEPER_SENTENCE)))
    project.land(VICTIMS["dms_csv"][1], ("\ufeff" + header + rows).encode())

    table = pa.table({
        "Op": ["I", "I"], "commit_ts": [ts(1), ts(2)], "change_seq": [5011, 5012],
        "Document_Id": [VICTIMS["dms_parquet"][0], f"{KEEPER}-parquet"],
        "document_type": ["policy", "policy"], "title": ["P", "K"],
        "content": [_content("p", VICTIMS["dms_parquet"][2]), _content("k", KEEPER_SENTENCE)],
        "updated_at": [ts(1), ts(2)]})
    out = io.BytesIO()
    pq.write_table(table, out)
    project.land(VICTIMS["dms_parquet"][1], out.getvalue())

    jsonl_id = VICTIMS["debezium_jsonl"][0]
    lines = [json.dumps(_envelope(jsonl_id, VICTIMS["debezium_jsonl"][2], 5021)),
             json.dumps(_envelope(jsonl_id, QUARANTINED[0], 5022, op="x")),
             json.dumps(_envelope(jsonl_id, QUARANTINED[1], 5023))[:-40],  # cut: not JSON
             json.dumps(_envelope(f"{KEEPER}-jsonl", KEEPER_SENTENCE, 5024))]
    project.land(VICTIMS["debezium_jsonl"][1], "\ufeff" + "\n".join(lines) + "\n")

    array_id = VICTIMS["debezium_json_array"][0]
    elements = [json.dumps(_envelope(array_id, VICTIMS["debezium_json_array"][2], 5031)),
                json.dumps(_envelope(f"{KEEPER}-array", KEEPER_SENTENCE, 5032))]
    text = "[\n  " + ",\n  ".join(elements) + "\n]\n"
    project.land(VICTIMS["debezium_json_array"][1], text.replace("/", "\\/"))

    # a document whose text names every victim id: its file is not theirs, never rewritten
    neighbour = "Related: " + ", ".join(v[0] for v in VICTIMS.values()) + "."
    project.land("debezium/0104_neighbour.jsonl",
                 json.dumps(_envelope("purge-neighbour", neighbour, 5041), ensure_ascii=False))
    # a corrupt file before the victims': a purge goes past it
    parquet = (SAMPLE_LANDING / "dms" / "0005_inserts.parquet").read_bytes()
    project.land("dms/0050_corrupt.parquet", parquet[: len(parquet) // 2])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("purge-base"))
    project.land_sample()
    _land_victims(project)
    project.build()
    project.ragmart("publish", "v1")
    project.ragmart("eval", "--out", str(project.workdir / "target" / "eval"))
    # logs that carry the text, as a failing model's message would: JSON-escaped in dbt.log,
    # UTF-16 in another log
    with open(project.workdir / "logs" / "dbt.log", "a") as log:
        log.write("error parsing record: " + json.dumps(VICTIMS["debezium_jsonl"][2]) + "\n")
    (project.workdir / "logs" / "export.log").write_bytes(
        ("exported: " + VICTIMS["dms_csv"][2] + "\n").encode("utf-16"))
    return project


@pytest.fixture
def deployment(built: Project, tmp_path: Path) -> Project:
    shutil.copytree(built.workdir, tmp_path / "d")
    return Project(tmp_path / "d")


@pytest.fixture(params=["local", "s3"])
def zone(request: pytest.FixtureRequest, deployment: Project) -> LocalLanding | S3Landing:
    """The deployment's landing zone: its folder, or the same files in a bucket (moto)."""
    if request.param == "local":
        return LocalLanding(deployment)
    return move_to_s3(deployment, request.getfixturevalue("s3_server"),
                      request.getfixturevalue("s3_bucket"))


def traces(root: Path, text: str) -> list[str]:
    """Files under root holding `text` in UTF-8, UTF-16-LE/BE or JSON-escaped form."""
    wanted = forms(text)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and any(w in p.read_bytes() for w in wanted))


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def assert_purged(project: Project, layout: str,
                  zone: LocalLanding | S3Landing | None = None) -> None:
    doc_id, _file, text = VICTIMS[layout]
    texts = [text, *(QUARANTINED if layout == "debezium_jsonl" else ())]
    for t in texts:
        assert traces(project.workdir, t) == [], t
        assert zone is None or zone.traces(t) == [], t  # every version of every object
    for database in [project.db_path, *(project.workdir / "published").glob("v*.duckdb")]:
        conn = connect(database, read_only=True)
        try:
            # a slim snapshot (ragmart.serving.snapshots.snapshot) holds only the serving tables: no
            # staging, no HNSW index; every table keyed by document_id lacks the document
            tables = {t for (t,) in conn.execute(
                "select table_name from duckdb_tables() where database_name = "
                "current_database()").fetchall()}
            keyed = {t for (t,) in conn.execute(
                "select table_name from duckdb_columns() where column_name = 'document_id' "
                "and database_name = current_database()").fetchall()} & tables
            assert keyed, database
            for table in keyed:
                assert conn.execute(f'select count(*) from "{table}" where document_id = $d',
                                    {"d": doc_id}).fetchone()[0] == 0, (database, table)
            if "stg_landing__document_events" in tables:
                assert conn.execute(
                    "select count(*) from stg_landing__document_events where document_id = $d "
                    "or raw_record like '%' || $e || '%'",
                    {"d": doc_id, "e": json.dumps(doc_id)[1:-1]}).fetchone()[0] == 0
            if "fct_chunk_vector_index_v1" in tables:
                assert conn.execute(
                    "select count(*) from duckdb_indexes() where sql ilike '%hnsw%'"
                ).fetchone()[0] >= 1
        finally:
            conn.close()
    assert json.loads((project.workdir / "purge_journal.json").read_text()) == {}
    assert doc_id in json.loads((project.workdir / "purged_documents.json").read_text())


# The landing step rewrites a file by its layout whatever the store (landing.without_records),
# then puts it through the store: every layout in the folder, the bucket once (its CSV); the other
# layouts in a bucket are slow variants (`pytest -m slow`). test_purge_s3.py keeps the bucket's
# own promises (versions, permissions, a kill between objects) in the fast suite.
LOCAL_THEN_S3 = ["local", pytest.param("s3", marks=pytest.mark.slow)]


@pytest.mark.parametrize("zone,layout", [
    *(("local", layout) for layout in sorted(VICTIMS)),
    ("s3", "dms_csv"),
    *(pytest.param("s3", layout, marks=pytest.mark.slow) for layout in sorted(VICTIMS)
      if layout != "dms_csv"),
], indirect=["zone"])
def test_purge_leaves_no_trace_of_the_document_whatever_its_layout(zone, layout) -> None:
    project = zone.project
    doc_id, victim_file, text = VICTIMS[layout]
    assert victim_file in zone.traces(text)
    before = zone.states()

    proc = project.ragmart("purge", "--document-id", doc_id)
    report = json.loads(proc.stdout)[0]
    assert report["document_id"] == doc_id
    assert zone.name(victim_file) in report["files_rewritten"]
    assert_purged(project, layout, zone)

    # only the victim's own file was rewritten (the neighbour names the id, the corrupt file
    # is unreadable: both untouched), and its keeper record is still there
    after = zone.states()
    assert {name for name in before if before[name] != after[name]} == {victim_file}
    assert zone.traces(KEEPER_SENTENCE) == sorted(f"{v[1]}" for v in VICTIMS.values())
    assert project.query("select count(*) from dim_documents where document_id like $k",
                         {"k": f"{KEEPER}%"}) == [(4,)]

    if layout == "debezium_jsonl":
        # replaying the original file (quarantined lines included) brings nothing back
        _land_victims_replay(project, zone)
        project.build()
        assert project.query("select count(*) from dim_documents where document_id = $d",
                             {"d": doc_id}) == [(0,)]
        assert project.query(
            "select count(*) from fct_quarantined_events where raw_record like '%jsonl-caf%'"
        ) == [(0,)]


def _land_victims_replay(project: Project, zone: LocalLanding | S3Landing) -> None:
    replay = Project(project.workdir / "replay")
    _land_victims(replay)
    for layout in ("dms", "debezium"):
        for src in (replay.landing / layout).glob("*"):
            zone.land(f"{layout}/replay_{src.name}", src.read_bytes())
    shutil.rmtree(replay.workdir)


# Where a kill leaves a purge, and what the next run must do about it. The fast suite keeps the
# points whose recovery takes a branch no other test takes: a purged snapshot copy to switch
# to, a switch already made (the old file still there), deleted rows still in freed blocks.
# The others recover along paths other tests take (slow: `pytest -m slow`): nothing done yet
# is an ordinary purge of a journaled id; logs done is where the dbt-build completion test
# below kills; a rewritten landing file is one the landing step no longer finds; every step
# done but the last is how the unreadable-file test leaves the journal.
KILL_POINTS = (
    pytest.param("purge_journaled", marks=pytest.mark.slow),  # id recorded, nothing else done
    pytest.param("purge_step_artifacts", marks=pytest.mark.slow),  # logs and reports done
    pytest.param("purge_landing_file", marks=pytest.mark.slow),  # the first file rewritten
    "purge_snapshot_copied",    # purged copy written, serving not switched
    "purge_snapshot_switched",  # serving switched, the old snapshot not removed
    "purge_database_deleted",   # build database rows deleted, file not rewritten
    pytest.param("purge_step_database", marks=pytest.mark.slow),  # all done, journal open
)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_purge_killed_at_any_step_is_completed_by_the_next(deployment, point) -> None:
    project = deployment
    doc_id = VICTIMS["debezium_jsonl"][0]
    project.extra_env = {"RAGMART_KILL_AT": point}
    killed = project.ragmart("purge", "--document-id", doc_id, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # recorded first: ingestion already refuses the document, the journal holds the purge
    assert doc_id in json.loads((project.workdir / "purged_documents.json").read_text())
    assert doc_id in json.loads((project.workdir / "purge_journal.json").read_text())
    # the serving snapshot named by serving.json always exists
    serving = json.loads((project.workdir / "published" / "serving.json").read_text())
    assert (project.workdir / "published" / serving["snapshot"]).exists()

    project.extra_env = {}
    done = json.loads(project.ragmart("purge").stdout)
    assert [r["document_id"] for r in done] == [doc_id]
    assert done[0]["completed_interrupted_purge"]
    assert_purged(project, "debezium_jsonl")
    assert project.query("select count(*) from dim_documents where document_id like $k",
                         {"k": f"{KEEPER}%"}) == [(4,)]


# the build completes a purge through the same steps whatever the store: in the folder (slow:
# in a bucket; test_purge_s3.py keeps a purge killed in a bucket and completed)
@pytest.mark.parametrize("zone", LOCAL_THEN_S3, indirect=True)
def test_the_next_dbt_build_completes_an_interrupted_purge(zone) -> None:
    project = zone.project
    doc_id = VICTIMS["dms_parquet"][0]
    project.extra_env = {"RAGMART_KILL_AT": "purge_step_artifacts"}
    assert project.ragmart("purge", "--document-id", doc_id,
                           check=False).returncode == -signal.SIGKILL
    project.extra_env = {}
    project.build()
    assert_purged(project, "dms_parquet", zone)


def test_purge_under_open_readers_switches_the_snapshot_and_waits_for_the_build_db(
        deployment, monkeypatch) -> None:
    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    project = deployment
    for name, value in project.env().items():
        monkeypatch.setenv(name, value)
    pointer = project.workdir / "published" / "serving.json"
    held = json.loads(pointer.read_text())["snapshot"]

    # A long-lived Retriever holds the serving snapshot: the purge completes without writing
    # under it, serving switches to a purged copy, the pinned reader keeps reading its file.
    doc_id = VICTIMS["dms_csv"][0]
    with Retriever() as retriever:
        assert retriever.path.name == held
        project.ragmart("purge", "--document-id", doc_id)
        assert_purged(project, "dms_csv")
        switched = json.loads(pointer.read_text())["snapshot"]
        assert switched != held and not (project.workdir / "published" / held).exists()
        assert len(retriever.retrieve("relocation allowance", k=3, groups=ALL_GROUPS)) == 3
    with Retriever() as fresh:
        assert fresh.path.name == switched
        hits = fresh.retrieve("Élodie's csv heron counted forty-one amber lanterns", k=10,
                              groups=ALL_GROUPS)
        assert doc_id not in {h.document_id for h in hits}

    # A reader holding the build database: a one-line error (no traceback), the purge stays
    # journaled, and once the reader is gone the next purge completes it.
    doc_id = VICTIMS["dms_parquet"][0]
    build_reader = connect(project.db_path, read_only=True)
    try:
        blocked = project.ragmart("purge", "--document-id", doc_id, check=False)
        assert blocked.returncode == 2, blocked.stderr
        assert "locked" in blocked.stderr and "Traceback" not in blocked.stderr
        assert doc_id in json.loads((project.workdir / "purge_journal.json").read_text())
    finally:
        build_reader.close()
    project.ragmart("purge")
    assert_purged(project, "dms_parquet")


def test_an_id_of_no_document_is_refused_with_the_closest_and_touches_nothing(zone):
    project = zone.project
    before = file_states(project.workdir), zone.states()
    typo = "purge-parquet"  # a prefix of purge-parquet-ß
    proc = project.ragmart("purge", "--document-id", typo, check=False)
    assert proc.returncode == 2
    assert "purge-parquet-ß" in proc.stderr and "nothing purged" in proc.stderr
    assert (file_states(project.workdir), zone.states()) == before
    assert not (project.workdir / "purged_documents.json").exists()


def test_dry_run_lists_every_change_and_makes_none(zone) -> None:
    project = zone.project
    doc_id, victim_file, _text = VICTIMS["debezium_jsonl"]
    before = file_states(project.workdir)
    landing_before = zone.states()
    plan = json.loads(project.ragmart("purge", "--document-id", doc_id, "--dry-run").stdout)[0]
    assert (file_states(project.workdir), zone.states()) == (before, landing_before)
    assert plan["landing"] == {zone.name(victim_file): [1, 2, 3]}
    (snapshot,) = (project.workdir / "published").glob("v*.duckdb")
    assert set(plan["databases"]) == {str(project.db_path), str(snapshot)}
    assert plan["databases"][str(project.db_path)]["fct_quarantined_events"] == 2
    assert plan["snapshots"] == {str(snapshot): snapshot.stem + "-purged1.duckdb"}
    assert plan["artifacts"][str(project.workdir / "logs" / "dbt.log")].startswith("remove lines")

    project.ragmart("purge", "--document-id", doc_id)
    after = file_states(project.workdir)
    changed = {name for name in before if before[name] != after.get(name)
               and not name.startswith("landing/")}
    changed |= {zone.name(rel) for rel, state in landing_before.items()
                if zone.states().get(rel) != state}
    listed = {str(Path(p).relative_to(project.workdir))
              for p in [*plan["databases"], *plan["artifacts"]]} | set(plan["landing"])
    # every file the purge changed was listed (besides the journal and registry it writes)
    assert changed - {"purge_journal.json", "purged_documents.json"} <= listed | {
        "published/serving.json", "published/history.jsonl"}
    assert listed <= changed


# unreadable_mentions judges the bytes of every file the store lists, whatever the store: in
# the folder (slow: in a bucket; [s3-dms_csv] above reads the bucket through the same step)
@pytest.mark.parametrize("zone", LOCAL_THEN_S3, indirect=True)
def test_an_unreadable_landing_file_naming_the_document_keeps_the_purge_open(zone):
    """Everything else is purged; the file ingestion cannot read is named, and once the
    operator deletes it the next purge finishes."""
    project = zone.project
    doc_id, _file, text = VICTIMS["debezium_jsonl"]
    stray = zone.land("dms/0300_export.txt", f"{doc_id}: {text}\n")
    proc = project.ragmart("purge", "--document-id", doc_id, check=False)
    assert proc.returncode == 2 and stray in proc.stderr, proc.stderr
    assert zone.traces(text) == ["dms/0300_export.txt"]
    assert [t for t in traces(project.workdir, text) if not t.startswith("landing/")] == []
    assert json.loads((project.workdir / "purge_journal.json").read_text())[doc_id]["done"] == [
        "artifacts", "landing", "snapshots", "database", "postgres"]  # postgres: nothing to do
    zone.remove("dms/0300_export.txt")
    project.ragmart("purge")
    assert_purged(project, "debezium_jsonl", zone)


def test_a_quarantined_record_belongs_to_the_id_it_names_as_a_whole_word() -> None:
    from ragmart.ingest.purged import belongs, is_purged

    def broken(raw: str) -> dict:
        return {"document_id": None, "quarantine_reason": "invalid_json: x", "raw_record": raw,
                "change_seq": None}

    raw = '{"after": {"document_id": "hr-reloc\\u00e9ation-assistance", "content": "x'
    assert belongs(broken(raw), "hr-relocéation-assistance")
    assert not belongs(broken(raw), "hr-relocéation")  # a prefix is not the document
    assert not belongs(broken(raw), "assistance")
    csv_raw = 'I,2026-11-02,5,"a,""b""",policy,T,"text'
    assert belongs(broken(csv_raw), 'a,"b"')
    valid = {"document_id": "a", "quarantine_reason": None, "raw_record": None, "change_seq": 7}
    assert is_purged(valid, {"a": 7}) and not is_purged(valid, {"a": 6})
    assert is_purged(broken(csv_raw), {'a,"b"': 1}) and not is_purged(broken(csv_raw), {"tex": 1})
