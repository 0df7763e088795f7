"""`ragmart sql` and `ragmart embed` end to end, and `ragmart.connect` (issue 18): a SQL user
reads what serves, read-only, with vss, the table macro and the question's vector."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import duckdb
import pytest
from dbt_harness import ROOT, Project

import ragmart
from ragmart.cli.main import main
from ragmart.duck import connect
from ragmart.embedding.providers import provider_for_model

QUESTION = "can I expense a business class flight"


@pytest.fixture(scope="module")
def built(tmp_path_factory, built_samples) -> Project:
    return built_samples.copy(tmp_path_factory.mktemp("sql"))


def cli(project: Project, *args: str, stdin: str | None = None, **env: str
        ) -> subprocess.CompletedProcess:
    """`ragmart args` in a process of its own (the shell replaces the process)."""
    return subprocess.run([sys.executable, "-m", "ragmart.cli.main", *args], cwd=ROOT,
                          env={**project.env(), **env}, input=stdin, capture_output=True,
                          text=True, timeout=120)


def run(project: Project, capsys, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`ragmart args` in this process (fast), in the project's environment."""
    with mock.patch.dict(os.environ, {**project.env(), **env}):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr


def test_shell_reads_the_build_database_with_vss_the_macro_and_refuses_writes(built) -> None:
    literal = cli(built, "embed", QUESTION).stdout.strip()
    chunks = built.query("select count(*) from fct_chunk_embeddings_v1")[0][0]
    script = (
        "select 'chunks=' || count(*) from fct_chunk_embeddings_v1;\n"
        f"explain select chunk_id from fct_chunk_vector_index_v1 "
        f"order by array_cosine_distance(embedding, {literal}) limit 5;\n"
        f"select 'macro=' || count(*) from ragmart_retrieve_v1({literal}, 3, all_groups := true);\n"
    )
    proc = cli(built, "sql", stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert f"chunks={chunks}" in proc.stdout
    assert "HNSW_INDEX_SCAN" in proc.stdout  # vss loaded offline: the index answers
    assert "macro=3" in proc.stdout
    assert "read-only" in proc.stderr.splitlines()[0]  # the banner says what is open
    write = cli(built, "sql", stdin="create table fct_scratch (a int);\n"
                                   "delete from fct_chunk_embeddings_v1;\n")
    assert write.stderr.count("read-only mode") == 2, write.stderr
    assert built.query("select count(*) from fct_chunk_embeddings_v1")[0][0] == chunks


def test_one_statement_in_three_formats_embeds_with_the_index_model(built, capsys) -> None:
    sql = (f"select rank, chunk_id from ragmart_retrieve_v1(ragmart_embed('{QUESTION}'), 3, "
           "all_groups := true) order by rank")
    # the table macro searches by vector (lexical and hybrid are the Python path's)
    retrieved = json.loads(run(built, capsys, "retrieve", QUESTION, "-k", "3", "--all-groups",
                               "--mode", "vector", "--json").stdout)["results"]
    # the environment names another provider: the vector is still the index's model's
    env = {"RAGMART_EMBEDDING_PROVIDER": "openai"}
    as_json = run(built, capsys, "sql", "-c", sql, "--json", **env)
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [r["chunk_id"] for r in rows] == [r["chunk_id"] for r in retrieved]
    as_csv = list(csv.reader(io.StringIO(
        run(built, capsys, "sql", "-c", sql, "--csv", **env).stdout)))
    assert as_csv == [["rank", "chunk_id"]] + [[str(r["rank"]), r["chunk_id"]] for r in rows]
    table = run(built, capsys, "sql", "-c", sql, **env).stdout.splitlines()
    assert table[0].split() == ["rank", "chunk_id"] and table[-1] == "(3 rows)"
    assert [line.split()[1] for line in table[2:-1]] == [r["chunk_id"] for r in rows]


def test_embed_prints_the_vector_of_the_model_the_index_was_built_with(built) -> None:
    literal = cli(built, "embed", QUESTION, RAGMART_EMBEDDING_PROVIDER="local")
    assert literal.returncode == 0, literal.stderr
    found = re.fullmatch(r"\[(.*)\]::FLOAT\[(\d+)\]\n", literal.stdout)
    assert found and found.group(2) == "384"
    document = json.loads(cli(built, "embed", QUESTION, "--json").stdout)
    assert document["embedding_model"] == "hash-384-v1" and document["dimensions"] == 384
    expected = [float(x) for x in provider_for_model("hash-384-v1").embed([QUESTION])[0]]
    assert [float(x) for x in found.group(1).split(", ")] == document["vector"] == expected


def test_setup_statements_ready_a_plain_duckdb_client(built) -> None:
    proc = cli(built, "sql", "--setup")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("load '") and "(read_only);" in proc.stdout
    client = duckdb.connect()  # any DuckDB 1.5.5 client: nothing ragmart set up
    for statement in proc.stdout.splitlines():
        client.execute(statement)
    vector = client.execute("select embedding from fct_chunk_embeddings_v1 limit 1").fetchone()
    assert client.execute(
        "explain select chunk_id from fct_chunk_vector_index_v1 "
        "order by array_cosine_distance(embedding, $v::float[384]) limit 3", {"v": vector[0]}
    ).fetchall()[0][1].count("HNSW_INDEX_SCAN") == 1
    assert len(client.execute("select * from ragmart_retrieve_v1($v::float[384], 2, "
                              "all_groups := true)", {"v": vector[0]}).fetchall()) == 2


def test_python_connect_is_read_only_with_embed_and_macro(built, monkeypatch) -> None:
    monkeypatch.setenv("RAGMART_EMBEDDING_PROVIDER", "openai")
    conn = ragmart.connect(built.db_path)
    try:
        rows = conn.execute(f"select chunk_id from ragmart_retrieve_v1(ragmart_embed("
                            f"'{QUESTION}'), 2, groups := ['all-staff'])").fetchall()
        assert len(rows) == 2
        with pytest.raises(duckdb.Error, match="read-only"):
            conn.execute("create table fct_scratch (a int)")
    finally:
        conn.close()


def test_errors_are_one_line_with_exit_usage(built, capsys, tmp_path) -> None:
    missing = tmp_path / "missing.duckdb"
    one_line_error(run(built, capsys, "sql", "--db", str(missing), "-c", "select 1"),
                   "does not exist")
    # the arguments are checked before the database
    one_line_error(run(built, capsys, "embed", " ", "--db", str(missing)), "empty")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    one_line_error(run(built, capsys, "sql", "--db", str(empty), "--setup"),
                   "not built", "dbt build")
    one_line_error(run(built, capsys, "embed", "q", "--db", str(empty)), "not built")
    one_line_error(run(built, capsys, "sql", "-c", "selec 1"), "Parser Error")
    one_line_error(run(built, capsys, "sql", "--json"), "-c SQL")
    one_line_error(run(built, capsys, "sql", "--index-version", "v 1", "-c", "select 1"), "v1, v2")
    locked = tmp_path / "locked.duckdb"
    shutil.copy(built.db_path, locked)
    writer = connect(locked)
    try:
        one_line_error(cli(built, "sql", "--db", str(locked), "-c", "select 1"), "locked")
    finally:
        writer.close()


def test_a_database_without_the_macro_gets_a_temp_one_and_stays_untouched(built,
                                                                         tmp_path) -> None:
    copy = tmp_path / "nomacro.duckdb"
    shutil.copy(built.db_path, copy)
    conn = connect(copy)
    conn.execute("drop macro table ragmart_retrieve_v1")
    conn.close()
    before = copy.read_bytes()
    setup = cli(built, "sql", "--db", str(copy), "--setup").stdout
    assert "create or replace temp macro ragmart_retrieve_v1(" in setup
    proc = cli(built, "sql", "--db", str(copy), stdin=(
        "select 'rows=' || count(*) from ragmart_retrieve_v1("
        "(select embedding from fct_chunk_embeddings_v1 limit 1), 4, all_groups := true);\n"))
    assert proc.returncode == 0 and "rows=4" in proc.stdout, proc.stderr
    assert copy.read_bytes() == before


def test_published_snapshot_is_what_sql_reads(built) -> None:
    built.ragmart("publish", "v1")
    pointer = json.loads((built.workdir / "published" / "serving.json").read_text())
    snapshot = (built.workdir / "published" / pointer["snapshot"]).resolve()
    setup = cli(built, "sql", "--setup").stdout
    assert f"attach '{snapshot}' as ragmart (read_only);" in setup
    proc = cli(built, "sql", "-c", "select count(*) as n from fct_chunk_embeddings_v1", "--json")
    assert json.loads(proc.stdout) == [{"n": built.query(
        "select count(*) from fct_chunk_embeddings_v1")[0][0]}]
    assert "the published snapshot" in cli(built, "sql", stdin="select 1;\n").stderr
    with mock.patch.dict(os.environ, built.env()):
        conn = ragmart.connect()  # a notebook follows the pointer too
    try:
        path = conn.execute("select path from duckdb_databases() "
                            "where database_name = current_database()").fetchone()[0]
        assert Path(path).resolve() == snapshot
    finally:
        conn.close()


@pytest.mark.parametrize(("arguments", "words"), [
    # no access argument: refused, never answered for "no group" in silence
    ("", ["ragmart_retrieve_v1: groups is missing", "all_groups := true"]),
    ("groups := ['all-staff'], min_chunk_completeness := 'paragraf'",
     ["min_chunk_completeness must be one of fragment, paragraph, section, got 'paragraf'"]),
    ("all_groups := true, missing_allowed_groups := 'maybe'",
     ["missing_allowed_groups must be deny or allow, got 'maybe'"]),
    ("all_groups := true, min_similarity := 2",
     ["min_similarity must be a number between -1 and 1 (1 - cosine distance)"]),
    ("all_groups := true, document_types := []",
     ["document_types must be a non-empty list of document types"]),
    ("all_groups := true, required_metadata := ['title', 'no such field!']",
     ["required_metadata 'no such field!' is not a field name; use title, "]),
    ("all_groups := true, max_document_age := interval 0 days",
     ["max_document_age must be a positive duration"]),
    ("all_groups := true, min_document_version := -1",
     ["min_document_version must be a non-negative integer (a change_seq)"]),
])
def test_the_table_macro_refuses_a_wrong_argument_naming_it(built, capsys, arguments,
                                                            words) -> None:
    """Every argument of the table macro is checked before a row is read, in the words the
    contract checks use (ragmart.retrieval.clauses: each clause's macro_check): a wrong value
    or a missing access argument is one error naming the argument, never fewer rows."""
    sql = (f"select count(*) from ragmart_retrieve_v1(ragmart_embed('{QUESTION}'), 3"
           f"{', ' if arguments else ''}{arguments})")
    one_line_error(run(built, capsys, "sql", "-c", sql), *words)
    with ragmart.connect(built.db_path) as conn, pytest.raises(duckdb.Error) as raised:
        conn.execute(sql).fetchall()
    for word in words:
        assert word in str(raised.value)


def test_the_same_words_as_a_contract_file(built, capsys, tmp_path) -> None:
    """A contract field and the macro argument of the same clause are refused in the same
    words (the clause's rule is written once)."""
    contracts = tmp_path / "contracts.yml"
    contracts.write_text("contracts:\n  c:\n    min_chunk_completeness: paragraf\n")
    cli_error = run(built, capsys, "retrieve", QUESTION, "--contract", "c", "--contracts",
                    str(contracts), "--all-groups")
    one_line_error(cli_error, "must be one of fragment, paragraph, section, got 'paragraf'")
    macro_error = run(built, capsys, "sql", "-c",
                      f"select * from ragmart_retrieve_v1(ragmart_embed('{QUESTION}'), 3, "
                      "all_groups := true, min_chunk_completeness := 'paragraf')")
    one_line_error(macro_error, "must be one of fragment, paragraph, section, got 'paragraf'")
