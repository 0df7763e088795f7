"""Freshness end to end: the watch loop publishes, readers are told when what serves is behind
the newest build, and the serving lag is measured (ragmart.serving.lag)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

from cdc_files import debezium_jsonl, dms_csv, document
from dbt_harness import ROOT, Project

from ragmart.duck import connect
from ragmart.exit_codes import Exit


def serving_json(project: Project) -> dict:
    return json.loads((project.workdir / "published" / "serving.json").read_text())


def land_note(project: Project, n: int, sentence: str) -> None:
    """A new document whose one paragraph is `sentence` (a one-paragraph change)."""
    content = document(f"Freshness note {n}", {"Note": [sentence]})
    project.land(f"dms/20{n:02d}_note.csv", dms_csv([{
        "op": "I", "seq": 1, "document_id": f"freshness-note-{n}", "title": f"Note {n}",
        "content": content}]))


def found(project: Project, sentence: str) -> dict:
    """`ragmart retrieve --json` for the sentence; the payload, with found = a result holds it."""
    proc = project.ragmart("retrieve", sentence, "--all-groups", "-k", "3", "--json",
                           check=False)
    assert proc.returncode in (Exit.OK, Exit.ABSTAINED), proc.stderr
    payload = json.loads(proc.stdout)
    payload["found"] = any(sentence in r["chunk_text"] for r in payload["results"])
    return payload


class Lines:
    """A subprocess's stdout, line by line, with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.queue.put(line)

    def wait_for(self, needle: str, timeout: float = 180) -> str:
        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line with {needle!r}; seen:\n{''.join(self.seen)}") from None
            self.seen.append(line)
            if needle in line:
                return line


def test_watch_publish_serves_every_green_build_and_survives_a_refusal(tmp_path) -> None:
    project = Project(tmp_path)
    project.land_sample()
    loop = subprocess.Popen(
        [sys.executable, "-m", "ragmart.cli.main", "build", "--watch", "--publish",
         "--max-builds", "4", "--interval", "0.5", "--", "--quiet"],
        cwd=ROOT, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = Lines(loop)
    try:
        first = lines.wait_for("ragmart build #1")
        assert "OK" in first and "published v1" in first, first
        published = serving_json(project)
        assert published["built_at"] and published["ingested_through"]

        sentence = "The quokka stipend covers one marmalade workshop per quarter."
        land_note(project, 1, sentence)
        second = lines.wait_for("ragmart build #2")
        assert "published v1" in second, second
        answer = found(project, sentence)
        assert answer["found"] and answer["serving_behind_build"] is False, answer
        assert serving_json(project)["snapshot"] != published["snapshot"]

        # the gate refuses the next candidate (the baseline claims perfect metrics): the
        # previous snapshot keeps serving, the loop says so and goes on
        honest = serving_json(project)
        pointer = project.workdir / "published" / "serving.json"
        inflated = {k: 1.0 for k in honest["report"]["metrics"]}
        pointer.write_text(json.dumps(
            {**honest, "report": {**honest["report"], "metrics": inflated}}))
        refused_sentence = "Walrus mileage claims are settled by the harbour committee."
        land_note(project, 2, refused_sentence)
        third = lines.wait_for("ragmart build #3")
        assert "OK" in third and "REFUSED" in third and "recall@5" in third, third
        assert serving_json(project)["snapshot"] == honest["snapshot"]
        answer = found(project, refused_sentence)
        assert not answer["found"]
        # readers are told the snapshot is behind the build, with both times
        assert answer["serving_behind_build"] is True, answer
        assert answer["serving"]["build_built_at"] > answer["serving"]["serving_built_at"]
        human = project.ragmart("retrieve", refused_sentence, "--all-groups", check=False)
        assert "older than the newest build" in human.stderr, human.stderr
        report = json.loads(project.ragmart("freshness", "--json").stdout)["serving"]
        assert report["auto_publish"]["outcome"] == "refused"
        assert report["serving_behind_build"] is True
        assert "REFUSED" in project.ragmart("freshness").stdout

        # the next build publishes again, and the refused change becomes visible with it
        pointer.write_text(json.dumps(honest))
        land_note(project, 3, "Heron parking permits renew every spring.")
        fourth = lines.wait_for("ragmart build #4")
        assert "published v1" in fourth, fourth
        assert loop.wait(timeout=60) == Exit.OK
    finally:
        if loop.poll() is None:
            loop.kill()
    answer = found(project, refused_sentence)
    assert answer["found"] and answer["serving_behind_build"] is False
    report = json.loads(project.ragmart("freshness", "--json").stdout)["serving"]
    assert report["auto_publish"]["outcome"] == "published"
    lag = {layout["layout"]: layout for layout in report["serving_lag"]["layouts"]}
    assert set(lag) == {"dms", "debezium"}
    assert lag["dms"]["pending"] == 0 and lag["dms"]["current_lag_seconds"] == 0
    # the refused note waited for a later publish: its lag is the longest of the recent ones
    assert lag["dms"]["lag_seconds"]["max"] > lag["dms"]["lag_seconds"]["p50"] > 0


def test_a_long_lived_retriever_follows_a_publish_without_a_failed_query(tmp_path,
                                                                          monkeypatch) -> None:
    import time

    import duckdb
    import pytest

    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    project = Project(tmp_path)
    project.land_sample()
    project.build()
    project.ragmart("publish", "v1")
    for key, value in project.env().items():
        monkeypatch.setenv(key, value)
    sentence = "Otter canteen vouchers expire after ninety days."
    with Retriever(recheck_seconds=1.0) as reader:
        first_path, first_conn = reader.path, reader.conn
        assert reader.retrieve(sentence, k=3, groups=ALL_GROUPS)  # answers from snapshot 1
        land_note(project, 4, sentence)
        project.build()
        project.ragmart("publish", "v1")
        second = project.workdir / "published" / serving_json(project)["snapshot"]
        # queries go on meanwhile; within the interval the new text answers, none fails
        deadline, texts = time.monotonic() + 1.5, []
        while time.monotonic() < deadline:
            texts = [r.chunk_text for r in reader.retrieve(sentence, k=3, groups=ALL_GROUPS)]
            time.sleep(0.1)
        assert any(sentence in text for text in texts)
        assert reader.path == second != first_path
        # the old connection was closed once the new one had taken over
        with pytest.raises(duckdb.ConnectionException):
            first_conn.execute("select 1")

        # a pointer naming a snapshot that cannot be opened: the open one keeps answering
        pointer = project.workdir / "published" / "serving.json"
        pointer.write_text(json.dumps({**serving_json(project), "snapshot": "v1-gone.duckdb"}))
        time.sleep(1.1)
        assert any(sentence in r.chunk_text
                   for r in reader.retrieve(sentence, k=3, groups=ALL_GROUPS))
        assert reader.path == second


def test_freshness_measures_the_serving_lag_per_layout_and_an_sla_fails_it(tmp_path) -> None:
    import os
    import time

    project = Project(tmp_path)
    project.land_sample()
    project.build()
    # nothing published: readers read the build database, where every built change is visible
    unpublished = project.ragmart("freshness", "--serving-sla-seconds", "60", "--json")
    assert all(lay["pending"] == 0 for lay in json.loads(unpublished.stdout)["serving"]
               ["serving_lag"]["layouts"])
    project.ragmart("publish", "v1")
    assert_slim_snapshot(project)
    fresh = project.ragmart("freshness", "--serving-sla-seconds", "600", "--json")
    lag = {lay["layout"]: lay for lay in json.loads(fresh.stdout)["serving"]["serving_lag"]
           ["layouts"]}
    assert lag["dms"]["pending"] == lag["debezium"]["pending"] == 0
    assert lag["dms"]["newest_visible_landed_at"] == lag["dms"]["newest_landed_at"]
    debezium_changes = lag["debezium"]["changes"]

    # a debezium batch landed two minutes ago, not built: the debezium lag, not the dms one
    late = project.land("debezium/3000_late.jsonl", debezium_jsonl([{
        "op": "c", "seq": 1, "document_id": "late-note", "content": "# Late\n\nA late note."}]))
    # an empty file carries no change: nothing to wait for
    project.land("dms/3001_empty.csv", "")
    two_minutes_ago = time.time() - 120
    os.utime(late, (two_minutes_ago, two_minutes_ago))
    over = project.ragmart("freshness", "--serving-sla-seconds", "60", "--json", check=False)
    assert over.returncode == Exit.CHECK_FAILED, over.stderr
    report = json.loads(over.stdout)["serving"]["serving_lag"]
    lag = {lay["layout"]: lay for lay in report["layouts"]}
    assert report["over_sla"] and lag["debezium"]["pending"] == 1
    assert 115 < lag["debezium"]["current_lag_seconds"] < 180
    assert lag["dms"]["pending"] == 0 and lag["dms"]["current_lag_seconds"] == 0
    assert lag["debezium"]["changes"] == debezium_changes + 1
    # the same SLA from the environment; a looser one passes
    env_sla = Project(tmp_path, extra_env={"RAGMART_SERVING_SLA_SECONDS": "60"})
    assert env_sla.ragmart("freshness", check=False).returncode == Exit.CHECK_FAILED
    assert project.ragmart("freshness", "--serving-sla-seconds", "600",
                           check=False).returncode == Exit.OK
    bad = Project(tmp_path, extra_env={"RAGMART_SERVING_SLA_SECONDS": "soon"})
    refused = bad.ragmart("freshness", check=False)
    assert refused.returncode == Exit.USAGE and "RAGMART_SERVING_SLA_SECONDS" in refused.stderr
    # built and published: visible, the alert clears; the slow change stays in the p95
    project.build()
    project.ragmart("publish", "v1")
    cleared = project.ragmart("freshness", "--serving-sla-seconds", "60", "--json", check=False)
    assert cleared.returncode == Exit.OK
    lag = {lay["layout"]: lay for lay in json.loads(cleared.stdout)["serving"]["serving_lag"]
           ["layouts"]}
    assert lag["debezium"]["pending"] == 0 and lag["debezium"]["lag_seconds"]["max"] > 115


def test_a_failed_publish_is_recorded_and_a_failed_build_is_not_published(tmp_path,
                                                                          monkeypatch) -> None:
    from ragmart.build.runner import BuildOutcome, then_publish
    from ragmart.serving.publish import auto_publish_status, publish_after_build

    monkeypatch.delenv("RAGMART_PUBLISH_DIR", raising=False)
    db = tmp_path / "never-built.duckdb"
    attempt = publish_after_build(db, "v1")
    assert attempt.outcome == "failed" and "does not exist" in attempt.message
    assert "FAILED, still serving the previous snapshot" in attempt.summary()
    assert auto_publish_status(db) == attempt
    assert not (tmp_path / "published" / "serving.json").exists()

    calls: list[str] = []
    outcomes = iter([BuildOutcome(False, 1.0, False, failures=["model.x: error"]),
                     BuildOutcome(True, 1.0, False)])
    run = then_publish(lambda: next(outcomes), lambda: calls.append("publish") or attempt)
    failed, green = run(), run()
    assert calls == ["publish"]  # once, after the green build only
    assert failed.published is None and green.published is attempt
    assert "publish v1 FAILED" in green.summary()

    from ragmart.cli.build import _build_exit

    assert _build_exit(green) == Exit.CHECK_FAILED
    green.published = type(attempt)("refused", "v1", attempt.attempted_at, "recall@5 fell")
    assert _build_exit(green) == Exit.GATE_REFUSED
    monkeypatch.setenv("RAGMART_BUILD_PUBLISH", "maybe")
    from ragmart.cli.main import main

    assert main(["build", "--max-builds", "1"]) == Exit.USAGE
    from ragmart.cli.build import _built_version

    assert _built_version(["--vars", "{index_version: v2, chunker_version: x}"]) == "v2"
    assert _built_version(["--vars={index_version: v3}"]) == "v3"
    assert _built_version(["--quiet"]) == "v1"


def assert_slim_snapshot(project: Project) -> None:
    """The published snapshot holds what serving v1 needs and nothing else, and serves."""
    from ragmart.duck import connect

    snapshot = project.workdir / "published" / serving_json(project)["snapshot"]
    conn = connect(snapshot, read_only=True)
    try:
        tables = {t for (t,) in conn.execute(
            "select table_name from duckdb_tables() where schema_name = 'main'").fetchall()}
        # the full-text index of the serving set (hybrid search), built on the snapshot
        fts = {t for (t,) in conn.execute(
            "select table_name from duckdb_tables() "
            "where schema_name = 'fts_main_fct_chunk_embeddings_v1'").fetchall()}
        macro = conn.execute(
            "select count(*) from ragmart_retrieve_v1((select embedding from "
            "fct_chunk_embeddings_v1 limit 1), 3, all_groups := true)").fetchone()[0]
        bound = conn.execute("select index_version from index_versions").fetchall()
    finally:
        conn.close()
    assert tables == {"fct_chunk_embeddings_v1", "fct_chunk_vector_delta_v1",
                      "fct_chunk_history_v1", "dim_documents", "dim_document_access",
                      "index_versions", "published_snapshot_marks"}
    assert {"docs", "terms", "dict"} <= fts
    assert macro == 3 and bound == [("v1",)]
    assert snapshot.stat().st_size < project.db_path.stat().st_size * 0.6
    as_of = project.ragmart("retrieve", "refund", "--all-groups", "--as-of", "2026-11-02T10:00",
                            "--json")
    assert json.loads(as_of.stdout)["results"]


def _sla_failures(project: Project, sla_minutes: float) -> dict[tuple[str, int], int]:
    """What the dbt test assert_embedding_lag_within_sla finds over `sla_minutes`:
    (document_id, document_version) -> the lag it judged."""
    project.dbt("test", "--select", "assert_embedding_lag_within_sla", "--store-failures",
                "--vars", f"{{embedding_lag_sla_minutes: {sla_minutes}}}")
    rows = project.query("select document_id, document_version, lag_seconds "
                         "from main_dbt_test__audit.assert_embedding_lag_within_sla")
    return {(doc, version): lag for doc, version, lag in rows}


def test_dbt_and_ragmart_freshness_judge_the_embedding_lag_sla_alike(tmp_path) -> None:
    """One rule (ragmart.quality.embedding_lag), two readers: the dbt test and `ragmart
    freshness` find the same versions over the SLA with the same lag, for a fully served
    version (its lag to the vectors), one not fully served (the time since its commit) and a
    superseded version whose rows came back (served, not live: never judged)."""
    from ragmart.quality.freshness import freshness

    project = Project(tmp_path)

    def policy(name: str, word: str = "rule") -> str:
        return document(f"{name} policy", {"Policy": [
            f"The {name} {word} {i} applies to every {name} request filed." for i in range(3)]})

    project.land("dms/0001_load.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": "pending", "content": policy("pending")},
        {"op": "I", "seq": 2, "document_id": "served", "content": policy("served")},
        {"op": "I", "seq": 3, "document_id": "revised", "content": policy("revised")},
        {"op": "U", "seq": 4, "document_id": "revised", "content": policy("revised", "norm")}]))
    project.build()
    conn = connect(project.db_path)
    try:
        # one chunk of `pending` is not served: it is judged by the time since its commit
        conn.execute("delete from fct_chunk_embeddings_v1 where document_id = 'pending' "
                     "and chunk_index = 0")
        # the superseded version of `revised` is served again: an orphan, not judged
        conn.execute(
            "insert into fct_chunk_embeddings_v1 by name "
            "select * exclude (metadata, document_valid_to, superseded_by_version) "
            "from fct_chunk_history_v1 where document_id = 'revised' and document_version = 3")
        conn.execute("checkpoint")
    finally:
        conn.close()
    project.dbt("run", "--select", "int_document_versions_served")
    assert project.query(
        "select is_live, lag_seconds is not null from int_document_versions_served_v1 "
        "where document_id = 'revised' and document_version = 3") == [(False, True)]
    ((served_lag,),) = project.query(
        "select lag_seconds from int_document_versions_served_v1 where document_id = 'served'")

    def judged_by_freshness(sla_minutes: float) -> dict[tuple[str, int], int]:
        report = freshness(project.db_path, sla_minutes=sla_minutes)
        assert report.over_sla_count == len(report.over_sla)
        return {(r["document_id"], r["document_version"]): r["lag_seconds"]
                for r in report.over_sla}

    # every judged version is over a one-minute SLA (the test files were committed in the past)
    by_dbt, by_freshness = _sla_failures(project, 1), judged_by_freshness(1)
    assert set(by_dbt) == set(by_freshness) == {("served", 2), ("pending", 1), ("revised", 4)}
    assert by_dbt[("served", 2)] == by_freshness[("served", 2)] == served_lag
    # the pending version's lag grows with the clock: the two checks ran seconds apart
    assert 0 <= by_freshness[("pending", 1)] - by_dbt[("pending", 1)] < 600
    # an SLA just over the served version's lag: only the pending one, committed a minute
    # earlier and judged by the time since
    sla = (served_lag + 30) / 60
    assert set(_sla_failures(project, sla)) == set(judged_by_freshness(sla)) == {
        ("pending", 1)}


def test_a_publish_after_a_change_reevaluates_and_reloads_only_what_changed(tmp_path,
                                                                             monkeypatch) -> None:
    """The watch loop's publishes (one process) evaluate only the documents changed since the
    last one, with the report of a full evaluation, and a following Retriever reads only the
    new chunks' vectors, holding what a fresh reader of the snapshot holds."""
    import numpy as np

    from ragmart.retrieval.api import ALL_GROUPS, Retriever
    from ragmart.serving import evaluation
    from ragmart.serving.baseline import evaluate_snapshot as full_evaluation
    from ragmart.serving.publish import publish

    project = Project(tmp_path)
    project.land_sample()
    land_note(project, 6, "Badger bicycle loans are approved by the facilities desk.")
    project.build()
    for key, value in project.env().items():
        monkeypatch.setenv(key, value)
    published = project.workdir / "published"
    first = publish(project.db_path, "v1")
    documents = project.query("select count(distinct document_id) from "
                              "fct_chunk_embeddings_v1")[0][0]
    assert evaluation.last_recomputed(published / first.snapshot, "v1") == documents
    assert first.report == full_evaluation(published / first.snapshot, "v1")

    sentence = "Otter ferry passes are refunded within a fortnight."
    with Retriever(recheck_seconds=0) as reader:
        assert reader.retrieve(sentence, k=3, groups=ALL_GROUPS)
        before = reader.vectors.rows
        gone = project.query("select count(*) from fct_chunk_embeddings_v1 "
                             "where document_id = 'freshness-note-6'")[0][0]
        assert gone > 0
        # one new document, one deleted: two documents changed, the others did not
        land_note(project, 7, sentence)
        project.land("dms/2099_delete.csv", dms_csv([
            {"op": "D", "seq": 99, "document_id": "freshness-note-6"}]))
        project.build()
        second = publish(project.db_path, "v1")
        snapshot = published / second.snapshot
        assert evaluation.last_recomputed(snapshot, "v1") == 1  # the new note; the deleted
        assert second.report == full_evaluation(snapshot, "v1")  # one is dropped

        assert any(sentence in r.chunk_text
                   for r in reader.retrieve(sentence, k=3, groups=ALL_GROUPS))
        assert reader.path == snapshot
        assert reader.vectors.reused_rows == before - gone
        with Retriever(db_path=snapshot) as fresh:
            assert list(fresh.vectors.chunk_ids) == list(reader.vectors.chunk_ids)
            assert np.array_equal(fresh.vectors.matrix, reader.vectors.matrix)
            for question in (sentence, "How many vacation days carry over?"):
                ours = reader.retrieve(question, k=5, groups=ALL_GROUPS)
                theirs = fresh.retrieve(question, k=5, groups=ALL_GROUPS)
                assert [(c.chunk_id, c.distance) for c in ours] == \
                    [(c.chunk_id, c.distance) for c in theirs]


def test_ctrl_c_stops_the_watch_loop_even_in_the_middle_of_a_build(tmp_path) -> None:
    """dbt returns a SIGINT that lands during a build as a failed build; the loop must stop,
    not retry it (at 100k chunks a build and its publish fill most of the loop's time)."""
    import signal
    import time

    project = Project(tmp_path)
    project.land_sample()
    loop = subprocess.Popen(
        [sys.executable, "-m", "ragmart.cli.main", "build", "--watch", "--publish",
         "--interval", "0.5", "--", "--quiet"],
        cwd=ROOT, env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = Lines(loop)
    try:
        lines.wait_for("watching")
        # the first build of the sample runs every model: interrupt it once dbt is running
        log = project.workdir / "logs" / "dbt.log"
        deadline = time.monotonic() + 120
        while "Began running node" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and loop.poll() is None, lines.seen
            time.sleep(0.05)
        loop.send_signal(signal.SIGINT)
        assert loop.wait(timeout=90) == Exit.OK
        time.sleep(0.5)
        while not lines.queue.empty():
            lines.seen.append(lines.queue.get())
        assert not any("ragmart build #2" in line for line in lines.seen), lines.seen
    finally:
        if loop.poll() is None:
            loop.kill()
