"""The dbt project as dbt engineers expect it: layer folders that select SQL and Python models
alike, contracts on the marts (declared, enforced, and a violation fails the build)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from dbt_harness import ROOT, Project, copy_project


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The manifest of one `dbt parse` of the project, read by the tests that only read it."""
    project = Project(tmp_path_factory.mktemp("parse"))
    project.dbt("parse")
    return json.loads((project.workdir / "target" / "manifest.json").read_text())


def _listed(project: Project, *args: str) -> set[str]:
    proc = project.dbt("-q", "ls", "--resource-type", "model", "--output", "name", *args)
    return set(proc.stdout.split())


def test_python_models_mirror_the_layers_and_their_selectors_cover_them(tmp_path) -> None:
    """python_models/<layer>/ mirrors models/<layer>/: `dbt ls -s <layer>` lists the Python models
    of the layer with its SQL models, and the layer's folder config in dbt_project.yml reaches
    them (int_judged_query_embeddings is enabled by the intermediate folder's key for it)."""
    project = Project(tmp_path)
    python_models = sorted((ROOT / "python_models").rglob("*.py"))
    assert python_models, "no Python model found"
    layers: dict[str, set[str]] = {}
    for path in python_models:
        folder = path.parent.relative_to(ROOT / "python_models")
        assert (ROOT / "models" / folder).is_dir(), f"{path}: models/{folder} does not exist"
        layers.setdefault(folder.parts[0], set()).add(path.stem)
    assert set(layers) == {"staging", "intermediate", "marts"}
    for layer, names in layers.items():
        sql_models = {p.stem for p in (ROOT / "models" / layer).rglob("*.sql")}
        listed = _listed(project, "-s", layer, "--vars", "{evaluate_retrieval: true}")
        assert names | sql_models == listed, layer
    off = _listed(project, "-s", "intermediate", "--vars", "{evaluate_retrieval: false}")
    assert "int_judged_query_embeddings" not in off
    assert "int_chunks" in off


def test_every_mart_has_an_enforced_contract_and_primary_key_test(manifest: dict) -> None:
    # dbt enforces contracts on SQL models only (a Python model with one fails to parse)
    marts = [n for n in manifest["nodes"].values()
             if n["resource_type"] == "model" and n["language"] == "sql"
             and n["original_file_path"].startswith("models/marts/")]
    assert {m["name"] for m in marts} >= {"fct_chunk_embeddings", "dim_documents",
                                          "fct_quarantined_events"}
    for mart in marts:
        assert mart["contract"]["enforced"], mart["name"]
        assert all(c.get("data_type") for c in mart["columns"].values()), mart["name"]
    lineage = {"document_id", "document_version", "document_checksum", "chunk_id", "chunk_index",
               "chunker_version", "embedding_model", "created_at", "dbt_invocation_id"}
    serving = next(m for m in marts if m["name"] == "fct_chunk_embeddings")
    assert lineage <= set(serving["columns"])
    for name in lineage:
        constraints = {c["type"] for c in serving["columns"][name]["constraints"]}
        assert "not_null" in constraints, name


def test_a_mart_that_breaks_its_contract_fails_the_build(tmp_path) -> None:
    copy = copy_project(tmp_path / "project")
    mart = copy / "models" / "marts" / "dim_documents.sql"
    mart.write_text(mart.read_text().replace(
        "document_version,", "cast(document_version as varchar) as document_version,", 1))
    project = Project(tmp_path / "run")
    project.landing.mkdir(parents=True)  # an empty landing zone: the mart still builds
    env = project.env() | {"DBT_PROJECT_DIR": str(copy)}
    proc = subprocess.run(
        [sys.executable, "-m", "dbt.cli.main", "build", "--select", "+dim_documents"],
        cwd=copy, env=env, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "contract" in proc.stdout.lower()
    assert "document_version" in proc.stdout


def test_not_null_columns_fails_naming_the_null_columns(tmp_path) -> None:
    copy = copy_project(tmp_path / "project")
    seed = copy / "seeds" / "judged_queries.csv"
    seed.write_text("query_id,question,relevant_document_ids\n"
                    "q1,a question,doc-a\nq2,,doc-b\nq3,another,\n")
    # the seed is built when retrieval is evaluated
    project = Project(tmp_path / "run", extra_env={"RAGMART_EVALUATE_RETRIEVAL": "true"})
    project.workdir.mkdir()
    env = project.env() | {"DBT_PROJECT_DIR": str(copy)}
    proc = subprocess.run(
        [sys.executable, "-m", "dbt.cli.main", "build", "--select", "judged_queries",
         "--store-failures"],
        cwd=copy, env=env, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "not_null_columns_judged_queries" in proc.stdout
    assert "Got 2 results" in proc.stdout
    (table,) = project.query(
        "select table_name from duckdb_tables() where schema_name = 'main_dbt_test__audit' "
        "and table_name like 'not_null_columns%'")[0]
    failures = project.query(f"select null_columns from main_dbt_test__audit.{table} order by 1")
    assert failures == [("question",), ("relevant_document_ids",)]


def test_every_relation_of_a_built_database_is_documented(tmp_path) -> None:
    """Every table and view a build and a publish leave in the database, whether dbt or ragmart
    created it, is a node or a source of the manifest and in the catalog of `dbt docs`; every
    column of every mart is declared and described."""
    project = Project(tmp_path, extra_env={"RAGMART_EVALUATE_RETRIEVAL": "true"})
    project.land_sample()
    project.build()
    project.ragmart("publish", "v1")  # writes published_eval_metrics into the build database
    project.dbt("docs", "generate")
    target = project.workdir / "target"
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())

    def name(node: dict) -> str:
        return node.get("alias") or node.get("identifier") or node["name"]

    declared = {(n["schema"], name(n)): uid for uid, n in
                [*manifest["nodes"].items(), *manifest["sources"].items()]
                if n["resource_type"] in ("model", "seed", "snapshot", "source")}
    relations = project.query(
        "select schema_name, table_name from duckdb_tables() where database_name = 'ragmart' "
        "union all select schema_name, view_name from duckdb_views() "
        "where database_name = 'ragmart' and not internal")
    assert len(relations) > 10
    assert {"embedding_runs", "embedding_cache_pending", "index_versions",
            "published_eval_metrics"} <= {table for _, table in relations}
    # the full-text index of each serving set (schema fts_main_<serving table>): the fts
    # extension's own tables, rebuilt from the serving set (README, "Hybrid retrieval")
    relations = [r for r in relations if not r[0].startswith("fts_main_fct_chunk_embeddings_")]
    undeclared = sorted(r for r in relations if r not in declared)
    assert not undeclared, f"relations neither a node nor a source: {undeclared}"
    in_docs = {**catalog["nodes"], **catalog["sources"]}
    assert not [r for r in relations if declared[r] not in in_docs]

    marts = [(uid, n) for uid, n in manifest["nodes"].items()
             if n["resource_type"] == "model" and n["fqn"][1] == "marts"]
    assert {n["name"] for _, n in marts} >= {"fct_retrieval_eval", "retrieval_sql_macros"}
    for uid, mart in marts:
        built = {c.lower() for c in catalog["nodes"][uid]["columns"]}
        assert built == set(mart["columns"]), mart["name"]
        bare = [c for c, column in mart["columns"].items() if not column["description"].strip()]
        assert not bare, f"{mart['name']}: columns without a description: {bare}"


def test_profile_targets_only_dev_falls_back_to_a_database_in_the_working_directory(
    tmp_path,
) -> None:
    """dev opens ragmart.duckdb in the working directory unless RAGMART_DB names a file; ci and
    prod refuse to start without RAGMART_DB, and open the file it names."""
    env = {k: v for k, v in Project(tmp_path).env().items() if k != "RAGMART_DB"}

    def debug(target: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dbt.cli.main", "debug", "--target", target],
            cwd=tmp_path, env=env | extra, capture_output=True, text=True)

    for target in ("ci", "prod"):
        refused = debug(target)
        assert refused.returncode != 0, target
        assert "RAGMART_DB" in refused.stdout + refused.stderr, target
    assert not list(tmp_path.rglob("*.duckdb"))
    named = debug("prod", RAGMART_DB=str(tmp_path / "prod.duckdb"))
    assert named.returncode == 0, named.stdout[-3000:]
    dev = debug("dev")
    assert dev.returncode == 0, dev.stdout[-3000:]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.duckdb")) == [
        "prod.duckdb", "ragmart.duckdb"]


def test_a_duckdb_only_macro_refuses_another_adapter_naming_itself() -> None:
    """Every default__ of a macro whose SQL only DuckDB runs raises through
    _adapter_not_supported with its own name, and the message names macro and adapter."""
    import jinja2

    class Raised(Exception):
        pass

    def raise_compiler_error(message: str) -> None:
        raise Raised(message)

    env = jinja2.Environment(extensions=["jinja2.ext.do"])
    env.globals.update({
        "adapter": type("Adapter", (), {"type": staticmethod(lambda: "postgres")}),
        "exceptions": type("Exceptions", (), {"raise_compiler_error": staticmethod(
            raise_compiler_error)}),
    })
    helper = (ROOT / "macros" / "_adapter_not_supported.sql").read_text()
    try:
        env.from_string(helper + "{{ _adapter_not_supported('latest_landed_readings') }}").render()
        raise AssertionError("no error raised")
    except Raised as raised:
        message = str(raised)
    assert "latest_landed_readings is not supported on this adapter (postgres)" in message
    assert "postgres__latest_landed_readings" in message

    refusing = re.compile(r"\{% macro default__(\w+)\([^)]*\) %\}\s*"
                          r"\{\{- _adapter_not_supported\('(\w+)'\) -\}\}")
    pairs = [m.groups() for p in sorted((ROOT / "macros").rglob("*.sql"))
             for m in refusing.finditer(p.read_text())]
    assert len(pairs) >= 6
    assert all(default == named for default, named in pairs), pairs
    for default, _ in pairs:
        assert any(f"macro duckdb__{default}(" in p.read_text()
                   for p in (ROOT / "macros").rglob("*.sql")), default


def _readme_relations() -> dict[str, tuple[str, str, str]]:
    """The README's table of what a SQL user may query: relation -> (grain, key, SQL users)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| relation | holds | one row per (key) | SQL users |"):]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        relation, _holds, grain_key, users = (c.strip() for c in line.strip("|").split("|"))
        name = relation.split("`")[1].removesuffix("_<v>")
        grain, _, keys = grain_key.partition(" (")
        rows[name] = (grain, ", ".join(re.findall(r"`([^`]+)`", keys)), users)
    return rows


def test_dbt_docs_and_the_readme_give_every_relation_its_grain_key_and_audience(
    manifest: dict,
) -> None:
    """Every model and every ragmart source table carries meta grain, key and sql_users
    (shown by `dbt docs`), and they are the README's words for it, row for row."""
    documented = {}
    disabled = [node for nodes in manifest["disabled"].values() for node in nodes]  # evaluation
    for node in [*manifest["nodes"].values(), *manifest["sources"].values(), *disabled]:
        if node["resource_type"] == "model" or (
                node["resource_type"] == "source" and node["source_name"] == "ragmart"):
            meta = node["config"].get("meta") or node.get("meta") or {}
            documented[node["name"]] = (meta.get("grain"), meta.get("key"), meta.get("sql_users"))
    assert len(documented) > 15
    missing = sorted(name for name, meta in documented.items() if None in meta)
    assert not missing, f"relations without meta grain/key/sql_users: {missing}"
    readme = _readme_relations()
    only_in_snapshots = {"published_snapshot_marks"}  # never in the build database dbt sees
    assert set(readme) - only_in_snapshots == set(documented)
    assert {name: readme[name] for name in documented} == documented
