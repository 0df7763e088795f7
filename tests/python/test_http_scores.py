"""Every result carries the scores that ranked it: `distance` (cosine, every mode),
`lexical_score` (BM25, modes lexical and hybrid) and `fused_score` (reciprocal rank fusion,
hybrid), null where they do not apply, the same through `ragmart retrieve --json` and HTTP."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from test_http import QUESTION, bearer, cli, deployment, env, keys  # noqa: F401

from ragmart.http.app import create_app
from ragmart.retrieval.fusion import RRF_DEPTH, RRF_K

ACCESS = ["--groups", "all-staff"]


def answer(capsys, mode: str, k: int) -> list[dict]:
    code, out, err = cli(capsys, "retrieve", QUESTION, *ACCESS, "-k", str(k), "--mode", mode,
                         "--json")
    assert code == 0, err
    return json.loads(out)["results"]


def test_each_mode_carries_the_scores_that_ranked_it(keys, capsys) -> None:  # noqa: F811
    by_vector = answer(capsys, "vector", RRF_DEPTH)
    by_terms = answer(capsys, "lexical", RRF_DEPTH)
    hybrid = answer(capsys, "hybrid", 8)
    assert by_vector and by_terms and hybrid
    assert all(r["lexical_score"] is None and r["fused_score"] is None for r in by_vector)
    assert all(r["lexical_score"] > 0 and r["fused_score"] is None for r in by_terms)
    scores = [r["lexical_score"] for r in by_terms]
    assert scores == sorted(scores, reverse=True)
    # hybrid: the BM25 score of the lexical list and the fused score RRF gives
    vector_rank = {r["chunk_id"]: r["rank"] for r in by_vector}
    terms = {r["chunk_id"]: r for r in by_terms}
    for result in hybrid:
        chunk = result["chunk_id"]
        expected = sum(1.0 / (RRF_K + ranks[chunk]) for ranks in (
            vector_rank, {c: r["rank"] for c, r in terms.items()}) if chunk in ranks)
        assert result["fused_score"] == expected
        assert result["lexical_score"] == (terms[chunk]["lexical_score"] if chunk in terms
                                           else None)
    fused = [r["fused_score"] for r in hybrid]
    assert fused == sorted(fused, reverse=True)
    assert any(r["lexical_score"] is not None for r in hybrid)
    # the service answers the same fields
    with TestClient(create_app(keys_file=keys["file"])) as client:
        for mode, expected_results in (("hybrid", hybrid), ("lexical", by_terms)):
            response = client.post("/v1/retrieve", json={
                "question": QUESTION, "mode": mode,
                "k": len(expected_results) if mode == "hybrid" else RRF_DEPTH},
                headers=bearer(keys["staff"]))
            assert response.status_code == 200, response.text
            assert response.json()["results"] == expected_results
