"""Versioned backfills: build beside, publish behind a gate, roll back, never block readers,
and purge a document from every file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from dbt_harness import ROOT, SAMPLE_LANDING
from test_serving_gate import dbt_baseline, serving_json

from ragmart.duck import connect
from ragmart.exit_codes import Exit
from ragmart.relations import InvalidVersionError
from ragmart.serving import vector_index
from ragmart.serving.snapshots import add_lookup_indexes


def test_backfill_builds_beside_publishes_behind_gate_and_rolls_back(
    tmp_path, built_samples,
) -> None:
    project = built_samples.copy(tmp_path)
    project.ragmart("publish", "v1")
    v1 = serving_json(project)
    assert v1["version"] == "v1" and not v1["forced"] and v1["metrics"]["recall@5"] > 0
    # the snapshot is read-optimized: chunk_id lookup indexes the build database goes without
    indexes = ("select table_name, index_name from duckdb_indexes() "
               "where index_name like '%chunk_id'")
    assert project.query(indexes) == []
    snapshot = connect(project.workdir / "published" / v1["snapshot"], read_only=True)
    try:
        assert sorted(snapshot.execute(indexes).fetchall()) == [
            ("fct_chunk_embeddings_v1", "fct_chunk_embeddings_v1_chunk_id"),
            ("fct_chunk_history_v1", "fct_chunk_history_v1_chunk_id"),
        ]
    finally:
        snapshot.close()

    # A new chunker, built beside v1 under v2: v1's tables are untouched.
    before = project.query("select chunk_id, chunk_hash from fct_chunk_embeddings_v1 order by 1")
    cached = {h for (h,) in project.query("select chunk_hash from int_chunk_embeddings")}
    project.build("--vars", "{index_version: v2, chunker_version: md-sections-v2}")
    after = project.query("select chunk_id, chunk_hash from fct_chunk_embeddings_v1 order by 1")
    assert after == before
    run = project.last_run()
    changed = project.query(
        "select count(*) from fct_chunk_embeddings_v2 where chunk_hash not in "
        "(select chunk_hash from fct_chunk_embeddings_v1)")[0][0]
    total_v2 = project.query("select count(*) from fct_chunk_embeddings_v2")[0][0]
    # only texts the new chunker changed were sent; the rest came from the cache
    v2_hashes = {h for (h,) in project.query(
        "select chunk_hash from int_chunks where chunker_version = 'md-sections-v2'")}
    assert run["texts_sent"] == len(v2_hashes - cached) > 0
    assert run["cache_hits"] >= len(v2_hashes & cached) * 0.9
    assert 0 < changed < total_v2 * 0.25

    versions = json.loads(project.ragmart("versions", "--json").stdout)
    assert {v["version"]: v["serving"] for v in versions} == {"v1": True, "v2": False}

    # The gate refuses a candidate below the serving metrics, naming the metric.
    pointer = project.workdir / "published" / "serving.json"
    report = v1["report"]
    inflated = {**v1, "report": {**report, "metrics": {k: 1.0 for k in report["metrics"]}}}
    pointer.write_text(json.dumps(inflated))
    refused = project.ragmart("publish", "v2", check=False)
    assert refused.returncode == Exit.GATE_REFUSED
    assert "recall@5" in refused.stderr and "refused" in refused.stderr
    assert serving_json(project)["version"] == "v1"

    forced = project.ragmart("publish", "v2", "--force")
    assert forced.returncode == 0
    v2 = serving_json(project)
    assert v2["version"] == "v2" and v2["forced"] and v2["gate_failures"]

    assert dbt_baseline(project) == pytest.approx(v2["metrics"])

    project.ragmart("rollback")
    back = serving_json(project)
    assert back["version"] == "v1" and back["snapshot"] == v1["snapshot"]
    assert (project.workdir / "published" / v1["snapshot"]).exists()
    # what serves again is the baseline again, measured anew on its snapshot
    assert back["metrics"] == pytest.approx(v1["metrics"])
    assert back["evaluated_at"] > v2["published_at"]
    assert dbt_baseline(project) == pytest.approx(v1["metrics"])


def test_readers_are_never_blocked_and_answers_come_from_one_version(
    tmp_path, built_samples,
) -> None:
    project = built_samples.copy(tmp_path)
    project.ragmart("publish", "v1")
    first = serving_json(project)["snapshot"]

    out, stop = tmp_path / "answers.jsonl", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "python" / "serving_reader.py"),
         str(project.db_path), str(stop), str(out)],
        cwd=ROOT, env=project.env(),
    )
    try:
        time.sleep(2)
        # a full rebuild (the embedding cache survives --full-refresh) and a publish
        project.build("--full-refresh")
        project.ragmart("publish", "v1", "--force")
        time.sleep(3)
    finally:
        stop.touch()
        reader.wait(timeout=120)
    second = serving_json(project)["snapshot"]
    assert second != first
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    errors = [a for a in answers if "error" in a]
    assert not errors, errors[:3]
    snapshots = {Path(a["database"]).name for a in answers}
    assert {first, second} <= snapshots, snapshots
    for answer in answers:
        assert len(answer["chunk_ids"]) == 5
        # wholly from one version: one build made every row, and every row is in that snapshot
        assert len(answer["invocations"]) == 1
    for name in (first, second):
        conn = connect(project.workdir / "published" / name, read_only=True)
        try:
            ids = {r[0] for r in conn.execute("select chunk_id from fct_chunk_embeddings_v1")
                   .fetchall()}
        finally:
            conn.close()
        for answer in answers:
            if Path(answer["database"]).name == name:
                assert set(answer["chunk_ids"]) <= ids


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_purge_removes_a_document_from_every_file_and_rollback_cannot_resurrect(
    tmp_path, built_samples,
):
    victim = "hr-relocation-assistance"
    project = built_samples.copy(tmp_path)
    project.ragmart("publish", "v1")
    project.build("--full-refresh")
    project.ragmart("publish", "v1", "--force")  # two snapshots: a rollback target exists

    built_index = hnsw_indexes(project.db_path)  # as dbt built it (create_vector_index)
    assert {name: metric for name, (metric, _) in built_index.items()} == {
        "fct_chunk_vector_index_v1_hnsw": vector_index.METRIC}

    marker = project.query(
        "select chunk_text from fct_chunk_embeddings_v1 where document_id = $d "
        "order by chunk_index limit 1 offset 1", {"d": victim})[0][0].split("\n\n", 1)[1][:60]
    assert _files_containing(project.landing, marker.encode()), "marker must be findable"

    proc = project.ragmart("purge", "--document-id", victim)
    assert "files_rewritten" in proc.stdout
    assert _files_containing(tmp_path, marker.encode()) == []
    assert _files_containing(tmp_path, victim.encode() + b"@") == []  # no chunk ids left

    databases = [project.db_path, *sorted((project.workdir / "published").glob("v*.duckdb"))]
    assert len(databases) == 3
    for database in databases:
        conn = connect(database, read_only=True)
        try:
            for schema, table, column in conn.execute(
                "select table_schema, table_name, column_name from information_schema.columns "
                "where data_type = 'VARCHAR' and table_catalog = current_database()"
            ).fetchall():
                # its text anywhere (the full-text index's schema too); its id as a row key
                # (the judged queries may still name it)
                same_id = f' or "{column}" = $d' if column == "document_id" else ""
                hits = conn.execute(
                    f'select count(*) from "{schema}"."{table}" where "{column}" like '
                    f'$m{same_id}',
                    {"m": f"%{marker}%", "d": victim} if same_id else {"m": f"%{marker}%"},
                ).fetchone()[0]
                assert hits == 0, (database.name, schema, table, column)
            # indexes survive the rewrite: the HNSW index where the file has the index table
            # (the build database; a slim snapshot has neither, ragmart.serving.snapshots),
            # the chunk_id lookup indexes in snapshots
            names = {n for (n,) in conn.execute(
                "select index_name from duckdb_indexes() where database_name = "
                "current_database()").fetchall()}
            tables = {t for (t,) in conn.execute(
                "select table_name from duckdb_tables() where database_name = "
                "current_database()").fetchall()}
            assert ("fct_chunk_vector_index_v1_hnsw" in names) == (
                "fct_chunk_vector_index_v1" in tables)
            if database != project.db_path:
                assert "fct_chunk_embeddings_v1_chunk_id" in names
        finally:
            conn.close()
    # purge re-created the HNSW index dbt built: the same index, metric and all
    assert hnsw_indexes(project.db_path) == built_index

    project.ragmart("rollback")
    served = serving_json(project)
    assert dbt_baseline(project) == pytest.approx(served["metrics"])  # measured after the purge
    conn = connect(project.workdir / "published" / served["snapshot"], read_only=True)
    try:
        assert conn.execute("select count(*) from fct_chunk_embeddings_v1 where document_id = $d",
                            {"d": victim}).fetchone()[0] == 0
    finally:
        conn.close()

    # Replaying the original landing files does not bring it back.
    for layout in ("dms", "debezium"):
        for src in (SAMPLE_LANDING / layout).glob("*"):
            project.land(f"{layout}/replay_{src.name}", src.read_bytes())
    project.build()
    assert project.query("select count(*) from dim_documents where document_id = $d",
                         {"d": victim}) == [(0,)]


def hnsw_indexes(database: Path) -> dict[str, tuple[str, int]]:
    """Every HNSW index of a database file: name -> (metric, dimensions), as vss reports them
    (duckdb_indexes().sql drops the WITH options)."""
    conn = connect(database, read_only=True)
    try:
        return {name: (metric, dims) for name, metric, dims in conn.execute(
            "select index_name, metric, dimensions from pragma_hnsw_index_info() "
            "where catalog_name = current_database()").fetchall()}
    finally:
        conn.close()


def test_the_hnsw_statement_dbt_runs_is_the_one_python_renders(tmp_path) -> None:
    """create_vector_index asks ragmart_hnsw_index_sql for its statement; the function answers
    what purge executes, and the index it creates has the metric retrieval ranks by."""
    conn = connect(tmp_path / "x.duckdb")
    try:
        vector_index.register(conn)
        statement = conn.execute(
            "select ragmart_hnsw_index_sql('t_hnsw', '\"ragmart\".\"main\".\"t\"')").fetchone()[0]
        assert statement == vector_index.create_index_sql("t_hnsw", '"ragmart"."main"."t"')
        conn.execute("create table t (chunk_id varchar, embedding float[3])")
        conn.execute("insert into t values ('a', [1, 0, 0]), ('b', [0, 1, 0])")
        conn.execute(statement)
        conn.execute("checkpoint")
    finally:
        conn.close()
    assert hnsw_indexes(tmp_path / "x.duckdb") == {"t_hnsw": ("cosine", 3)}


def test_lookup_indexes_are_unique_idempotent_and_only_for_the_version(tmp_path) -> None:
    conn = connect(tmp_path / "snapshot.duckdb")
    try:
        for table in ("fct_chunk_embeddings_v1", "fct_chunk_history_v1", "fct_chunk_embeddings_v2"):
            conn.execute(f"create table {table} as select 'c' || range as chunk_id from range(3)")
        assert add_lookup_indexes(conn, "v1") == [
            "fct_chunk_embeddings_v1_chunk_id", "fct_chunk_history_v1_chunk_id"]
        assert add_lookup_indexes(conn, "v1") == []
        # v2 has no history table yet: only its serving set is indexed
        assert add_lookup_indexes(conn, "v2") == ["fct_chunk_embeddings_v2_chunk_id"]
        with pytest.raises(duckdb.ConstraintException):
            conn.execute("insert into fct_chunk_embeddings_v1 values ('c1')")
        with pytest.raises(InvalidVersionError):
            add_lookup_indexes(conn, "v1; drop table x")
    finally:
        conn.close()


def test_purge_measures_the_baseline_again_so_an_honest_publish_passes(
    tmp_path, built_samples,
) -> None:
    victim = "hr-paid-time-off"  # relevant to several judged questions, found for three
    project = built_samples.copy(tmp_path)
    project.ragmart("publish", "v1")
    before = serving_json(project)

    project.ragmart("purge", "--document-id", victim)
    after = serving_json(project)
    # the purge serves a purged copy of the snapshot (never edits it under readers), measured
    assert after["action"] == "refresh" and after["version"] == before["version"]
    assert after["snapshot"] != before["snapshot"] and "purged" in after["snapshot"]
    assert not (project.workdir / "published" / before["snapshot"]).exists()
    # the purge lowered what serves by more than the gate tolerates: a stale baseline would
    # refuse every honest publish from now on
    assert before["metrics"]["recall@5"] - after["metrics"]["recall@5"] > 0.02
    snapshot = project.workdir / "published" / after["snapshot"]
    measured = json.loads(project.ragmart("eval", "--db", str(snapshot), "--version", "v1",
                                          "--out", str(tmp_path / "eval"), "--json").stdout)
    assert after["metrics"] == pytest.approx(measured["reports"][0]["metrics"])
    assert dbt_baseline(project) == pytest.approx(after["metrics"])
    assert json.loads(project.ragmart("versions", "--json").stdout)[0]["metrics"] \
        == after["metrics"]

    # the build after the purge passes the dbt gate, and publishing it passes publish's gate
    project.build("--vars", "{evaluate_retrieval: true}")
    republished = project.ragmart("publish", "v1", check=False)
    assert republished.returncode == Exit.OK, republished.stderr
    assert serving_json(project)["snapshot"] not in (before["snapshot"], after["snapshot"])
    assert not serving_json(project)["forced"]
