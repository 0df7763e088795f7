"""Offline evaluation: document-level metrics, versions, the regression gate and `ragmart eval`.

Metric values are computed by hand in the comments. The last two tests run the real dbt project
once on the sample landing (hash provider): the SQL evaluation in fct_retrieval_eval must give
the Python evaluation's numbers, and assert_candidate_does_not_regress must fail on a baseline
the build does not reach.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from dbt_harness import ROOT, Project

from ragmart.catalog import index_versions
from ragmart.cli.main import main
from ragmart.duck import connect
from ragmart.embedding.providers.hashing import HashingProvider
from ragmart.exit_codes import Exit
from ragmart.quality.baseline import record_published_metrics
from ragmart.quality.evaluation import evaluate_version
from ragmart.quality.gate import DEFAULT_TOLERANCE, gate, parse_tolerances
from ragmart.quality.judged import JudgedQuery, load_judged_queries, question_hash
from ragmart.quality.metrics import (
    UNKNOWN_TYPE,
    EvalReport,
    Metrics,
    evaluate,
    ndcg_at_k,
    ranked_documents,
    recall_at_k,
    reciprocal_rank,
)
from ragmart.quality.report import render_markdown, report_stem

# --------------------------------------------------------------------------- metrics

# ranked documents d1 r1 d2 d3 r2 d4; relevant r1, r2, r3 (r3 never retrieved)
RANKED = ["d1", "r1", "d2", "d3", "r2", "d4"]
RELEVANT = frozenset({"r1", "r2", "r3"})

# seeds/judged_queries.csv: 101 questions (two whose document the sample deletes were dropped;
# qx01-qx24 are the exact-term questions of hybrid retrieval)
N_JUDGED = 101


def test_ranked_documents_keeps_each_document_at_its_best_chunk() -> None:
    assert ranked_documents(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_recall_counts_relevant_documents_in_the_top_k() -> None:
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)  # r1 (2), r2 (5)
    assert recall_at_k(RANKED, RELEVANT, 4) == pytest.approx(1 / 3)  # r1 only
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKED, RELEVANT, 100) == pytest.approx(2 / 3)


def test_reciprocal_rank_is_one_over_the_first_relevant_rank() -> None:
    assert reciprocal_rank(RANKED, RELEVANT) == 0.5
    assert reciprocal_rank([f"d{i}" for i in range(10)] + ["r3"], RELEVANT) == pytest.approx(1 / 11)
    assert reciprocal_rank(["d1", "d2"], RELEVANT) == 0.0


def test_ndcg_uses_binary_gains_log2_discount_and_all_relevant_first_as_ideal() -> None:
    # DCG  = 1/log2(2+1) + 1/log2(5+1)            = 0.63093 + 0.38685 = 1.01778
    # IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4)     = 1 + 0.63093 + 0.5 = 2.13093
    assert ndcg_at_k(RANKED, RELEVANT) == pytest.approx(0.4776237, abs=1e-7)
    # the first relevant document at rank 11 is past the cut
    assert ndcg_at_k([f"d{i}" for i in range(10)] + ["r1"], RELEVANT) == 0.0
    # twelve relevant documents, all first: the ideal is cut at 10 too
    many = [f"r{i}" for i in range(12)]
    assert ndcg_at_k(many, frozenset(many)) == pytest.approx(1.0)
    assert recall_at_k(many, frozenset(many), 5) == pytest.approx(5 / 12)
    # the only relevant document second: 1/log2(3)
    assert ndcg_at_k(["d1", "r1"], frozenset({"r1"})) == pytest.approx(1 / math.log2(3))


def test_evaluate_averages_overall_and_per_document_type() -> None:
    queries = [
        JudgedQuery("q1", "alpha?", frozenset({"a"})),  # policy
        JudgedQuery("q2", "bravo?", frozenset({"b", "c"})),  # policy and standard
        JudgedQuery("q3", "charlie?", frozenset({"gone"})),  # not served: no type
    ]
    chunks = {"alpha?": ["a", "x", "a"], "bravo?": ["x", "b", "y", "c"], "charlie?": ["x", "y"]}
    types = {"a": "policy", "b": "policy", "c": "standard", "x": "policy", "y": "guideline"}
    report = evaluate(queries, chunks.__getitem__, k=5, document_types=types, version="v7")

    # q1: a first -> 1, 1, 1.  q3: nothing relevant -> 0, 0, 0.
    # q2: documents x b y c: recall 2/2, RR 1/2,
    #     nDCG = (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3)) = 1.06161 / 1.63093 = 0.65092
    q2_ndcg = 0.6509209
    by_id = {q.query_id: q for q in report.per_query}
    assert by_id["q2"].ndcg == pytest.approx(q2_ndcg, abs=1e-7)
    assert by_id["q2"].first_relevant_rank == 2
    assert by_id["q2"].document_types == ("policy", "standard")
    assert by_id["q3"].document_types == ()
    assert report.version == "v7"
    assert report.overall == Metrics(
        queries=3, recall_at_k=pytest.approx(2 / 3), mrr=pytest.approx(0.5),
        ndcg_at_10=pytest.approx((1 + q2_ndcg) / 3, abs=1e-7),
    )
    assert set(report.by_document_type) == {"policy", "standard", UNKNOWN_TYPE}
    policy = report.by_document_type["policy"]  # q1 and q2
    assert (policy.queries, policy.recall_at_k, policy.mrr) == (2, 1.0, 0.75)
    assert policy.ndcg_at_10 == pytest.approx((1 + q2_ndcg) / 2, abs=1e-7)
    standard = report.by_document_type["standard"]  # q2 only
    assert (standard.queries, standard.mrr) == (1, 0.5)
    assert report.by_document_type[UNKNOWN_TYPE] == Metrics(1, 0.0, 0.0, 0.0)
    assert report.metrics() == {"recall@5": report.overall.recall_at_k,
                                "mrr": report.overall.mrr,
                                "ndcg@10": report.overall.ndcg_at_10}
    assert report.dbt_vars() == {"recall_at_5": report.overall.recall_at_k,
                                 "mrr": report.overall.mrr,
                                 "ndcg_at_10": report.overall.ndcg_at_10}
    assert EvalReport.from_dict(json.loads(json.dumps(report.to_dict()))).metrics() \
        == report.metrics()


def test_judged_query_seed_loads() -> None:
    queries = load_judged_queries(ROOT / "seeds" / "judged_queries.csv")
    assert len(queries) == N_JUDGED
    assert len({q.query_id for q in queries}) == N_JUDGED
    assert all(q.relevant_document_ids for q in queries)


# --------------------------------------------------------------------------- the gate


def report(recall: float, mrr: float, ndcg: float, *, version: str = "v", k: int = 5):
    return EvalReport(k=k, overall=Metrics(79, recall, mrr, ndcg), by_document_type={},
                      per_query=[], version=version)


BASELINE = report(0.80, 0.70, 0.60, version="v1")


def test_gate_fails_only_on_drops_beyond_the_tolerance() -> None:
    # recall -0.01 (within 0.02), mrr -0.04 (beyond 0.03), ndcg -0.03 (exactly the tolerance)
    result = gate(report(0.79, 0.66, 0.57, version="v2"), BASELINE, DEFAULT_TOLERANCE)
    assert not result.passed
    assert len(result.failures) == 1
    failure = result.failures[0]
    for part in ("mrr", "0.7000", "0.6600", "0.0300", "v1", "v2"):
        assert part in failure, (part, failure)


def test_gate_passes_without_baseline_on_improvement_and_with_wider_tolerance() -> None:
    assert gate(report(0.1, 0.1, 0.1), None, DEFAULT_TOLERANCE).passed
    assert gate(report(0.9, 0.9, 0.9), BASELINE, DEFAULT_TOLERANCE).passed
    assert gate(report(0.79, 0.66, 0.57), BASELINE, {"mrr": 0.05}).passed  # others: defaults


def test_gate_tolerance_names_and_errors() -> None:
    strict = gate(report(0.79, 0.70, 0.60), BASELINE, {"recall_at_5": 0.0})
    assert not strict.passed and "recall@5" in strict.failures[0]
    assert parse_tolerances(["mrr=0.05", "ndcg_at_10=0"]) == {"mrr": 0.05, "ndcg@10": 0.0}
    with pytest.raises(ValueError, match="precision.*recall@5"):
        gate(report(0.8, 0.7, 0.6), BASELINE, {"precision": 0.1})
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_tolerances(["mrr"])
    with pytest.raises(ValueError, match="negative"):
        parse_tolerances(["mrr=-1"])
    with pytest.raises(ValueError, match="k=10.*k=5"):
        gate(report(0.8, 0.7, 0.6, k=10), BASELINE, DEFAULT_TOLERANCE)


# --------------------------------------------------------------------------- versions

# Two chunks of different documents with the same text tie at the same distance: chunk_id
# decides (a-copy before b-travel), so q1's relevant document comes second in v1. v2 lacks the
# copy.
FLIGHTS = "business class flights need written approval from a vice president"
CHUNKS = [
    ("a-copy@1#0000", "a-copy", "handbook", FLIGHTS),
    ("b-travel@1#0000", "b-travel", "policy", FLIGHTS),
    ("c-pto@1#0000", "c-pto", "guideline", "vacation days roll over up to five days a year"),
    ("c-pto@1#0001", "c-pto", "guideline", "unused vacation is paid out when you leave"),
]
JUDGED_CSV = (
    "query_id,question,relevant_document_ids\n"
    f"q1,{FLIGHTS},b-travel\n"
    "q2,how many vacation days roll over,c-pto\n"
)


def make_version(conn, version: str, chunks, model: str = "hash-384-v1") -> None:
    vectors = HashingProvider().embed([text for *_, text in chunks])
    conn.execute(
        f"create table fct_chunk_embeddings_{version} (chunk_id varchar, document_id varchar, "
        "document_type varchar, chunk_text varchar, embedding float[384], "
        "embedding_model varchar)"
    )
    for (chunk_id, document_id, document_type, text), vector in zip(chunks, vectors,
                                                                    strict=True):
        conn.execute(
            f"insert into fct_chunk_embeddings_{version} values (?, ?, ?, ?, ?, ?)",
            [chunk_id, document_id, document_type, text, [float(x) for x in vector], model],
        )


@pytest.fixture
def versions_db(tmp_path) -> Path:
    path = tmp_path / "versions.duckdb"
    conn = connect(path)
    try:
        make_version(conn, "v1", CHUNKS)
        make_version(conn, "v2", CHUNKS[1:])
        make_version(conn, "v10", CHUNKS, model="mystery-model-1")
        make_version(conn, "v11", CHUNKS[:2])  # vectors of two models in one table
        conn.execute("update fct_chunk_embeddings_v11 set embedding_model = 'other' "
                     "where document_id = 'a-copy'")
        conn.execute("create table fct_chunk_embeddings_v1__dbt_tmp (x int)")
    finally:
        conn.close()
    (tmp_path / "judged.csv").write_text(JUDGED_CSV)
    return path


def test_versions_are_listed_in_numeric_order(versions_db: Path) -> None:
    conn = connect(versions_db, read_only=True)
    try:
        assert index_versions(conn) == ["v1", "v2", "v10", "v11"]
    finally:
        conn.close()


def test_evaluate_version_exact_search_breaks_ties_by_chunk_id(versions_db: Path) -> None:
    queries = load_judged_queries(versions_db.parent / "judged.csv")
    conn = connect(versions_db, read_only=True)
    try:
        v1 = evaluate_version(conn, "v1", queries, k=1)
        v2 = evaluate_version(conn, "v2", queries, k=1)
        with pytest.raises(ValueError, match="mystery-model-1.*hash-384-v1"):
            evaluate_version(conn, "v10", queries)
        with pytest.raises(ValueError, match="v11.*embedding_model"):
            evaluate_version(conn, "v11", queries)
        with pytest.raises(ValueError, match="v3 .*v1, v2, v10, v11"):
            evaluate_version(conn, "v3", queries)
        with pytest.raises(ValueError, match="invalid index version.*write it as v1"):
            evaluate_version(conn, "latest; drop table x", queries)
    finally:
        conn.close()
    q1 = v1.per_query[0]
    assert q1.top_documents == ["a-copy"]  # k=1; the tie went to the smaller chunk_id
    assert q1.first_relevant_rank == 2
    # v1: q1 recall@1 0, RR 1/2, nDCG 1/log2(3); q2 first: 1, 1, 1
    assert v1.metrics() == pytest.approx(
        {"recall@1": 0.5, "mrr": 0.75, "ndcg@10": (1 / math.log2(3) + 1) / 2})
    assert v2.metrics() == {"recall@1": 1.0, "mrr": 1.0, "ndcg@10": 1.0}
    assert (v1.version, v1.embedding_model) == ("v1", "hash-384-v1")
    assert set(v1.by_document_type) == {"policy", "guideline"}


def test_cli_eval_compare_writes_report_plot_and_json(versions_db: Path, capsys) -> None:
    out = versions_db.parent / "eval"
    common = ["eval", "--db", str(versions_db), "--queries",
              str(versions_db.parent / "judged.csv"), "--out", str(out)]
    assert main([*common, "--compare", "v1", "v2", "-k", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in data["reports"]] == ["v1", "v2"]
    assert data["reports"][0]["metrics"]["mrr"] == 0.75
    assert data["gate"] == {"baseline": "v1", "candidate": "v2", "passed": True, "failures": [],
                            "tolerance": {"recall@1": 0.02, "mrr": 0.03, "ndcg@10": 0.03}}
    markdown = Path(data["markdown"])
    assert markdown == out / "eval_v1_vs_v2.md"
    text = markdown.read_text()
    assert "| mrr | 0.7500 | 1.0000 | +0.2500 |" in text
    assert "| policy |" in text and "![" in text
    assert Path(data["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the other way round v2 -> v1 is a regression: the exit code is the gate's verdict
    assert main([*common, "--compare", "v2", "v1", "-k", "1"]) == Exit.GATE_REFUSED
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "mrr fell from 1.0000" in printed
    assert "Gate: **failed**" in (out / "eval_v2_vs_v1.md").read_text()
    assert main([*common, "--compare", "v2", "v1", "-k", "1", "--json"]) == Exit.GATE_REFUSED
    assert json.loads(capsys.readouterr().out)["gate"]["passed"] is False
    # --fail-on-regression, once needed for a failing exit, is accepted and changes nothing
    for flags in ([], ["--fail-on-regression"]):
        assert main([*common, "--compare", "v2", "v1", "-k", "1", *flags]) \
            == Exit.GATE_REFUSED
        assert main([*common, "--compare", "v2", "v1", "-k", "1", "--tolerance", "mrr=0.5",
                     "--tolerance", "recall@1=0.5", "--tolerance", "ndcg@10=0.5",
                     *flags]) == Exit.OK
    capsys.readouterr()

    # one version: the newest when none is named
    assert main([*common, "--version", "v2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gate"] is None
    assert (out / "eval_v2.md").is_file() and (out / "eval_v2.png").is_file()
    assert main([*common, "--version", "v9"]) == Exit.USAGE
    assert "v9" in capsys.readouterr().err


def test_report_names_and_markdown_sections() -> None:
    one = report(0.5, 0.5, 0.5, version="v3")
    assert report_stem([one]) == "eval_v3"
    assert report_stem([BASELINE, one]) == "eval_v1_vs_v3"
    text = render_markdown([BASELINE, one], gate(one, BASELINE, DEFAULT_TOLERANCE))
    assert "| recall@5 | 0.8000 | 0.5000 | -0.3000 |" in text
    assert "Gate: **failed**" in text


# --------------------------------------------------------------------------- dbt


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("eval"),
                      extra_env={"RAGMART_EVALUATE_RETRIEVAL": "true"})
    project.land_sample()
    proc = project.build()
    assert "assert_candidate_does_not_regress" in proc.stdout  # ran, and passed: no baseline
    return project


def test_fct_retrieval_eval_matches_the_python_evaluation(built: Project) -> None:
    queries = load_judged_queries(ROOT / "seeds" / "judged_queries.csv")
    conn = connect(built.db_path, read_only=True)
    try:
        python = evaluate_version(conn, "v1", queries, k=5)
        cursor = conn.execute(
            "select query_id, recall_at_5, reciprocal_rank, ndcg_at_10, first_relevant_rank, "
            "document_types, embedding_model from fct_retrieval_eval"
        )
        rows = {row[0]: row for row in cursor.fetchall()}
        averages = conn.execute(
            "select avg(recall_at_5), avg(reciprocal_rank), avg(ndcg_at_10) "
            "from fct_retrieval_eval"
        ).fetchone()
        cached = conn.execute(
            "select count(*), count(distinct question_hash), any_value(embedding_model) "
            "from int_judged_query_embeddings"
        ).fetchone()
    finally:
        conn.close()
    assert python.embedding_model == "hash-384-v1"
    assert cached == (N_JUDGED, N_JUDGED, "hash-384-v1")
    assert len(rows) == len(python.per_query) == N_JUDGED
    for result in python.per_query:
        _, recall, rr, ndcg, first, types, model = rows[result.query_id]
        assert recall == pytest.approx(result.recall, abs=1e-9), result.query_id
        assert rr == pytest.approx(result.reciprocal_rank, abs=1e-9), result.query_id
        assert ndcg == pytest.approx(result.ndcg, abs=1e-9), result.query_id
        assert first == result.first_relevant_rank, result.query_id
        assert tuple(types) == result.document_types, result.query_id
        assert model == "hash-384-v1"
    assert averages == pytest.approx(
        (python.overall.recall_at_k, python.overall.mrr, python.overall.ndcg_at_10), abs=1e-9)
    # the evaluation is not trivially perfect or empty on this corpus
    assert 0.2 < python.overall.mrr < 1.0


def test_regression_test_fails_on_a_baseline_the_build_does_not_reach(built: Project) -> None:
    conn = connect(built.db_path, read_only=True)
    try:
        measured = evaluate_version(conn, "v1", load_judged_queries(
            ROOT / "seeds" / "judged_queries.csv"), k=5)
    finally:
        conn.close()
    values = measured.dbt_vars()
    too_high = {"recall_at_5": 0.99, "mrr": 0.99, "ndcg_at_10": 0.99}
    # mrr's tolerance is widened past its gap: only recall_at_5 and ndcg_at_10 fail
    proc = built.build("--vars", json.dumps({"eval_baseline": too_high,
                                             "eval_tolerance_mrr": 0.99}), check=False)
    assert proc.returncode != 0, proc.stdout[-3000:]
    failed = [line for line in proc.stdout.splitlines() if "regressed" in line]
    assert any("recall_at_5" in line and "0.9900" in line and "0.0200" in line
               for line in failed), proc.stdout[-3000:]
    assert any("ndcg_at_10" in line for line in failed)
    assert not any("mrr" in line for line in failed)
    assert "FAIL" in proc.stdout and "assert_candidate_does_not_regress" in proc.stdout
    # questions are embedded once: the second build found them all cached
    assert built.query("select count(*), count(distinct dbt_invocation_id) "
                       "from int_judged_query_embeddings") == [(N_JUDGED, 1)]

    # the measured metrics as baseline pass (var); so does a baseline within the tolerance
    within = {**values, "recall_at_5": values["recall_at_5"] + 0.015}
    ok = built.dbt("test", "--select", "assert_candidate_does_not_regress",
                   "--vars", json.dumps({"eval_baseline": within}), check=False)
    assert ok.returncode == 0, ok.stdout[-3000:]

    # without the var, the last published metrics in the database are the baseline
    conn = connect(built.db_path)
    try:
        record_published_metrics(conn, report(0.99, 0.99, 0.99, version="v0"))
        record_published_metrics(conn, measured)  # the latest row per metric wins
    finally:
        conn.close()
    ok = built.dbt("test", "--select", "assert_candidate_does_not_regress", check=False)
    assert ok.returncode == 0, ok.stdout[-3000:]
    conn = connect(built.db_path)
    try:
        record_published_metrics(conn, report(0.99, 0.99, 0.99, version="v9"))
    finally:
        conn.close()
    bad = built.dbt("test", "--select", "assert_candidate_does_not_regress", check=False)
    assert bad.returncode != 0
    assert "published_eval_metrics" in bad.stdout and "mrr" in bad.stdout


def test_the_dbt_test_and_ragmart_publish_gate_alike(built: Project, tmp_path: Path) -> None:
    """One gate (ragmart.quality.gate): a baseline above the measured metrics by exactly their
    default tolerances passes both the dbt test and `ragmart publish`; a little more fails both,
    on every metric. A tolerance the two sides disagree on fails one of the two cases."""
    project = Project(tmp_path / "d", extra_env=built.extra_env)
    shutil.copytree(built.workdir, project.workdir)
    measured = json.loads(project.ragmart("publish", "v1").stdout)["metrics"]
    pointer = project.workdir / "published" / "serving.json"

    def both_sides(excess: float) -> tuple[subprocess.CompletedProcess, ...]:
        baseline = {name: value + DEFAULT_TOLERANCE[name] + excess
                    for name, value in measured.items()}
        dbt = project.dbt("test", "--select", "assert_candidate_does_not_regress", "--vars",
                          json.dumps({"eval_baseline": {name.replace("@", "_at_"): value
                                                        for name, value in baseline.items()}}),
                          check=False)
        serving = json.loads(pointer.read_text())  # what `ragmart publish` gates on
        serving["report"]["metrics"] = baseline
        pointer.write_text(json.dumps(serving))
        return dbt, project.ragmart("publish", "v1", check=False)

    dbt, publish = both_sides(0.0)
    assert dbt.returncode == 0, dbt.stdout[-3000:]
    assert publish.returncode == 0, publish.stderr
    dbt, publish = both_sides(0.001)
    assert dbt.returncode != 0 and publish.returncode == Exit.GATE_REFUSED, publish.stderr
    for name in measured:
        assert f"regressed: {name.replace('@', '_at_')} " in dbt.stdout, dbt.stdout[-3000:]
        assert f"{name} fell from" in publish.stderr, publish.stderr


def test_evaluate_retrieval_var_must_be_a_boolean(built: Project) -> None:
    proc = built.dbt("parse", "--vars", json.dumps({"evaluate_retrieval": "maybe"}), check=False)
    assert proc.returncode != 0
    assert "evaluate_retrieval must be true or false, got 'maybe'" in proc.stdout + proc.stderr


def test_question_hash_matches_duckdb_sha256() -> None:
    import duckdb

    question = "who approves a 120k software deal — ünïcode?"
    assert duckdb.sql("select sha256($q)", params={"q": question}).fetchone()[0] \
        == question_hash(question)


def test_publish_evaluates_a_database_file_and_gates_reports_read_back(versions_db: Path) -> None:
    # what `ragmart publish` does: evaluate the snapshot file, keep report.to_dict() as JSON,
    # gate the next candidate on EvalReport.from_dict of it
    queries = load_judged_queries(versions_db.parent / "judged.csv")
    serving = json.loads(json.dumps(evaluate_version(versions_db, "v2", queries).to_dict()))
    candidate = json.loads(json.dumps(evaluate_version(versions_db, "v1", queries).to_dict()))
    assert serving["metrics"] == {"recall@5": 1.0, "mrr": 1.0, "ndcg@10": 1.0}
    result = gate(EvalReport.from_dict(candidate), EvalReport.from_dict(serving))
    assert [f.split()[0] for f in result.failures] == ["mrr", "ndcg@10"]
    with pytest.raises(FileNotFoundError, match="missing.duckdb"):
        evaluate_version(versions_db.parent / "missing.duckdb", "v1", queries)
