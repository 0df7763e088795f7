"""End-to-end: real `dbt build` runs on scratch databases (hash provider, no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cdc_files import debezium_jsonl, dms_csv, document, paragraph
from dbt_harness import Project

SERVING = "fct_chunk_embeddings_v1"


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def policy(name: str, n_paragraphs: int = 4, *, edit: int | None = None) -> str:
    paragraphs = [paragraph(name, i) for i in range(n_paragraphs)]
    if edit is not None:
        paragraphs[edit] = paragraphs[edit].replace("rule", "revised rule")
    return document(
        f"{name.title()} Policy",
        {
            "Scope": [paragraph(name + " scope", 99)],
            "Policy": paragraphs,
            "Exceptions": [paragraph(name + " exceptions", 98)],
        },
    )


def live_documents(project: Project) -> dict[str, tuple[int, str]]:
    rows = project.query("select document_id, document_version, title from dim_documents")
    return {d: (v, t) for d, v, t in rows}


def served_documents(project: Project) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for doc, version in project.query(f"select document_id, document_version from {SERVING}"):
        out.setdefault(doc, set()).add(version)
    return out


def test_cdc_both_layouts_ordering_deletes_and_replays(project: Project) -> None:
    project.land("dms/0001_load.csv", dms_csv([
        {"op": "I", "seq": 10, "document_id": "alpha", "content": policy("alpha")},
        {"op": "I", "seq": 20, "document_id": "bravo", "content": policy("bravo")},
        {"op": "I", "seq": 30, "document_id": "charlie", "content": policy("charlie")},
    ]))
    project.land("debezium/0002_changes.jsonl", debezium_jsonl([
        {"op": "c", "seq": 40, "document_id": "delta", "content": policy("delta")},
        {"op": "u", "seq": 50, "document_id": "alpha", "content": policy("alpha", edit=1),
         "title": "Alpha Policy (revised)"},
    ]))
    proc = project.build()
    # retrieval evaluation is opt-in (evaluate_retrieval): an ordinary build does not pay for it
    assert "fct_retrieval_eval" not in proc.stdout
    assert "assert_candidate_does_not_regress" not in proc.stdout
    assert project.query("select count(*) from information_schema.tables "
                         "where table_name = 'fct_retrieval_eval'") == [(0,)]
    docs = live_documents(project)
    assert set(docs) == {"alpha", "bravo", "charlie", "delta"}
    assert docs["alpha"] == (50, "Alpha Policy (revised)")
    assert served_documents(project) == {"alpha": {50}, "bravo": {20}, "charlie": {30},
                                         "delta": {40}}

    # Deletes in both layouts, plus a late file (sorts last) carrying an older edit of alpha.
    project.land("dms/0003_delete.csv", dms_csv([{"op": "D", "seq": 60, "document_id": "bravo"}]))
    project.land("debezium/0004_delete.jsonl", debezium_jsonl([
        {"op": "d", "seq": 70, "document_id": "charlie", "content": policy("charlie")},
    ]))
    project.land("dms/0099_late.csv", dms_csv([
        {"op": "U", "seq": 45, "document_id": "alpha", "content": policy("alpha", edit=2),
         "title": "Alpha Policy (stale)"},
    ]))
    project.build()
    assert live_documents(project) == {"alpha": (50, "Alpha Policy (revised)"),
                                       "delta": (40, "delta")}
    assert served_documents(project) == {"alpha": {50}, "delta": {40}}
    # the stale event is history, not the live version
    history = project.query(
        "select document_version, is_current from int_document_versions "
        "where document_id = 'alpha' order by document_version"
    )
    assert history == [(10, False), (45, False), (50, True)]

    # A duplicate replay in the same and in the other layout changes nothing, embeds nothing.
    before = project.query(f"select chunk_id, chunk_hash from {SERVING} order by chunk_id")
    replay = (project.landing / "debezium/0002_changes.jsonl").read_bytes()
    project.land("debezium/0005_replay.jsonl", replay)
    project.land("dms/0006_replay.csv", dms_csv([
        {"op": "I", "seq": 40, "document_id": "delta", "content": policy("delta")},
        {"op": "U", "seq": 50, "document_id": "alpha", "content": policy("alpha", edit=1),
         "title": "Alpha Policy (revised)"},
    ]))
    project.build()
    assert project.query(f"select chunk_id, chunk_hash from {SERVING} order by chunk_id") == before
    assert project.last_run()["texts_sent"] == 0

    # Re-insert of a deleted id comes back, without re-embedding its unchanged text.
    project.land("debezium/0007_reinsert.jsonl", debezium_jsonl([
        {"op": "c", "seq": 80, "document_id": "bravo", "content": policy("bravo")},
    ]))
    project.build()
    assert served_documents(project)["bravo"] == {80}
    assert project.last_run()["texts_sent"] == 0
    assert project.query("select count(*) from fct_quarantined_events") == [(0,)]


def test_incremental_embedding_sends_only_new_texts(project: Project) -> None:
    long_policy = policy("handbook", n_paragraphs=30)
    project.land("dms/0001_load.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": "handbook", "content": long_policy},
        {"op": "I", "seq": 2, "document_id": "travel", "content": policy("travel")},
    ]))
    project.build()
    first = project.last_run()
    n_chunks = project.query(f"select count(*), count(distinct chunk_hash) from {SERVING}")[0]
    assert first["texts_sent"] == n_chunks[1] > 30
    assert first["provider_calls"] >= 1

    project.build()  # nothing changed
    second = project.last_run()
    assert (second["texts_sent"], second["provider_calls"]) == (0, 0)

    # One paragraph edited in a long document: at most 2 new texts.
    project.land("debezium/0002_edit.jsonl", debezium_jsonl([
        {"op": "u", "seq": 3, "document_id": "handbook",
         "content": policy("handbook", n_paragraphs=30, edit=17)},
    ]))
    project.build()
    edit = project.last_run()
    assert 1 <= edit["texts_sent"] <= 2
    assert edit["cache_hits"] >= 30

    # The same text under another id, and a revert to the original: nothing to embed.
    project.land("dms/0003_copy_and_revert.csv", dms_csv([
        {"op": "I", "seq": 4, "document_id": "travel-copy", "title": "travel",
         "content": policy("travel")},
        {"op": "U", "seq": 5, "document_id": "handbook", "content": long_policy},
    ]))
    project.build()
    assert project.last_run()["texts_sent"] == 0
    assert project.query(
        "select count(*) from int_chunk_embeddings group by chunk_hash, embedding_model "
        "having count(*) > 1"
    ) == []


def test_hnsw_returns_k_rows_after_deletes_and_reopen(project: Project) -> None:
    rows = [{"op": "I", "seq": i + 1, "document_id": f"doc-{i:03d}", "content": policy(f"doc{i}")}
            for i in range(60)]
    project.land("dms/0001_load.csv", dms_csv(rows))
    project.build()
    deletes = [{"op": "D", "seq": 100 + i, "document_id": f"doc-{i:03d}"} for i in range(0, 60, 3)]
    edits = [{"op": "U", "seq": 200 + i, "document_id": f"doc-{i:03d}",
              "content": policy(f"doc{i}", edit=0)} for i in range(1, 60, 3)]
    project.land("dms/0002_churn.csv", dms_csv(deletes + edits))
    project.build()
    deleted = {r["document_id"] for r in deletes}

    from ragmart.duck import connect
    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    for _ in range(2):  # reopen the file each round
        conn = connect(project.db_path, read_only=True)
        reader = Retriever(db_path=project.db_path, vectors_in_memory=False)
        try:
            plan = conn.execute(
                "explain select chunk_id from fct_chunk_vector_index_v1 "
                "order by array_cosine_distance(embedding, $q::float[384]) limit 10",
                {"q": [0.0] * 383 + [1.0]},
            ).fetchall()
            assert "HNSW" in str(plan), "the vector index must be HNSW-indexed"
            rng = np.random.default_rng(7)
            for _ in range(25):
                q = rng.normal(size=384).astype(np.float32)
                for k in (1, 5, 10, 50):
                    hits = reader.search(q, k=k, groups=ALL_GROUPS)
                    assert len(hits) == k
                    assert not deleted & {h.document_id for h in hits}
                # the HNSW path agrees with an exact scan on the top 10
                exact = conn.execute(
                    f"select chunk_id from {SERVING} order by "
                    "array_cosine_distance(embedding, $q::float[384]), chunk_id limit 10",
                    {"q": q.tolist()},
                ).fetchall()
                approx = [h.chunk_id for h in reader.search(q, k=10, groups=ALL_GROUPS)]
                assert len(set(approx) & {c for (c,) in exact}) >= 9
        finally:
            reader.close()
            conn.close()

    # covers_serving_set fails on an uncovered chunk, a stray delta row and a wrong vector
    passed = project.dbt("test", "--select", "test_name:covers_serving_set")
    # (not PASS=1: project hooks, such as on-run-start validate_settings, count as passes)
    assert "PASS covers_serving_set" in passed.stdout and "ERROR=0" in passed.stdout
    conn = connect(project.db_path)
    try:
        served = [c for (c,) in conn.execute(
            f"select chunk_id from {SERVING} order by chunk_id limit 2").fetchall()]
        conn.execute("drop index fct_chunk_vector_index_v1_hnsw")
        conn.execute("delete from fct_chunk_vector_index_v1 where chunk_id in ($a, $b)",
                     {"a": served[0], "b": served[1]})
        conn.execute("delete from fct_chunk_vector_delta_v1 where chunk_id in ($a, $b)",
                     {"a": served[0], "b": served[1]})
        conn.execute(
            "insert into fct_chunk_vector_delta_v1 select chunk_id || $suffix, embedding "
            f"from {SERVING} where chunk_id = $a "
            "union all select chunk_id, list_transform(embedding, x -> x + 1)::float[384] "
            f"from {SERVING} where chunk_id = $b",
            {"a": served[0], "b": served[1], "suffix": "-stray"})
    finally:
        conn.close()
    failed = project.dbt("test", "--select", "test_name:covers_serving_set", check=False)
    assert failed.returncode != 0
    # served[0] not searchable, its stray copy, and served[1]'s vector differs
    assert "Got 3 results" in failed.stdout, failed.stdout[-2000:]


def test_retrieval_is_deterministic_across_processes(project: Project) -> None:
    same = policy("shared")
    project.land("dms/0001_load.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": "twin-b", "title": "Twin", "content": same},
        {"op": "I", "seq": 2, "document_id": "twin-a", "title": "Twin", "content": same},
        {"op": "I", "seq": 3, "document_id": "other", "content": policy("other")},
    ]))
    project.build()
    args = ["retrieve", "shared rule 2 employees approval", "-k", "6", "--mode", "vector",
            "--all-groups", "--json"]
    first = json.loads(project.ragmart(*args).stdout)
    second = json.loads(project.ragmart(*args).stdout)
    assert first == second
    results = first["results"]
    assert len(results) == 6
    keys = [(r["distance"], r["chunk_id"]) for r in results]
    assert keys == sorted(keys)
    # identical texts tie on distance and break on chunk_id
    assert results[0]["distance"] == results[1]["distance"]
    assert results[0]["chunk_id"] < results[1]["chunk_id"]
    for field in ("document_id", "document_version", "chunk_id", "section", "chunk_text",
                  "distance", "embedding_model", "chunker_version", "dbt_invocation_id",
                  "created_at", "document_checksum"):
        assert field in results[0]
    filtered = project.ragmart(*args[:-1], "--doc-type", "nope", "--json", check=False)
    assert filtered.returncode == 3  # nothing eligible: abstained
    assert json.loads(filtered.stdout)["results"] == []


def test_a_file_read_while_still_being_written_counts_once_complete(project: Project) -> None:
    rows = [{"op": "c", "seq": 1, "document_id": "alpha", "content": policy("alpha")},
            {"op": "c", "seq": 2, "document_id": "bravo", "content": policy("bravo")}]
    complete = debezium_jsonl(rows)
    # the producer has written the first line and part of the second
    partial = complete[: complete.index("\n") + 1 + 40]
    path = project.land("debezium/0001_snapshot.jsonl", partial)
    project.build()
    assert set(live_documents(project)) == {"alpha"}
    assert project.query("select quarantine_code, source_line from fct_quarantined_events") == [
        ("invalid_json", 2)]

    # it finishes the file: the complete content is read, and only it counts
    path.write_text(complete)
    project.build()
    assert set(live_documents(project)) == {"alpha", "bravo"}
    assert project.query("select count(*) from fct_quarantined_events") == [(0,)]
    assert project.query("select count(*) from stg_cdc__document_events") == [(2,)]
    # the earlier reading stays in staging, for audit
    assert project.query(
        "select count(distinct file_sha256) from stg_landing__document_events") == [(2,)]
