"""The publish gate's incremental state survives the process (ragmart.serving.gate_state): a
cold `ragmart publish` evaluates only the documents changed since the last publish, with a
full evaluation's report, and anything the state depends on starts it over."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from dbt_harness import ROOT, Project, copy_project
from test_serving_freshness import land_note

from ragmart.exit_codes import Exit

EVALUATED = re.compile(r"gate: evaluated (\d+) of (\d+) documents, reused (\d+)( \(from the "
                       r"saved gate state\))?")


def publish(project: Project, *args: str, cwd: Path = ROOT) -> tuple[int, dict | None, tuple]:
    """`ragmart publish v1` in a new process run from `cwd` (a project dir: its judged set);
    (exit code, the publication, (evaluated, of, reused, from the file))."""
    env = {**project.env(), "DBT_PROJECT_DIR": str(cwd),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "ragmart.cli.main", "publish", "v1", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)
    match = EVALUATED.search(proc.stderr)
    gate = (int(match[1]), int(match[2]), int(match[3]), bool(match[4])) if match else ()
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else None, gate


def test_a_cold_publish_reuses_the_saved_gate_state_unless_what_it_depends_on_changed(
        tmp_path, monkeypatch) -> None:
    from ragmart.serving.baseline import evaluate_snapshot as full_evaluation

    project = Project(tmp_path / "deployment")
    project.workdir.mkdir()
    project.land_sample()
    project.build()
    published = project.workdir / "published"
    for key, value in project.env().items():
        monkeypatch.setenv(key, value)
    documents = project.query("select count(distinct document_id) from "
                              "fct_chunk_embeddings_v1")[0][0]

    code, first, gate = publish(project)
    assert code == Exit.OK and gate == (documents, documents, 0, False)
    state = published / "gate-state-v1.parquet"
    assert state.exists()
    # it names no document: a purge has nothing to remove from it
    assert b"hr-paid-time-off" not in state.read_bytes()

    # a second process: one new document evaluated, the others' distances read from the file
    land_note(project, 8, "Heron kayak rentals are reimbursed up to forty dollars.")
    project.build()
    code, second, gate = publish(project)
    assert code == Exit.OK and gate == (1, documents + 1, documents, True)
    assert second["report"] == full_evaluation(published / second["snapshot"], "v1")

    # another judged set (a query renamed: the same metrics) starts over, and so does a state
    # file that cannot be read
    project_dir = copy_project(tmp_path / "project")
    judged = project_dir / "seeds" / "judged_queries.csv"
    judged.write_text(judged.read_text().replace("\nqa01,", "\nqa01-renamed,"))
    code, third, gate = publish(project, cwd=project_dir)
    assert code == Exit.OK and gate == (documents + 1, documents + 1, 0, False)
    assert third["metrics"] == second["metrics"]
    state.write_bytes(b"not a parquet file")
    code, fourth, gate = publish(project)
    assert code == Exit.OK and gate == (documents + 1, documents + 1, 0, False)
    assert fourth["report"] == second["report"]

    # the state keeps distances, never a verdict: a publish reusing it is still judged against
    # the baseline serving now, and refused when it falls below it
    code, _, gate = publish(project)
    assert gate == (0, documents + 1, documents + 1, True)
    pointer = published / "serving.json"
    serving = json.loads(pointer.read_text())
    serving["report"]["metrics"] = {k: 1.0 for k in serving["report"]["metrics"]}
    pointer.write_text(json.dumps(serving))
    code, _, gate = publish(project)
    assert code == Exit.GATE_REFUSED and gate == ()
    assert json.loads(pointer.read_text())["snapshot"] == serving["snapshot"]


def test_a_signature_changes_with_any_row_of_its_document_only() -> None:
    """A document's signature follows each of its rows' chunk id, hash and vector time; the
    same change on every row of a document (a new vector time for all) counts too."""
    import duckdb

    from ragmart.serving.evaluation import document_signatures as signatures

    conn = duckdb.connect()
    conn.execute("create table served as select * from (values "
                 "('a', 'a@1#0', 'h0', timestamp '2026-01-01', 'faq'), "
                 "('a', 'a@1#1', 'h1', timestamp '2026-01-01', 'faq'), "
                 "('b', 'b@1#0', 'h2', timestamp '2026-01-01', 'policy')) "
                 "as t(document_id, chunk_id, chunk_hash, created_at, document_type)")
    before = dict((d, s) for d, s, _ in signatures(conn, "served"))
    for change in ("update served set created_at = created_at + interval 1 second "
                   "where document_id = 'a'",
                   "update served set chunk_hash = 'h9' where chunk_id = 'a@1#1'",
                   "delete from served where chunk_id = 'a@1#1'"):
        conn.execute("begin")
        conn.execute(change)
        after = dict((d, s) for d, s, _ in signatures(conn, "served"))
        conn.execute("rollback")
        assert after["a"] != before["a"] and after["b"] == before["b"], change
    assert [t for _, _, t in signatures(conn, "served")] == ["faq", "policy"]
