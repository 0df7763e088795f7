"""The quality gate of publishing: the dbt test that fails a build regressing against what
serves, the publish that refuses it, and a publish that waits for a build holding the database
(split from test_serving.py so that the two files, each a few minutes, run on different xdist
workers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from dbt_harness import Project

from ragmart.exit_codes import Exit
from ragmart.serving.pointer import ServingError


def serving_json(project: Project) -> dict:
    return json.loads((project.workdir / "published" / "serving.json").read_text())


DBT_METRICS = {"recall@5": "recall_at_5", "mrr": "mrr", "ndcg@10": "ndcg_at_10"}


def dbt_baseline(project: Project) -> dict[str, float]:
    """The baseline assert_candidate_does_not_regress reads, in the publish's metric names."""
    latest = dict(project.query(
        "select metric, arg_max(metric_value, publish_seq) from published_eval_metrics "
        "group by metric"))
    return {name: latest[column] for name, column in DBT_METRICS.items()}


def regression_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stdout.splitlines() if "regressed" in line]


def test_publish_makes_the_dbt_gate_fail_a_build_that_regresses(tmp_path) -> None:
    # v1: the local model (recall@5 ~0.99 on the sample), published through the CLI
    project = Project(tmp_path, provider="local")
    project.land_sample()
    project.build()
    project.ragmart("publish", "v1")
    v1 = serving_json(project)
    assert v1["metrics"]["recall@5"] > 0.9
    # the publish wrote its metrics where the dbt test reads its baseline
    assert dbt_baseline(project) == pytest.approx(v1["metrics"])

    # v2: the hash provider, a far worse model; no var names a baseline
    worse = Project(tmp_path, provider="hash")
    failed = worse.build("--vars", "{index_version: v2, evaluate_retrieval: true}", check=False)
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert any("recall_at_5" in line and "published_eval_metrics" in line
               for line in regression_lines(failed)), failed.stdout[-3000:]
    # that test, and nothing else, failed
    assert set(re.findall(r"(?:Failure|Error) in \w+ (\w+)", failed.stdout)) == {
        "assert_candidate_does_not_regress"}, failed.stdout[-3000:]
    # `ragmart build` says the same with the gate's exit code: the build is sound, v2 is worse
    warm = worse.ragmart("build", "--", "--vars", "{index_version: v2, evaluate_retrieval: true}",
                         check=False)
    assert warm.returncode == Exit.GATE_REFUSED, warm.stdout[-3000:] + warm.stderr[-3000:]
    assert "assert_candidate_does_not_regress" in warm.stdout
    # publishing it is refused by the gate, with the gate's own exit code
    refused = worse.ragmart("publish", "v2", check=False)
    assert refused.returncode == Exit.GATE_REFUSED, refused.stderr
    assert "refused" in refused.stderr and "recall@5" in refused.stderr
    assert serving_json(project)["snapshot"] == v1["snapshot"]
    assert dbt_baseline(project) == pytest.approx(v1["metrics"])

    # v3: the same model, the other chunker: within the tolerances, the build passes
    passed = project.build("--vars", "{index_version: v3, chunker_version: md-sections-v2, "
                           "evaluate_retrieval: true}")
    assert "assert_candidate_does_not_regress" in passed.stdout
    assert regression_lines(passed) == []
    project.ragmart("publish", "v3")
    v3 = serving_json(project)
    assert v3["version"] == "v3" and not v3["forced"]
    assert dbt_baseline(project) == pytest.approx(v3["metrics"])


def test_publish_waits_for_a_build_holding_the_database_and_switches_nothing_if_it_stays(
    tmp_path, built_samples,
) -> None:
    project = built_samples.copy(tmp_path)
    hold = ("import sys, time; from ragmart.duck import connect; c = connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(float(sys.argv[2])); c.close()")

    def holder(seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", hold, str(project.db_path), str(seconds)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        return proc

    # the snapshot is taken while nothing holds the database; the lock is taken just after,
    # as a build starting in between would (the evaluation takes a second at least)
    from ragmart.serving import publish as serving

    real_snapshot = serving.snapshot
    holders = []

    def snapshot_then_lock(db_path, version, seconds, **kwargs):
        path = real_snapshot(db_path, version, **kwargs)
        holders.append(holder(seconds))
        return path

    env = {"RAGMART_DB": str(project.db_path)}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**project.env(), **env, "RAGMART_LOCK_WAIT_SECONDS": "1"}.items():
            mp.setenv(name, value)
        mp.setattr(serving, "snapshot", lambda db, v, **kw: snapshot_then_lock(db, v, 30, **kw))
        with pytest.raises(ServingError, match="stayed locked.*nothing was switched"):
            serving.publish(project.db_path, "v1")
        holders.pop().kill()
        assert not (project.workdir / "published" / "serving.json").exists()
        assert list((project.workdir / "published").glob("v*.duckdb")) == []

        mp.setenv("RAGMART_LOCK_WAIT_SECONDS", "60")
        mp.setattr(serving, "snapshot", lambda db, v, **kw: snapshot_then_lock(db, v, 3, **kw))
        published = serving.publish(project.db_path, "v1")
        holders.pop().wait(timeout=30)
    assert serving_json(project)["snapshot"] == published.snapshot
    assert dbt_baseline(project) == pytest.approx(published.metrics)

    # a publish that starts while a build holds the database waits for it, then publishes
    held = holder(3)
    started = time.monotonic()
    project.ragmart("publish", "v1")
    assert time.monotonic() - started > 2
    held.wait(timeout=30)
    assert serving_json(project)["snapshot"] != published.snapshot
