"""Any embedding model, any size: an index version is typed with its model's vector size.

A 384-dimensional v1 (the hash provider, as fast as a test needs) serves while versions of an
OpenAI-compatible model at 1536 and 3072 dimensions (the project's local test server,
tests/python/openai_server.py) build beside it in the same database, through real `dbt build`s;
`ragmart eval --compare`, the dbt gate, `publish` and `rollback` work across the sizes, and a
question is embedded by the model of the version it searches. The model name and size dbt
records are the provider's own (the macros ask ragmart through a DuckDB function).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from dbt_harness import Project, copy_project
from openai_server import EmbeddingServer
from test_index_versions import _output, _touched

from ragmart.embedding.providers import get_provider
from ragmart.embedding.providers.openai import OpenAIProvider
from ragmart.embedding.providers.openai_settings import OpenAISettings
from ragmart.exit_codes import Exit
from ragmart.retrieval.api import ALL_GROUPS, Retriever

QUESTION = "who has to okay a business class seat on a long flight to a customer"
V2 = "{index_version: v2, evaluate_retrieval: true}"


def _openai(tmp_path, server: EmbeddingServer, dimensions: int) -> Project:
    """The deployment of `tmp_path` with the openai provider on the test server."""
    return Project(tmp_path, provider="openai", extra_env={
        "OPENAI_API_KEY": server.api_key,
        "RAGMART_OPENAI_BASE_URL": server.base_url,
        "RAGMART_OPENAI_DIMENSIONS": str(dimensions),
        "RAGMART_OPENAI_BACKOFF_BASE": "0.001",
    })


def _hash_v1(tmp_path, built_samples) -> Project:
    """v1 at 384 dimensions, built (the sample built by the hash provider, which reads no
    openai setting: the bindings below check its model); no openai setting in its
    environment."""
    project = built_samples.copy(tmp_path, provider="hash")
    project.extra_env = {
        "OPENAI_API_KEY": "", "RAGMART_OPENAI_BASE_URL": "", "RAGMART_OPENAI_DIMENSIONS": ""}
    return project


def _vector_types(project: Project, version: str) -> dict[str, str]:
    return dict(project.query(
        "select table_name, data_type from duckdb_columns() where column_name = 'embedding' "
        "and regexp_matches(table_name, '^fct_chunk_(embeddings|vector_index|vector_delta|"
        f"history)_{version}$')"))


def _sizes(version: str, size: int) -> dict[str, str]:
    return {f"fct_chunk_{t}_{version}": f"FLOAT[{size}]"
            for t in ("embeddings", "vector_index", "vector_delta", "history")}


def _serving(project: Project) -> dict:
    return json.loads((project.workdir / "published" / "serving.json").read_text())


def _retrieved(project: Project) -> dict:
    return json.loads(project.ragmart("retrieve", QUESTION, "--all-groups", "--json").stdout)


def _size_change_is_refused(tmp_path, server: EmbeddingServer, size: int) -> Project:
    """v2, built at 1536 dimensions, asked for the same model at `size`: the same model at
    another size is another model, refused before any node runs. The project at `size`."""
    wider = _openai(tmp_path, server, size)
    before = _touched(wider)
    server.reset()
    refused = wider.build("--vars", "{index_version: v2}", check=False)
    output = _output(refused)
    assert refused.returncode == 2, output[-3000:]
    assert ("index version v2 is bound to chunker md-sections-v1, embedding model "
            "text-embedding-3-small@1536 (1536 dimensions)") in output, output[-3000:]
    assert (f"asks for chunker md-sections-v1, embedding model text-embedding-3-small@{size} "
            f"({size} dimensions)") in output, output[-3000:]
    assert "index_version: v3" in output
    assert _touched(wider) == before and server.requests == []
    assert _vector_types(wider, "v2") == _sizes("v2", 1536)
    return wider


def test_a_1536_version_builds_beside_a_384_one_and_serves_after_publish(
    tmp_path, monkeypatch, built_samples,
):
    small = _hash_v1(tmp_path, built_samples)
    small.ragmart("publish", "v1")
    v1_rows = small.query("select chunk_id, embedding from fct_chunk_embeddings_v1 order by 1")
    with EmbeddingServer() as server:
        big = _openai(tmp_path, server, 1536)
        # the backfill, with the dbt gate against the published 384-dimensional v1
        built = big.build("--vars", V2)
        assert "PASS assert_candidate_does_not_regress" in _output(built), _output(built)[-3000:]
        assert _vector_types(big, "v2") == _sizes("v2", 1536)
        assert _vector_types(big, "v1") == _sizes("v1", 384)
        bindings = big.query("select embedding_model, embedding_dimensions from index_versions "
                             "order by index_version")
        assert bindings == [("hash-384-v1", 384), ("text-embedding-3-small@1536", 1536)]
        # what dbt bound each version to is what its provider embeds with
        assert bindings == [(p.model, p.dimensions) for p in (
            get_provider("hash"), OpenAIProvider(OpenAISettings(dimensions=1536)))]
        assert big.query("select count(*) from duckdb_indexes() "
                         "where index_name = 'fct_chunk_vector_index_v2_hnsw'") == [(1,)]
        # the SQL macro of each version takes a vector of its version's size
        assert dict(big.query(
            "select macro_name, regexp_extract(description, 'float\\[[0-9]+\\]') "
            "from retrieval_sql_macros")) == {
            "ragmart_retrieve_v1": "float[384]", "ragmart_retrieve_v2": "float[1536]"}
        assert big.query("select count(*) from ragmart_retrieve_v2("
                         "(select embedding from fct_chunk_embeddings_v2 limit 1), 3, "
                         "all_groups := true)") == [(3,)]
        # a version's size counts its vectors at its model's size (same chunker, same texts)
        sizes = {v["version"]: v["size_bytes"]
                 for v in json.loads(big.ragmart("versions", "--json").stdout)}
        assert sizes["v2"] - sizes["v1"] == len(v1_rows) * 4 * (1536 - 384)
        # v1 was not touched
        assert big.query("select chunk_id, embedding from fct_chunk_embeddings_v1 "
                         "order by 1") == v1_rows

        # eval --compare across the two sizes: each version embeds the questions by its model
        server.reset()
        compared = json.loads(big.ragmart("eval", "--compare", "v1", "v2", "--json").stdout)
        assert [(r["version"], r["embedding_model"]) for r in compared["reports"]] == [
            ("v1", "hash-384-v1"), ("v2", "text-embedding-3-small@1536")]
        assert compared["gate"]["passed"], compared["gate"]
        assert server.requests and {len(r.inputs) for r in server.requests} != {0}

        # v1 serves: its questions are embedded by the hash model, though this environment's
        # provider is openai, and the server is not asked
        server.reset()
        assert {c["index_version"] for c in _retrieved(big)["results"]} == {"v1"}
        assert server.texts == []

        big.ragmart("publish", "v2")
        assert _serving(big)["version"] == "v2"
        server.reset()
        answer = _retrieved(big)
        assert {c["index_version"] for c in answer["results"]} == {"v2"}
        assert server.texts == [QUESTION]
        assert "hr-travel-expenses" in [c["document_id"] for c in answer["results"]]
        # a long-lived reader of the published v2 holds 1536-dimensional vectors and answers
        # as the command does, whatever provider the environment names for builds
        for name, value in {"RAGMART_DB": str(big.db_path), "RAGMART_EMBEDDING_PROVIDER": "hash",
                            "OPENAI_API_KEY": server.api_key,
                            "RAGMART_OPENAI_BASE_URL": server.base_url}.items():
            monkeypatch.setenv(name, value)
        with Retriever() as reader:
            assert reader.vectors.matrix.shape == (len(v1_rows), 1536)
            held = reader.retrieve(QUESTION, groups=ALL_GROUPS)
        assert [c.chunk_id for c in held] == [c["chunk_id"] for c in answer["results"]]

        # where the openai provider is not configured, v2 cannot embed a question: one line
        # naming the missing setting, the usage exit
        missing = small.ragmart("retrieve", QUESTION, "--all-groups", check=False)
        assert missing.returncode == Exit.USAGE, missing.stderr
        lines = missing.stderr.strip().splitlines()
        assert len(lines) == 1 and "OPENAI_API_KEY is not set" in lines[0], missing.stderr
        assert "to search index version v2" in lines[0], lines[0]
        assert "text-embedding-3-small@1536" in lines[0]
        # the same for an evaluation of v2 (ragmart eval, and publish's gate)
        missing = small.ragmart("eval", "--version", "v2", check=False)
        assert missing.returncode == Exit.USAGE, missing.stderr
        lines = missing.stderr.strip().splitlines()
        assert len(lines) == 1 and "OPENAI_API_KEY is not set" in lines[0], missing.stderr
        assert "to evaluate index version v2" in lines[0], lines[0]

        big.ragmart("rollback")
        # v2 keeps its size: a build of it at another size is refused
        _size_change_is_refused(tmp_path, server, 768)
    assert _serving(small)["version"] == "v1"
    assert {c["index_version"] for c in _retrieved(small)["results"]} == {"v1"}


@pytest.mark.slow  # the fast suite refuses a size change in the 1536 test above
def test_a_version_keeps_its_size_and_a_3072_version_builds_beside(tmp_path, built_samples):
    small = _hash_v1(tmp_path, built_samples)
    with EmbeddingServer() as server:
        _openai(tmp_path, server, 1536).build("--vars", "{index_version: v2}")
        wider = _size_change_is_refused(tmp_path, server, 3072)

        # what the refusal offers: a new version beside, at 3072
        wider.build("--vars", "{index_version: v3, evaluate_retrieval: true}")
        assert _vector_types(wider, "v3") == _sizes("v3", 3072)
        assert _vector_types(wider, "v1") == _sizes("v1", 384)
        compared = json.loads(wider.ragmart("eval", "--compare", "v1", "v3", "--json").stdout)
        assert [r["embedding_model"] for r in compared["reports"]] == [
            "hash-384-v1", "text-embedding-3-small@3072"]
        wider.ragmart("publish", "v3")
        server.reset()
        assert {c["index_version"] for c in _retrieved(wider)["results"]} == {"v3"}
        assert server.texts == [QUESTION]
    assert small.query("select count(*) from fct_chunk_embeddings_v1")[0][0] > 0


def test_a_contract_typed_with_another_size_is_named_before_any_node_runs(tmp_path):
    # the contracts render the provider's size in yml (no macros there), the casts call
    # embedding_dimensions(): were the two rules to drift apart, the build names the contract
    copy = copy_project(tmp_path / "project")
    history = copy / "models" / "marts" / "_marts__history.yml"
    text = history.read_text()
    assert text.count("data_type: \"float[{{") == 1
    history.write_text(re.sub(r'data_type: "float\[\{\{.*\}\}\]"', 'data_type: "float[384]"',
                              text))
    project = Project(tmp_path / "run", provider="openai",
                      extra_env={"RAGMART_OPENAI_DIMENSIONS": "1536", "OPENAI_API_KEY": "unused",
                                 "DBT_PROJECT_DIR": str(copy)})
    project.workdir.mkdir()
    project.land_sample()
    proc = subprocess.run([sys.executable, "-m", "dbt.cli.main", "build"], cwd=copy,
                          env=project.env(), capture_output=True, text=True)
    output = _output(proc)
    assert proc.returncode == 2, output[-3000:]
    assert ("the contract of fct_chunk_history types its embedding column float[384] but the "
            "embedding provider makes float[1536]") in output, output[-3000:]
    assert not re.search(r"START (sql|python) ", output), output[-3000:]


INLINE = "select '{{ embedding_model() }}' as model, {{ embedding_dimensions() }} as dimensions"


# [hash] is a slow variant: the 1536 test above binds v1 to the hash provider's model and
# size through a real build (index_versions, and its contracts typed float[384])
@pytest.mark.parametrize("provider, settings", [
    ("local", {}),
    pytest.param("hash", {}, marks=pytest.mark.slow),
    ("openai", {"RAGMART_OPENAI_MODEL": " text-embedding-3-large ",
                "RAGMART_OPENAI_DIMENSIONS": "3072"}),
], ids=["local", "hash", "openai"])
def test_dbt_names_the_model_and_size_its_provider_embeds_with(tmp_path, monkeypatch, provider,
                                                               settings):
    # the macros ask the provider (one source); the contracts render the size from the settings
    # (yml has no macros): both must say what ragmart.embedding.providers says
    environ = {**dict.fromkeys(("RAGMART_OPENAI_MODEL", "RAGMART_OPENAI_DIMENSIONS",
                                "RAGMART_EMBEDDING_MODEL"), ""), **settings}
    project = Project(tmp_path, provider=provider, extra_env=environ)
    compiled = project.dbt("compile", "--inline", INLINE).stdout
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    expected = get_provider(provider)
    assert f"select '{expected.model}' as model, {expected.dimensions} as dimensions" in compiled
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    contracts = {node["name"]: node["columns"]["embedding"]["data_type"]
                 for node in manifest["nodes"].values()
                 if node["resource_type"] == "model" and "embedding" in node["columns"]
                 and node["config"]["contract"]["enforced"]}
    assert len(contracts) == 4, contracts
    assert set(contracts.values()) == {f"float[{expected.dimensions}]"}, contracts


@pytest.mark.parametrize("provider, settings, message", [
    ("cohere", {}, "unknown embedding provider 'cohere'; supported providers: local, hash, openai"),
    ("openai", {"RAGMART_OPENAI_DIMENSIONS": "wide"},
     "RAGMART_OPENAI_DIMENSIONS must be an integer at least 1, got 'wide'"),
], ids=["provider", "dimensions"])
def test_dbt_fails_with_the_providers_message_for_a_bad_setting(tmp_path, provider, settings,
                                                                message):
    project = Project(tmp_path, provider=provider, extra_env=settings)
    proc = project.dbt("compile", "--inline", INLINE, check=False)
    assert proc.returncode != 0
    assert ("embedding provider (the var embedding_provider, else RAGMART_EMBEDDING_PROVIDER): "
            + message) in proc.stdout, proc.stdout[-3000:]
