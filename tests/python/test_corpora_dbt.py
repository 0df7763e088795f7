"""Replays of whole corpora: the bundled sample and, when ../shared is present, a real one, each
from a local landing folder and from an S3 bucket."""

from __future__ import annotations

import json

import pytest
from dbt_harness import ROOT, SAMPLE_LANDING
from s3_landing import LANDING_KINDS, landing_project

BASECAMP = ROOT.parent / "shared" / "corpora" / "basecamp-policies"


@pytest.mark.parametrize("kind", LANDING_KINDS)
def test_sample_landing_ends_in_expected_state(tmp_path, kind, request) -> None:
    expected = json.loads((SAMPLE_LANDING / "EXPECTED.json").read_text())
    documents = expected["documents"]
    project = landing_project(kind, tmp_path, request)
    project.land_sample()
    project.build()
    live = {
        d: (t, c)
        for d, t, c in project.query(
            "select document_id, title, document_checksum from dim_documents"
        )
    }
    want = {d: (v["title"], v["content_sha256"]) for d, v in documents.items() if not v["deleted"]}
    assert live == want
    assert project.query("select count(*) from fct_quarantined_events") == [(0,)]
    served = {d for (d,) in project.query(
        "select distinct document_id from fct_chunk_embeddings_v1")}
    assert served == set(want)


@pytest.mark.skipif(not BASECAMP.is_dir(), reason=f"real corpus not present at {BASECAMP}")
@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_basecamp_policies_replay_ends_in_final_state(tmp_path, kind, request) -> None:
    final = json.loads((BASECAMP / "final_state.json").read_text())
    project = landing_project(kind, tmp_path, request)
    # DMS for the even batches, Debezium for the odd ones: both layouts, interleaved.
    for layout in ("dms", "debezium"):
        for i, src in enumerate(sorted((BASECAMP / layout).iterdir())):
            if (i % 2 == 0) == (layout == "dms"):
                project.land(f"{layout}/{src.name}", src.read_bytes())
    project.build()
    rows = project.query(
        "select document_id, document_type, title, content_length from dim_documents"
    )
    live = {d: {"document_type": t, "title": ti, "content_len": n} for d, t, ti, n in rows}
    assert set(live) == set(final)
    for doc_id, state in final.items():
        assert live[doc_id]["document_type"] == state["document_type"], doc_id
        assert live[doc_id]["title"] == state["title"], doc_id
        assert live[doc_id]["content_len"] == state["content_len"], doc_id
    assert project.query("select count(*) from fct_quarantined_events") == [(0,)]
    # real Markdown: no front matter, Liquid or HTML tags reach the chunks
    texts = [t for (t,) in project.query("select chunk_text from fct_chunk_embeddings_v1")]
    assert texts
    for text in texts:
        assert "{%" not in text and "layout: sheet" not in text and "<figure" not in text
