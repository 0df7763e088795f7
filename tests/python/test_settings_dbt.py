"""Every setting is honoured: each row of the README's settings table reaches the code that reads
it, through a real `dbt build` (or the CLI, for the settings only the CLI reads).

The README table is the one list. This module parses it, and fails when a `RAGMART_*` variable
or a dbt `var()` used in the code has no row, when a row has no check here, or when a default
written in the table differs from the one in the code. Each row is its own test id.

The builds are shared (module-scoped, each built once when a check first needs it) and set
every setting to a value other than its default, so a setting that does not arrive shows:

* build "vars": every dbt var set with `--vars`, and the environment variable each mirrors set
  to a decoy that would break the build or show in the data if it won (the var must win);
* build "env": the environment alone, with the openai provider against the local
  OpenAI-compatible server (tests/python/openai_server.py), whose requests are recorded;
* two tiny runs for the settings that end a build (a fault-injection kill, an invalid
  RAGMART_ONNX_THREADS).

Both builds' landing directories and the env build's database have awkward paths (quotes,
spaces, braces, `$`, `%`, non-ASCII, a component starting with `-`): a value that reaches SQL
must arrive quoted.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
import yaml
from cdc_files import debezium_jsonl, dms_csv, document, paragraph
from dbt_harness import ROOT, Project
from openai_server import EmbeddingServer, Reply

# ============================================================================ the table

SETTINGS_HEADING = "### Settings: environment variables and dbt vars"
CODE_DIRS = ("ragmart", "python_models", "models", "macros", "tests/dbt")
CODE_FILES = ("dbt_project.yml", "profiles.yml")


@dataclass(frozen=True)
class Row:
    name: str
    default: str
    meaning: str


def settings_table() -> dict[str, Row]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SETTINGS_HEADING in text, f"README.md lost its section {SETTINGS_HEADING!r}"
    section = text.split(SETTINGS_HEADING, 1)[1].split("\n#", 1)[0]
    rows: dict[str, Row] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        name = cells[0].strip("`")
        assert name not in rows, f"README settings table: {name} twice"
        rows[name] = Row(name, cells[1], cells[2])
    return rows


def _code_files() -> list[Path]:
    files = [ROOT / name for name in CODE_FILES]
    for folder in CODE_DIRS:
        files += [p for p in sorted((ROOT / folder).rglob("*"))
                  if p.suffix in (".py", ".sql", ".yml", ".json") and "__pycache__" not in p.parts]
    return files


ENV_NAME = re.compile(r"\bRAGMART_[A-Z0-9_]*[A-Z0-9]\b")
VAR_USE = re.compile(r"""\bvar\(\s*['"]([a-z_][a-z0-9_]*)['"]\s*([,)~])""")


def names_in_code() -> tuple[set[str], set[str]]:
    """(names used, name prefixes used: `var('eval_tolerance_' ~ metric)`)."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        names |= set(ENV_NAME.findall(text))
        if path.suffix in (".sql", ".yml"):
            for name, after in VAR_USE.findall(text):
                (prefixes if after == "~" else names).add(name)
    names |= set((yaml.safe_load((ROOT / "dbt_project.yml").read_text())["vars"]).keys())
    return names, prefixes


def code_defaults() -> dict[str, str]:
    """Defaults written in the code: dbt_project.yml vars, literal var()/env_var() defaults,
    os.environ.get("RAGMART_...", "...")."""
    found: dict[str, set[str]] = {}
    for name, value in yaml.safe_load((ROOT / "dbt_project.yml").read_text())["vars"].items():
        found.setdefault(name, set()).add(str(value))
    literal = r"""\s*,\s*(?:'([^']*)'|"([^"]*)"|([0-9.]+))\s*\)"""
    patterns = [re.compile(r"\b(?:env_)?var\(\s*'([A-Za-z_][A-Za-z0-9_]*)'" + literal),
                re.compile(r"""os\.environ\.get\(\s*"(RAGMART_[A-Z0-9_]+)\"""" + literal)]
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            for name, *values in pattern.findall(text):
                found.setdefault(name, set()).add(next(v for v in values if v != "") if any(
                    values) else "")
    conflicting = {n: v for n, v in found.items() if len(v) > 1}
    assert not conflicting, f"one setting, several defaults in the code: {conflicting}"
    return {name: values.pop() for name, values in found.items()}


def test_every_setting_in_the_code_has_a_row_and_every_row_a_check() -> None:
    rows = settings_table()
    names, prefixes = names_in_code()
    missing = sorted(names - set(rows))
    assert not missing, f"settings used in the code but not in the README table: {missing}"
    for prefix in prefixes:
        assert any(r.startswith(prefix) for r in rows), f"no README row for {prefix}<...>"
    unchecked = sorted(set(rows) - set(CHECKS))
    assert not unchecked, f"README settings without a check in this module: {unchecked}"
    stale = sorted(set(CHECKS) - set(rows))
    assert not stale, f"checks for settings the README no longer lists: {stale}"


def test_the_table_states_the_defaults_the_code_uses() -> None:
    rows = settings_table()
    wrong = {}
    for name, default in code_defaults().items():
        if name not in rows or default == "":
            continue  # not in the table: the test above names it; '': "unset", see its row
        written = rows[name].default
        if not (written == f"`{default}`" or written.startswith(f"`{default}` ")):
            wrong[name] = (written, default)
    assert not wrong, f"README default differs from the code's (README, code): {wrong}"


# ============================================================================ the builds


class AwkwardProject(Project):
    """A scratch deployment whose landing dir and database have hostile paths."""

    def __init__(self, workdir: Path, landing_name: str, db_name: str = "ragmart.duckdb",
                 **kwargs: object) -> None:
        super().__init__(workdir, **kwargs)  # type: ignore[arg-type]
        self.landing_name = landing_name
        self.db_name = db_name

    @property
    def landing(self) -> Path:
        return self.workdir / self.landing_name

    @property
    def db_path(self) -> Path:
        return self.workdir / self.db_name


BIG = 100_000  # max_content_bytes in both builds (default 1,000,000)
OPENAI_KEY = "sk-test-settings-3d1c"
PRICE = 1234.5  # USD per 1M tokens of text-embedding-3-large in the env build's price table
HIGH_BASELINE = {"recall_at_5": 1.0, "mrr": 1.0, "ndcg_at_10": 1.0}


def land_corpus(project: Project) -> None:
    def doc(name: str, n: int) -> str:
        return document(name.title(), {"Rules": [paragraph(name, i) for i in range(n)]})

    # one "word" of 30,000 bytes: a chunk over the API's 8191 tokens (estimated bytes / 3)
    long_word = "x" * 30_000
    project.land("dms/0001_docs.csv", dms_csv([
        {"op": "I", "seq": 10, "document_id": "alpha", "content": doc("alpha", 4)},
        {"op": "I", "seq": 11, "document_id": "huge", "content": doc("huge", 1) + "y" * (BIG + 1)},
        {"op": "I", "seq": 12, "document_id": "long", "content": f"# Long\n\n{long_word}\n"},
        {"op": "I", "seq": 13, "document_id": "purged-doc", "content": doc("purged", 2)},
    ]))
    project.land("debezium/0002_docs.jsonl", debezium_jsonl([
        {"op": "c", "seq": 20, "document_id": "bravo", "content": doc("bravo", 3)},
    ]))


@dataclass
class Build:
    project: Project
    procs: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    server: EmbeddingServer | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def query(self, sql: str) -> list[tuple]:
        return self.project.query(sql)

    def manifest(self) -> dict:
        return json.loads((self.project.workdir / "target" / "manifest.json").read_text())

    def compiled_config(self, model: str) -> dict:
        """The config dict dbt wrote into the compiled Python model: what the model sees."""
        path = next((self.project.workdir / "target" / "compiled").rglob(f"{model}.py"))
        match = re.search(r"^config_dict = (\{.*\})$", path.read_text(), re.MULTILINE)
        assert match, f"no config_dict in {path}"
        return ast.literal_eval(match.group(1))

    def results(self, name: str) -> dict[str, str]:
        """Status by node name of one invocation's run_results."""
        return self.extra[f"results:{name}"]  # type: ignore[return-value]


def _vars(values: dict) -> str:
    return json.dumps(values)


def _run(build: Build, name: str, *args: str) -> subprocess.CompletedProcess:
    path = build.project.workdir / "target" / "run_results.json"
    path.unlink(missing_ok=True)
    proc = build.project.dbt(*args, check=False)
    build.procs[name] = proc
    results = json.loads(path.read_text()) if path.exists() else {"results": []}
    build.extra[f"results:{name}"] = {
        r["unique_id"].split(".")[-1] if r["unique_id"].startswith("model.")
        else r["unique_id"].split(".")[2]: r["status"] for r in results["results"]}
    return proc


VARS_BUILD = {
    "embedding_provider": "hash",
    "embedding_model": "hash-384-v1",
    "max_content_bytes": BIG,
    "evaluate_retrieval": True,
    "index_version": "v7",
    "chunker_version": "md-sections-v2",
    "source_freshness_warn_after_hours": 5,
    "source_freshness_error_after_hours": 9,
    "embedding_lag_sla_minutes": 100_000_000,
    "embedding_lag_sla_severity": "error",
    "eval_baseline": HIGH_BASELINE,
    "max_clock_skew_minutes": 4321,
}
COMPACTION_VARS = {
    "vector_index_max_dead_ratio": 0.77,
    "vector_delta_max_rows": -1,
    "vector_delta_max_ratio": 0.66,
    "lexical_index_max_dead_ratio": 0.55,
    "lexical_delta_max_rows": -1,
    "lexical_delta_max_ratio": 0.44,
}


@pytest.fixture(scope="module")
def vars_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Every dbt var set; each mirrored environment variable set to a decoy that must lose."""
    workdir = tmp_path_factory.mktemp("vars")
    decoy = workdir / "decoy"
    project = AwkwardProject(workdir, 'landing "v" $HOME %d', extra_env={
        "RAGMART_LANDING_DIR": str(decoy),
        "RAGMART_EMBEDDING_PROVIDER": "openai",  # would fail at once: nothing listens there
        "RAGMART_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-never-used",
        "RAGMART_OPENAI_MAX_RETRIES": "0",
        "RAGMART_EMBEDDING_MODEL": "decoy-model",  # would fail: not the provider's model
        "RAGMART_MAX_CONTENT_BYTES": "50",  # would quarantine every document
        "RAGMART_EVALUATE_RETRIEVAL": "false",
        "RAGMART_MAX_CLOCK_SKEW_MINUTES": "-5",  # would fail the build: not a number >= 0
    })
    land_corpus(project)
    (decoy / "dms").mkdir(parents=True)
    (decoy / "dms" / "0001_decoy.csv").write_text(dms_csv([
        {"op": "I", "seq": 1, "document_id": "decoy", "content": "# Decoy\n\nnot here\n"}]))
    build = Build(project)
    landing = {"landing_dir": str(project.landing)}
    _run(build, "build", "build", "--vars", _vars({**VARS_BUILD, **landing}))
    # a second, incremental run of the vector index and the regression test: compaction
    # thresholds, and the published-metrics relation (eval_baseline unset)
    conn = duckdb.connect(str(project.db_path))
    conn.execute("create table probe_metrics (metric varchar, metric_value double, "
                 "publish_seq integer)")
    conn.executemany("insert into probe_metrics values (?, 1.0, 1)", [[m] for m in HIGH_BASELINE])
    conn.close()
    second = {k: v for k, v in VARS_BUILD.items() if k != "eval_baseline"}
    _run(build, "index", "build", "-s", "fct_chunk_vector_index", "fct_chunk_vector_delta",
         "assert_candidate_does_not_regress", "--vars",
         _vars({**second, **landing, **COMPACTION_VARS, "eval_baseline_relation": "probe_metrics"}))
    return build


ENV_BUILD_VARS = {
    "index_version": "v3",
    "eval_baseline": HIGH_BASELINE,
    "eval_tolerance_recall_at_5": 1.0,
    "eval_tolerance_mrr": 1.0,
    "eval_tolerance_ndcg_at_10": 1.0,
}


@pytest.fixture(scope="module")
def env_build(tmp_path_factory: pytest.TempPathFactory):
    """The environment alone (openai against the local server), then the CLI's settings."""
    workdir = tmp_path_factory.mktemp("env")
    with EmbeddingServer(api_key=OPENAI_KEY) as server:
        prices = workdir / "prices.json"
        prices.write_text(json.dumps(
            {"prices": {"openai": {"text-embedding-3-large": PRICE}}}))
        registry = workdir / "purged registry.json"
        registry.write_text(json.dumps({"purged-doc": 999}))
        contracts = workdir / "probe contracts.yml"
        contracts.write_text(
            "version: 1\ncontracts:\n  settings_probe:\n    document_types: [policy]\n")
        project = AwkwardProject(
            workdir, "-it's a {x} é 空", db_name="it's the db.duckdb", provider="openai",
            extra_env={
                "OPENAI_API_KEY": OPENAI_KEY,
                "RAGMART_OPENAI_BASE_URL": server.base_url,
                "RAGMART_OPENAI_MODEL": "text-embedding-3-large",
                "RAGMART_OPENAI_DIMENSIONS": "256",
                "RAGMART_OPENAI_LONG_TEXT": "split",
                "RAGMART_OPENAI_BATCH_SIZE": "3",
                "RAGMART_OPENAI_MAX_CONCURRENCY": "1",
                "RAGMART_OPENAI_MAX_RETRIES": "7",
                "RAGMART_OPENAI_BACKOFF_BASE": "0.05",
                "RAGMART_OPENAI_BACKOFF_MAX": "0.4",
                "RAGMART_OPENAI_TIMEOUT": "0.3",
                "RAGMART_OPENAI_ENCODING_FORMAT": "float",
                "RAGMART_PRICE_TABLE": str(prices),
                "RAGMART_PURGE_REGISTRY": str(registry),
                "RAGMART_EMBEDDING_MODEL": "text-embedding-3-large@256",
                "RAGMART_MAX_CONTENT_BYTES": str(BIG),
                "RAGMART_EVALUATE_RETRIEVAL": "true",
                "RAGMART_INDEX_VERSION": "v3",
                "RAGMART_CONTRACTS": str(contracts),
                "RAGMART_EMBEDDING_LAG_SLA_MINUTES": "7",
                "RAGMART_PUBLISH_DIR": str(workdir / "it's snapshots"),
                "RAGMART_MAX_CLOCK_SKEW_MINUTES": "2880",
            })
        land_corpus(project)
        # the first request: a timeout (1 s > 0.3 s), then six 500s; the 8th attempt
        # succeeds only with 7 retries. Then slow answers: with concurrency > 1 they overlap.
        server.script(Reply(delay=1.0), *[Reply(500)] * 6, Reply(), *[Reply(delay=0.1)] * 4)
        build = Build(project, server=server)
        _run(build, "build", "build", "--vars", _vars(ENV_BUILD_VARS))
        build.procs["retrieve"] = project.ragmart(
            "retrieve", "alpha rule", "--contract", "settings_probe", "--all-groups", "--json",
            check=False)
        build.procs["freshness"] = project.ragmart("freshness", "--json", check=False)
        build.procs["publish"] = project.ragmart("publish", "v3", "--force", check=False)
        # the CLI's serving settings: the freshness SLA, the Retriever's recheck interval, and
        # the build's publish switch (a value that is not a boolean ends the build at once)
        with _env(project, "RAGMART_SERVING_SLA_SECONDS", "12.5"):
            build.procs["RAGMART_SERVING_SLA_SECONDS"] = project.ragmart(
                "freshness", "--json", check=False)
        with _env(project, "RAGMART_SERVING_RECHECK_SECONDS", "7.25"):
            build.procs["RAGMART_SERVING_RECHECK_SECONDS"] = subprocess.run(
                [sys.executable, "-c", "from ragmart.retrieval.api import Retriever\n"
                 "with Retriever() as r: print(r._recheck)"],
                cwd=ROOT, env=project.env(), capture_output=True, text=True)
        with _env(project, "RAGMART_BUILD_PUBLISH", "sometimes"):
            build.procs["RAGMART_BUILD_PUBLISH"] = project.ragmart(
                "build", "--max-builds", "1", check=False)
        # a "build" holding the database: publish waits RAGMART_LOCK_WAIT_SECONDS, then gives up
        held = duckdb.connect(str(project.db_path))
        try:
            with _env(project, "RAGMART_LOCK_WAIT_SECONDS", "0.75"):
                build.procs["publish_locked"] = project.ragmart("publish", "v3", "--force",
                                                                check=False)
        finally:
            held.close()
        yield build


@contextlib.contextmanager
def _env(project: Project, name: str, value: str) -> Iterator[None]:
    """`name=value` in the project's environment for the commands run inside the block."""
    project.extra_env[name] = value
    try:
        yield
    finally:
        del project.extra_env[name]


@pytest.fixture(scope="module")
def kill_run(tmp_path_factory: pytest.TempPathFactory) -> Build:
    workdir = tmp_path_factory.mktemp("kill")
    log = workdir / "faults.log"
    project = Project(workdir, extra_env={"RAGMART_KILL_AT": "ingest_done",
                                          "RAGMART_FAULT_LOG": str(log)})
    land_corpus(project)
    build = Build(project, extra={"log": log})
    build.procs["run"] = project.dbt("run", "-s", "stg_landing__document_events", check=False)
    return build


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory: pytest.TempPathFactory) -> Build:
    workdir = tmp_path_factory.mktemp("onnx")
    project = Project(workdir, provider="local", extra_env={"RAGMART_ONNX_THREADS": "0"})
    land_corpus(project)
    build = Build(project)
    build.procs["run"] = project.dbt("run", "-s", "+int_chunk_embeddings", check=False)
    return build


# ============================================================================ the checks

Check = tuple[str, Callable[[Build], None]]


def documents(build: Build) -> set[str]:
    return {r[0] for r in build.query("select document_id from dim_documents")}


def quarantined(build: Build) -> dict[str, str]:
    return {doc: code for doc, code in build.query(
        "select coalesce(document_id, ''), quarantine_code from fct_quarantined_events")}


def run_row(build: Build) -> dict:
    return build.project.last_run()


def first_request_attempts(build: Build) -> list:
    requests = build.server.requests
    first = requests[0].inputs
    attempts = [r for r in requests[:9] if r.inputs == first]
    return attempts


# ---- the vars build: each var reached, and beat the variable it mirrors


def _db(b: Build) -> None:
    assert b.procs["build"].returncode == 0, b.procs["build"].stdout[-3000:]
    assert b.project.db_path.is_file() and "'" in b.project.db_path.name
    assert {"alpha", "bravo"} <= documents(b)


def _landing_env(b: Build) -> None:
    assert {"alpha", "bravo", "long"} <= documents(b)
    files = {r[0] for r in b.query("select distinct source_file from stg_landing__document_events")}
    assert files == {"dms/0001_docs.csv", "debezium/0002_docs.jsonl"}


def _landing_var(b: Build) -> None:
    assert {"alpha", "bravo"} <= documents(b) and "decoy" not in documents(b)


def _provider_env(b: Build) -> None:
    assert run_row(b)["provider"] == "openai" and b.server.requests


def _provider_var(b: Build) -> None:
    assert run_row(b)["provider"] == "hash"


def _model_env(b: Build) -> None:
    assert b.compiled_config("int_chunk_embeddings")["embedding_model"] == \
        "text-embedding-3-large@256"
    assert {r[0] for r in b.query("select distinct embedding_model from fct_chunk_embeddings_v3")} \
        == {"text-embedding-3-large@256"}


def _model_var(b: Build) -> None:
    assert b.compiled_config("int_chunk_embeddings")["embedding_model"] == "hash-384-v1"


def _max_bytes(b: Build) -> None:
    assert quarantined(b).get("huge") == "content_too_large"
    assert {"alpha", "bravo", "long"} <= documents(b)
    assert str(b.compiled_config("stg_landing__document_events")["max_content_bytes"]) == str(BIG)


def _clock_skew(minutes: int) -> Callable[[Build], None]:
    def check(b: Build) -> None:
        config = b.compiled_config("stg_landing__document_events")
        assert str(config["max_clock_skew_minutes"]) == str(minutes)
        assert {"alpha", "bravo"} <= documents(b)
    return check


def _serving_sla(b: Build) -> None:
    proc = b.procs["RAGMART_SERVING_SLA_SECONDS"]
    assert json.loads(proc.stdout)["serving"]["serving_lag"]["sla_seconds"] == 12.5, proc.stderr


def _recheck(b: Build) -> None:
    proc = b.procs["RAGMART_SERVING_RECHECK_SECONDS"]
    assert proc.returncode == 0 and proc.stdout.strip() == "7.25", proc.stderr[-3000:]


def _build_publish(b: Build) -> None:
    proc = b.procs["RAGMART_BUILD_PUBLISH"]
    assert proc.returncode == 2 and "RAGMART_BUILD_PUBLISH='sometimes'" in proc.stderr, \
        proc.stderr[-3000:]


def _lock_wait(b: Build) -> None:
    proc = b.procs["publish_locked"]
    assert proc.returncode == 2, proc.stderr
    assert "stayed locked" in proc.stderr and "for 0.75 s" in proc.stderr, proc.stderr


def _evaluate(b: Build) -> None:
    assert b.results("build").get("fct_retrieval_eval") == "success"


def _dimensions(b: Build) -> None:
    assert b.query("select data_type from information_schema.columns where table_name = "
                   "'fct_chunk_embeddings_v3' and column_name = 'embedding'") == [("FLOAT[256]",)]


def _openai_and_table_dimensions(b: Build) -> None:
    _openai_dimensions(b)
    _dimensions(b)  # the version's vectors have the provider's size, contracts included


def _index_version_var(b: Build) -> None:
    assert b.query("select count(*) from information_schema.tables "
                   "where table_name = 'fct_chunk_embeddings_v7'")[0][0] == 1
    assert not b.query("select * from information_schema.tables where table_name like '%_v1'")


def _chunker(b: Build) -> None:
    assert {r[0] for r in b.query("select distinct chunker_version from int_chunks")} == \
        {"md-sections-v2"}


def _compaction(name: str, value: object) -> Callable[[Build], None]:
    def check(b: Build) -> None:
        out = b.procs["index"].stdout
        line = next((x for x in out.splitlines() if "ragmart: vector index" in x), "")
        assert f"{name} {value}" in line, out[-3000:]
        assert "compacting" in out  # vector_delta_max_rows -1: every build compacts
    return check


def _lexical(name: str, value: object) -> Callable[[Build], None]:
    def check(b: Build) -> None:
        out = b.procs["index"].stdout
        line = next((x for x in out.splitlines() if "ragmart: full-text index" in x), "")
        assert f"{name} {value}" in line, out[-3000:]
        assert line.endswith("yes"), line  # lexical_delta_max_rows -1: every build rebuilds
    return check


def _freshness(key: str, hours: int) -> Callable[[Build], None]:
    def check(b: Build) -> None:
        source = b.manifest()["sources"]["source.ragmart.landing.dms_files"]
        assert source["freshness"][key]["count"] == hours
    return check


def _sla(b: Build) -> None:
    # 1440 minutes at severity error would fail: the sample's commits are weeks old
    assert b.results("build").get("assert_embedding_lag_within_sla") == "pass"


def _severity(b: Build) -> None:
    tests = [n for n in b.manifest()["nodes"].values()
             if n["name"] == "assert_embedding_lag_within_sla"]
    assert [t["config"]["severity"].lower() for t in tests] == ["error"]


def _baseline(b: Build) -> None:
    assert b.results("build").get("assert_candidate_does_not_regress") == "fail"


def _baseline_relation(b: Build) -> None:
    assert b.results("index").get("assert_candidate_does_not_regress") == "fail"
    assert "probe_metrics" in b.procs["index"].stdout


def _tolerance(b: Build) -> None:
    # the env build: a baseline of 1.0 everywhere, tolerances 1.0: the test passes
    assert b.results("build").get("assert_candidate_does_not_regress") == "pass"


# ---- the env build's openai settings


def _api_key(b: Build) -> None:
    assert {r.headers.get("authorization") for r in b.server.requests} == {f"Bearer {OPENAI_KEY}"}


def _base_url(b: Build) -> None:
    assert b.server.requests and all(r.path == "/v1/embeddings" for r in b.server.requests)


def _openai_model(b: Build) -> None:
    assert {r.body.get("model") for r in b.server.requests} == {"text-embedding-3-large"}


def _openai_dimensions(b: Build) -> None:
    assert {r.body.get("dimensions") for r in b.server.requests} == {256}


def _long_text(b: Build) -> None:
    assert ("split",) in b.query("select distinct long_text_policy_applied "
                                 "from int_chunk_embeddings")


def _batch_size(b: Build) -> None:
    sizes = [len(r.inputs) for r in b.server.requests]
    assert max(sizes) == 3, sizes


def _concurrency(b: Build) -> None:
    # after the retried first request: the slow answers never overlapped
    assert [r.in_flight_at_arrival for r in b.server.requests[8:]] == \
        [1] * len(b.server.requests[8:])


def _max_retries(b: Build) -> None:
    assert len(first_request_attempts(b)) == 8  # 1 + 7 retries (the default allows 6)
    assert b.procs["build"].returncode == 0


def _timeout(b: Build) -> None:
    # the first attempt's answer came after 1 s: abandoned at 0.3 s and retried
    assert len(first_request_attempts(b)) == 8


def _gaps(b: Build) -> list[float]:
    attempts = first_request_attempts(b)
    return [later.received_at - earlier.received_at
            for earlier, later in zip(attempts, attempts[1:], strict=False)]


def _backoff_base(b: Build) -> None:
    # after the 2nd attempt: 0.05 * 2 = 0.1 s, jittered to [0.05, 0.1] (default base 1 s,
    # capped by the max 0.4: at least 0.2 s)
    assert _gaps(b)[1] < 0.19, _gaps(b)


def _backoff_max(b: Build) -> None:
    # after the 7th attempt: 0.05 * 2**6 = 3.2 s, capped at 0.4 (uncapped: at least 1.6 s)
    assert _gaps(b)[6] < 1.0, _gaps(b)


def _encoding(b: Build) -> None:
    assert {r.body.get("encoding_format") for r in b.server.requests} == {"float"}


def _price_table(b: Build) -> None:
    run = run_row(b)
    assert run["estimated_cost_usd"] == pytest.approx(run["approx_tokens"] * PRICE / 1e6)
    assert run["estimated_cost_usd"] > 0


def _purge_registry(b: Build) -> None:
    assert "purged-doc" not in documents(b) and "alpha" in documents(b)


def _index_version_env(b: Build) -> None:
    # the only index is v3: read as v1 (the default), retrieve fails naming the missing table
    proc = b.procs["retrieve"]
    assert proc.returncode in (0, 3), proc.stderr
    assert json.loads(proc.stdout)["question"] == "alpha rule"


def _contracts(b: Build) -> None:
    # settings_probe is only in the file RAGMART_CONTRACTS names: else an unknown contract
    proc = b.procs["retrieve"]
    assert proc.returncode in (0, 3), proc.stderr
    assert "settings_probe" not in proc.stderr


def _sla_env(b: Build) -> None:
    proc = b.procs["freshness"]
    assert json.loads(proc.stdout)["sla_minutes"] == 7, proc.stderr


def _publish_dir(b: Build) -> None:
    proc = b.procs["publish"]
    assert proc.returncode == 0, proc.stderr
    assert list((b.project.workdir / "it's snapshots").glob("v3-*.duckdb"))


def _kill(b: Build) -> None:
    assert b.procs["run"].returncode != 0


def _fault_log(b: Build) -> None:
    assert b.extra["log"].read_text() == "ingest_done 1\n"  # type: ignore[union-attr]


def _onnx(b: Build) -> None:
    proc = b.procs["run"]
    assert proc.returncode != 0 and "RAGMART_ONNX_THREADS" in proc.stdout, proc.stdout[-3000:]



# --------------------------------------------------------------------------- the S3 landing zone


@pytest.fixture(scope="module")
def s3_build(tmp_path_factory: pytest.TempPathFactory, s3_server) -> Build:
    """A build and `dbt source freshness` from an S3 landing zone, through a recording proxy:
    RAGMART_S3_ENDPOINT is the proxy, RAGMART_S3_URL_STYLE=path and RAGMART_S3_USE_SSL=false
    differ from their defaults (vhost and TLS would not reach a plain-HTTP loopback server)."""
    from s3_landing import S3Project, new_bucket
    from s3_proxy import FaultProxy

    project = S3Project(tmp_path_factory.mktemp("s3"), server=s3_server,
                        bucket=new_bucket(s3_server))
    project.land("dms/0001_docs.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": "alpha", "content": "# Alpha\n\nalpha body\n"}]))
    build = Build(project)
    with FaultProxy(s3_server.host, s3_server.port) as proxy:
        project.endpoint = proxy.endpoint
        _run(build, "build", "build", "--select", "stg_landing__document_events")
        build.extra["build requests"] = list(proxy.requests)
        proxy.requests.clear()
        build.procs["freshness"] = project.dbt("source", "freshness", check=False)
        build.extra["freshness requests"] = list(proxy.requests)
    build.extra["proxy"] = proxy.endpoint
    return build


def _s3_documents(b: Build) -> set[str]:
    return {r[0] for r in b.query("select document_id from stg_landing__document_events")}


def _s3_requests(b: Build) -> list[tuple[str, str, str]]:
    return b.extra["build requests"] + b.extra["freshness requests"]  # type: ignore[operator]


def _s3_endpoint(b: Build) -> None:
    # ingestion (boto3) and the sources' read_blob (httpfs) both went to the endpoint set
    assert _s3_documents(b) == {"alpha"}
    assert b.extra["build requests"] and b.extra["freshness requests"]
    assert "PASS freshness of landing.dms_files" in b.procs["freshness"].stdout


def _s3_url_style(b: Build) -> None:
    bucket = b.project.bucket  # type: ignore[attr-defined]
    assert all(path.startswith(f"/{bucket}") and not host.startswith(bucket)
               for _, host, path in _s3_requests(b))


def _s3_use_ssl(b: Build) -> None:
    # the proxy speaks plain HTTP: a TLS handshake would have reached it as an unreadable request
    assert all(host == b.extra["proxy"] for _, host, _ in _s3_requests(b))
    assert _s3_documents(b) == {"alpha"}


CHECKS: dict[str, tuple[str, Callable[[Build], None]]] = {
    "RAGMART_DB": ("env_build", _db),
    "RAGMART_LANDING_DIR": ("env_build", _landing_env),
    "RAGMART_EMBEDDING_PROVIDER": ("env_build", _provider_env),
    "RAGMART_EMBEDDING_MODEL": ("env_build", _model_env),
    "RAGMART_MAX_CONTENT_BYTES": ("env_build", _max_bytes),
    "RAGMART_EVALUATE_RETRIEVAL": ("env_build", _evaluate),
    "RAGMART_ONNX_THREADS": ("onnx_run", _onnx),
    "OPENAI_API_KEY": ("env_build", _api_key),
    "RAGMART_OPENAI_MODEL": ("env_build", _openai_model),
    "RAGMART_OPENAI_DIMENSIONS": ("env_build", _openai_and_table_dimensions),
    "RAGMART_OPENAI_BASE_URL": ("env_build", _base_url),
    "RAGMART_OPENAI_LONG_TEXT": ("env_build", _long_text),
    "RAGMART_OPENAI_BATCH_SIZE": ("env_build", _batch_size),
    "RAGMART_OPENAI_MAX_CONCURRENCY": ("env_build", _concurrency),
    "RAGMART_OPENAI_MAX_RETRIES": ("env_build", _max_retries),
    "RAGMART_OPENAI_BACKOFF_BASE": ("env_build", _backoff_base),
    "RAGMART_OPENAI_BACKOFF_MAX": ("env_build", _backoff_max),
    "RAGMART_OPENAI_TIMEOUT": ("env_build", _timeout),
    "RAGMART_OPENAI_ENCODING_FORMAT": ("env_build", _encoding),
    "RAGMART_PRICE_TABLE": ("env_build", _price_table),
    "RAGMART_PURGE_REGISTRY": ("env_build", _purge_registry),
    "RAGMART_CONTRACTS": ("env_build", _contracts),
    "RAGMART_INDEX_VERSION": ("env_build", _index_version_env),
    "RAGMART_PUBLISH_DIR": ("env_build", _publish_dir),
    "RAGMART_EMBEDDING_LAG_SLA_MINUTES": ("env_build", _sla_env),
    "RAGMART_MAX_CLOCK_SKEW_MINUTES": ("env_build", _clock_skew(2880)),
    "RAGMART_LOCK_WAIT_SECONDS": ("env_build", _lock_wait),
    "RAGMART_SERVING_SLA_SECONDS": ("env_build", _serving_sla),
    "RAGMART_SERVING_RECHECK_SECONDS": ("env_build", _recheck),
    "RAGMART_BUILD_PUBLISH": ("env_build", _build_publish),
    "RAGMART_KILL_AT": ("kill_run", _kill),
    "RAGMART_FAULT_LOG": ("kill_run", _fault_log),
    "landing_dir": ("vars_build", _landing_var),
    "RAGMART_S3_ENDPOINT": ("s3_build", _s3_endpoint),
    "RAGMART_S3_URL_STYLE": ("s3_build", _s3_url_style),
    "RAGMART_S3_USE_SSL": ("s3_build", _s3_use_ssl),
    "embedding_provider": ("vars_build", _provider_var),
    "embedding_model": ("vars_build", _model_var),
    "max_content_bytes": ("vars_build", _max_bytes),
    "max_clock_skew_minutes": ("vars_build", _clock_skew(4321)),
    "evaluate_retrieval": ("vars_build", _evaluate),
    "index_version": ("vars_build", _index_version_var),
    "chunker_version": ("vars_build", _chunker),
    "vector_index_max_dead_ratio": ("vars_build", _compaction("vector_index_max_dead_ratio", 0.77)),
    "vector_delta_max_rows": ("vars_build", _compaction("vector_delta_max_rows", -1)),
    "vector_delta_max_ratio": ("vars_build", _compaction("vector_delta_max_ratio", 0.66)),
    "lexical_index_max_dead_ratio": ("vars_build",
                                     _lexical("lexical_index_max_dead_ratio", 0.55)),
    "lexical_delta_max_rows": ("vars_build", _lexical("lexical_delta_max_rows", -1)),
    "lexical_delta_max_ratio": ("vars_build", _lexical("lexical_delta_max_ratio", 0.44)),
    "source_freshness_warn_after_hours": ("vars_build", _freshness("warn_after", 5)),
    "source_freshness_error_after_hours": ("vars_build", _freshness("error_after", 9)),
    "embedding_lag_sla_minutes": ("vars_build", _sla),
    "embedding_lag_sla_severity": ("vars_build", _severity),
    "eval_baseline": ("vars_build", _baseline),
    "eval_baseline_relation": ("vars_build", _baseline_relation),
    "eval_tolerance_recall_at_5": ("env_build", _tolerance),
    "eval_tolerance_mrr": ("env_build", _tolerance),
    "eval_tolerance_ndcg_at_10": ("env_build", _tolerance),
}


SERVE_SETTINGS = {"RAGMART_SERVE_MAX_BODY_BYTES": ("max_body_bytes", 777),
                  "RAGMART_SERVE_MAX_K": ("max_k", 7), "RAGMART_SERVE_WORKERS": ("workers", 3),
                  "RAGMART_SERVE_MAX_CONCURRENCY": ("max_concurrency", 9),
                  "RAGMART_SERVE_RATE": ("rate", 2.5), "RAGMART_SERVE_BURST": ("burst", 11),
                  "RAGMART_SERVE_PRIVATE_ENDPOINTS": ("private_endpoints", True)}


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory) -> Build:
    """`ragmart keys add` with RAGMART_API_KEYS_FILE only, and the limits `ragmart serve`
    reads (ragmart.http.limits.Limits.from_env, what create_app applies) with every one set."""
    project = Project(tmp_path_factory.mktemp("serve"))
    keys = project.workdir / "it's keys.json"
    project.extra_env.update({"RAGMART_API_KEYS_FILE": str(keys),
                              **{n: str(v).lower() for n, (_, v) in SERVE_SETTINGS.items()}})
    build = Build(project, extra={"keys": keys})
    build.procs["keys"] = project.ragmart("keys", "add", "app", "--groups", "g", check=False)
    build.procs["limits"] = subprocess.run(
        [sys.executable, "-c", "import json\nfrom ragmart.http.limits import Limits\n"
         "print(json.dumps(Limits.from_env().to_dict()))"],
        cwd=ROOT, env=project.env(), capture_output=True, text=True)
    return build


def _keys_file(b: Build) -> None:
    assert b.procs["keys"].returncode == 0, b.procs["keys"].stderr
    assert '"name": "app"' in b.extra["keys"].read_text()  # type: ignore[union-attr]


def _serve_limit(name: str) -> Callable[[Build], None]:
    def check(b: Build) -> None:
        field_name, value = SERVE_SETTINGS[name]
        assert json.loads(b.procs["limits"].stdout)[field_name] == value, b.procs["limits"]
    return check


CHECKS.update({"RAGMART_API_KEYS_FILE": ("serve_run", _keys_file),
               **{name: ("serve_run", _serve_limit(name)) for name in SERVE_SETTINGS}})


@pytest.fixture(scope="module")
def serving_url_run(tmp_path_factory) -> Build:
    """`ragmart retrieve` with RAGMART_SERVING_URL naming a server that is not there: the
    search goes to it (and fails naming it, its password masked)."""
    project = Project(tmp_path_factory.mktemp("serving-url"))
    project.extra_env["RAGMART_SERVING_URL"] = "postgresql://ragmart:pw-s3cret@127.0.0.1:9/none"
    build = Build(project)
    build.procs["versions"] = project.ragmart("retrieve", "x", "--groups", "g", check=False)
    return build


def _serving_url(b: Build) -> None:
    proc = b.procs["versions"]
    assert proc.returncode == 2 and "127.0.0.1:9" in proc.stderr, proc.stderr
    assert "pw-s3cret" not in proc.stderr + proc.stdout


CHECKS["RAGMART_SERVING_URL"] = ("serving_url_run", _serving_url)


@pytest.fixture(scope="module")
def build_memory_run(tmp_path_factory) -> Build:
    """The ceiling a PostgreSQL publish reads for an HNSW build (tests/python/
    test_postgres_build_memory.py publishes with it)."""
    project = Project(tmp_path_factory.mktemp("build-memory"))
    project.extra_env["RAGMART_PG_MAX_BUILD_MEMORY"] = "3GB"
    build = Build(project)
    build.procs["memory"] = subprocess.run(
        [sys.executable, "-c", "from ragmart.serving.postgres.settings import max_build_memory\n"
         "print(max_build_memory())"], cwd=ROOT, env=project.env(), capture_output=True,
        text=True)
    return build


def _build_memory(b: Build) -> None:
    assert b.procs["memory"].stdout.strip() == str(3 << 30), b.procs["memory"]


CHECKS["RAGMART_PG_MAX_BUILD_MEMORY"] = ("build_memory_run", _build_memory)


@pytest.fixture(scope="module")
def hnsw_run(tmp_path_factory) -> Build:
    """The HNSW build parameters a PostgreSQL publish reads (tests/python/
    test_postgres_hnsw_build.py publishes with them through `ragmart publish`)."""
    project = Project(tmp_path_factory.mktemp("hnsw"))
    project.extra_env.update({"RAGMART_PG_HNSW_M": "8", "RAGMART_PG_HNSW_EF_CONSTRUCTION": "40"})
    build = Build(project)
    build.procs["hnsw"] = subprocess.run(
        [sys.executable, "-c", "from ragmart.serving.postgres.schema import hnsw_build\n"
         "print(hnsw_build(10))"], cwd=ROOT, env=project.env(), capture_output=True, text=True)
    return build


def _hnsw(b: Build) -> None:
    assert b.procs["hnsw"].stdout.strip() == "(8, 40)", b.procs["hnsw"]


CHECKS["RAGMART_PG_HNSW_M"] = ("hnsw_run", _hnsw)
CHECKS["RAGMART_PG_HNSW_EF_CONSTRUCTION"] = ("hnsw_run", _hnsw)


@pytest.mark.parametrize("name", list(settings_table()))
def test_setting_reaches_the_code(name: str, request: pytest.FixtureRequest) -> None:
    assert name in CHECKS, f"README setting {name} has no check in this module"
    fixture, check = CHECKS[name]
    check(request.getfixturevalue(fixture))


@pytest.mark.parametrize("fixture", ["vars_build", "env_build"])
def test_python_models_see_every_config_they_read(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """dbt fills a Python model's dbt.config.get() only for the calls its parser finds: a call
    inside `x or y` or an expression is silently None. Every key a model reads must arrive."""
    build: Build = request.getfixturevalue(fixture)
    for path in sorted((ROOT / "python_models").rglob("*.py")):
        keys = set(re.findall(r"""dbt\.config\.get\(\s*["'](\w+)["']""", path.read_text()))
        if not keys or not list((build.project.workdir / "target" / "compiled").rglob(path.name)):
            continue
        config = build.compiled_config(path.stem)
        missing = {k for k in keys if config.get(k) is None}
        assert not missing, f"{path.name} reads {sorted(missing)}; its compiled config lacks them"
