"""An index version is bound to its chunker and embedding model: a build of an existing version
with another one is refused before it touches anything, naming the command to run instead, and
that command yields a complete version. Serving facts are per version, and a retrieval result
names the version it cites. Through real `dbt build`, `ragmart freshness` and `ragmart retrieve`.
"""

from __future__ import annotations

import json
import re
import shlex

import pyarrow as pa
from dbt_harness import Project

from ragmart.chunking.versions import chunk_versions
from ragmart.duck import connect

V1_CHUNKER, V2_CHUNKER = "md-sections-v1", "md-sections-v2"


def _vars(version: str, chunker: str) -> str:
    return f"{{index_version: {version}, chunker_version: {chunker}}}"


def _output(proc) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def _rows(project: Project, version: str) -> list[tuple]:
    return project.query(
        f"select chunk_id, chunker_version, embedding_model, chunk_hash, dbt_invocation_id "
        f"from fct_chunk_embeddings_{version} order by chunk_id")


def _expected_live_chunks(project: Project, chunker: str) -> list[tuple[str, str]]:
    """(chunk_id, chunk_hash) of the live versions chunked here, in Python, independently of
    the dbt models."""
    live = project.query(
        "select document_id, document_version, document_checksum, title, content "
        "from int_document_versions where is_current")
    names = ["document_id", "document_version", "document_checksum", "title", "content"]
    table = pa.table({n: [row[i] for row in live] for i, n in enumerate(names)})
    chunks = chunk_versions(table, chunker)
    return sorted(zip(chunks["chunk_id"].to_pylist(), chunks["chunk_hash"].to_pylist(),
                      strict=True))


def _touched(project: Project) -> tuple:
    """What any build would change first: chunks per chunker, provider runs, every version."""
    return (
        project.query("select chunker_version, count(*) from int_chunks group by 1 order by 1"),
        project.query("select count(*) from embedding_runs"),
        {v: _rows(project, v) for (v,) in project.query(
            "select table_name[22:] from duckdb_tables() "
            "where table_name like 'fct_chunk_embeddings_v%'")},
    )


def _refused(project: Project, version: str, bound: str, asked: str, dbt_vars: str) -> str:
    """Build `version` with chunker `asked` (`dbt_vars`): refused before anything was touched.
    Returns the message."""
    before = _touched(project)
    proc = project.build("--vars", dbt_vars, check=False)
    output = _output(proc)
    assert proc.returncode == 2, output[-3000:]  # dbt: an error outside any node
    assert f"index version {version} is bound to chunker {bound}" in output, output[-3000:]
    assert f"this build asks for chunker {asked}" in output, output[-3000:]
    # refused before any node ran: nothing built, nothing sent to the provider
    assert not re.search(r"START (sql|python) ", output), output[-3000:]
    assert _touched(project) == before
    return output


def _remedy(output: str, flag: str) -> list[str]:
    """The `dbt build` arguments the refusal tells the user to run (the line holding `flag`)."""
    commands = re.findall(r"^\s*dbt build (.*)$", output, flags=re.MULTILINE)
    chosen = [c for c in commands if flag in c]
    assert len(chosen) == 1, commands
    return shlex.split(chosen[0])


def _assert_complete(project: Project, version: str, chunker: str, proc) -> None:
    rows = _rows(project, version)
    # complete: exactly the chunks this chunker makes of the live versions
    assert sorted((r[0], r[3]) for r in rows) == _expected_live_chunks(project, chunker)
    assert len(rows) > 0
    assert {(r[1], r[2]) for r in rows} == {(chunker, "hash-384-v1")}
    assert re.search(r"PASS assert_live_versions_are_served", _output(proc)), _output(proc)[-3000:]


def test_a_version_is_bound_to_its_chunker_and_a_change_is_refused_both_ways(tmp_path) -> None:
    project = Project(tmp_path)
    # v2 is first built while nothing has landed (an empty landing zone that exists is a valid
    # state): bound although it has no rows
    (project.landing / "dms").mkdir(parents=True)
    project.build("--vars", _vars("v2", V1_CHUNKER))
    assert _rows(project, "v2") == []
    project.land_sample()
    project.build()  # v1, md-sections-v1
    v1_facts = _freshness(project, "v1")

    # v2 asked for the other chunker (the build of the issue): refused, v2 kept
    output = _refused(project, "v2", V1_CHUNKER, V2_CHUNKER,
                      "{index_version: v2, chunker_version: md-sections-v2, "
                      "evaluate_retrieval: true}")
    # the remedy taken: rebuild v2 completely with the new chunker
    rebuilt = project.build(*_remedy(output, "--full-refresh"))
    _assert_complete(project, "v2", V2_CHUNKER, rebuilt)
    assert _rows(project, "v1")[0][1] == V1_CHUNKER

    # and back: v2, now filled and bound to md-sections-v2, asked for md-sections-v1: refused,
    # its rows untouched; the remedy taken: a new version
    output = _refused(project, "v2", V2_CHUNKER, V1_CHUNKER, _vars("v2", V1_CHUNKER))
    # (a build that forgot its chunker var is told how to build v2 as it is bound)
    assert _remedy(output, "index_version: v2, chunker_version: md-sections-v2}") == [
        "--vars", _vars("v2", V2_CHUNKER)]
    args = _remedy(output, "index_version: v3")
    assert "--full-refresh" not in args
    built = project.build(*args)
    _assert_complete(project, "v3", V1_CHUNKER, built)
    _assert_complete(project, "v2", V2_CHUNKER, rebuilt)

    # the embedding model is bound too
    before = _touched(project)
    proc = project.build("--vars", "{index_version: v3, embedding_model: other-model}",
                         check=False)
    output = _output(proc)
    assert proc.returncode == 2
    assert "embedding model hash-384-v1" in output and "embedding model other-model" in output
    assert _touched(project) == before
    # nothing done to v2 and v3 (a full refresh included) changed a figure of v1
    assert _freshness(project, "v1") == v1_facts

    # a database built before index_versions existed: the binding is read from the rows
    conn = connect(project.db_path)
    try:
        conn.execute("drop table index_versions")
    finally:
        conn.close()
    output = _refused(project, "v2", V2_CHUNKER, V1_CHUNKER, _vars("v2", V1_CHUNKER))
    assert "read from its serving rows" in output


def _freshness(project: Project, version: str) -> dict:
    report = json.loads(project.ragmart("freshness", "--json", "--index-version", version).stdout)
    report.pop("checked_at")
    report.pop("serving")  # what readers see and the landing zone's lag: not the version's own
    return report


def test_a_backfill_leaves_every_figure_of_the_serving_version_unchanged(
    tmp_path, built_samples,
) -> None:
    project = built_samples.copy(tmp_path)

    def facts() -> tuple[dict, list[tuple]]:
        report = json.loads(project.ragmart("freshness", "--json").stdout)  # default: v1
        report.pop("checked_at")
        report.pop("serving")  # what readers see and the landing zone's lag (not per version)
        table = project.query("select * from int_document_versions_served_v1 order by all")
        return report, table

    v1_report, v1_table = facts()
    assert v1_report["index_version"] == "v1" and v1_report["live_versions"] > 0
    project.build("--vars", _vars("v2", V2_CHUNKER))
    assert facts() == (v1_report, v1_table)
    # v2 has its own facts: same documents, its own chunks
    v2 = _freshness(project, "v2")
    assert v2["index_version"] == "v2" and v2["chunker_version"] == V2_CHUNKER
    assert (v2["stale_count"], v2["orphan_count"]) == (0, 0)
    assert v2["live_versions"] == v1_report["live_versions"]
    assert v1_report["chunker_version"] == V1_CHUNKER

    # a citation names its version: the same chunk_id is another text in v2
    chunk_id, v1_text, v2_text = project.query(
        "select v1.chunk_id, v1.chunk_text, v2.chunk_text from fct_chunk_embeddings_v1 as v1 "
        "inner join fct_chunk_embeddings_v2 as v2 on v1.chunk_id = v2.chunk_id "
        "where v1.chunk_text <> v2.chunk_text order by 1 limit 1")[0]
    for version, text in (("v1", v1_text), ("v2", v2_text)):
        project.extra_env["RAGMART_INDEX_VERSION"] = version
        results = json.loads(
            project.ragmart("retrieve", text, "--all-groups", "--json").stdout)["results"]
        assert {r["index_version"] for r in results} == {version}
        cited = [r for r in results if r["chunk_id"] == chunk_id]
        assert cited and cited[0]["chunk_text"] == text
