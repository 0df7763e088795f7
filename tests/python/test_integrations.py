"""The LangChain and LlamaIndex retrievers (ragmart.integrations), with the real framework
packages, on a dbt-built database of the bundled sample plus one batch whose documents name
their source by URL or not at all: the same chunks in the same order as ragmart.retrieve, the
citation fields, access groups, abstentions, optional imports, and the README's example."""

from __future__ import annotations

import datetime as dt
import logging
import re
import subprocess
import sys

import pytest
from dbt_harness import ROOT, Project

import ragmart
from ragmart.integrations.backend import CITATION_FIELDS, RagmartAbstained
from ragmart.integrations.langchain import RagmartRetriever
from ragmart.integrations.llamaindex import RagmartRetriever as LlamaRetriever

WEB_URL = "https://intranet.example/policies/badge-access"
HEADER = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at," \
    "allowed_groups,url"
CITED = HEADER + f"""
I,2026-11-05 09:00:00,100,badge-access,policy,Badge Access Policy,"# Badge Access Policy

## Lost badges

Report a lost badge to the front desk within one hour; the badge is deactivated at once.
",2026-11-05 09:00:00,"[""facilities""]",{WEB_URL}
I,2026-11-05 09:00:00,101,visitor-log,policy,Visitor Log Policy,"# Visitor Log Policy

## Signing in

Every visitor signs the visitor log at reception and wears a visitor badge.
",2026-11-05 09:00:00,"[""facilities""]",
"""
QUESTIONS = ("how do I approve a purchase", "parental leave weeks", "report a lost badge",
             "password rules for production access")
GROUPS = (["all-staff"], ["hr", "managers"], ["facilities"])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("integrations"))
    project.land_sample()
    project.land("dms/0100_cited_by_url.csv", CITED)
    project.build("--exclude-resource-type", "unit_test")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in project.env().items():
            mp.setenv(name, value)
        yield project


@pytest.fixture(scope="module")
def reader(project):
    with ragmart.Retriever() as reader:
        yield reader


def test_langchain_gives_ragmart_retrieve_s_chunks_in_its_order_with_citations(reader):
    for groups in GROUPS:
        retriever = RagmartRetriever(retriever=reader, groups=groups, k=4)
        for question in QUESTIONS:
            expected = ragmart.retrieve(question, k=4, groups=groups)
            documents = retriever.invoke(question)
            assert [d.id for d in documents] == [c.chunk_id for c in expected]
            for document, chunk in zip(documents, expected, strict=True):
                assert document.page_content == chunk.chunk_text
                for name in (*CITATION_FIELDS, "rank", "distance"):
                    assert document.metadata[name] == getattr(chunk, name), name
                assert document.metadata["index_version"] == "v1"


def test_llamaindex_gives_the_same_chunks_with_the_same_metadata(reader):
    for groups in GROUPS:
        chain = RagmartRetriever(retriever=reader, groups=groups, k=4)
        llama = LlamaRetriever(retriever=reader, groups=groups, k=4)
        for question in QUESTIONS:
            documents = chain.invoke(question)
            nodes = llama.retrieve(question)
            assert [n.node.node_id for n in nodes] == [d.id for d in documents]
            assert [n.node.metadata for n in nodes] == [d.metadata for d in documents]
            assert [n.node.get_content() for n in nodes] == [d.page_content for d in documents]
            assert [n.score for n in nodes] == [1.0 - d.metadata["distance"] for d in documents]


def test_source_is_the_metadata_s_path_or_url_else_null(reader):
    cited = RagmartRetriever(retriever=reader, groups=["facilities"], k=10)
    sources = {d.metadata["document_id"]: d.metadata["source"]
               for d in cited.invoke("report a lost badge")}
    assert sources == {"badge-access": WEB_URL,  # the producer's url column
                       "visitor-log": None}  # an empty url: no source, never ''
    sample = RagmartRetriever(retriever=reader, groups=["all-staff"], k=20)
    sources = {d.metadata["document_id"]: d.metadata["source"]
               for d in sample.invoke("how do I approve a purchase")}
    assert len(sources) > 1
    assert all(source == f"{doc.removesuffix('-v2')}.md" for doc, source in sources.items())


@pytest.mark.parametrize("metadata", [
    None, "", "not json", "[1, 2]", "{}", '{"source_path": "a.md"}', '{"url": " https://x/y "}',
    '{"source_path": "  ", "source_url": "s3://b/k"}', '{"source_path": 5, "url": "u"}',
    '{"source_path": null, "source_url": "", "url": "last"}', '{"source_path": {"a": 1}}',
    '{"source_path": "first", "url": "second"}', '{"SOURCE_PATH": "case matters"}',
])
def test_the_python_rule_and_the_macro_s_sql_agree(metadata):
    import duckdb

    from ragmart.retrieval.citations import source_of, source_sql

    with duckdb.connect() as conn:
        in_sql = conn.execute(f"select {source_sql('$m::varchar')}", {"m": metadata}).fetchone()
    assert source_of(metadata) == in_sql[0]


def test_source_reaches_the_cli_json_and_as_of_results(project):
    import json

    proc = project.ragmart("retrieve", "report a lost badge", "--groups", "facilities", "--json",
                           "-k", "1")
    answer = json.loads(proc.stdout)
    assert answer["results"][0]["document_id"] == "badge-access"
    assert answer["results"][0]["source"] == WEB_URL
    past = ragmart.retrieve("approval limits for purchases", k=3, groups=["all-staff"],
                            as_of=dt.datetime(2026, 11, 3))
    assert past and {c.source for c in past} == {"fin-procurement-approvals.md"}
    assert {c.document_id for c in past} == {"fin-procurement-approvals"}
    conn = ragmart.connect(project.db_path)
    try:
        for as_of in ("null", "timestamp '2026-11-06'"):
            rows = conn.execute(f"""
                select document_id, source from ragmart_retrieve_v1(
                    ragmart_embed('report a lost badge'), 2, groups := ['facilities'],
                    as_of := {as_of})""").fetchall()
            assert dict(rows) == {"badge-access": WEB_URL, "visitor-log": None}
    finally:
        conn.close()


def test_access_comes_from_the_groups_the_application_states(reader):
    outsider = RagmartRetriever(retriever=reader, groups=["all-staff"], k=50)
    insider = RagmartRetriever(retriever=reader, groups=["facilities"], k=50)
    assert "badge-access" not in {d.metadata["document_id"]
                                  for d in outsider.invoke("report a lost badge")}
    seen = insider.invoke("report a lost badge")
    assert {d.metadata["document_id"] for d in seen} == {"badge-access", "visitor-log"}
    assert seen[0].metadata["document_id"] == "badge-access"


def test_an_abstention_raises_with_its_reason_or_returns_empty_and_logs_it(reader, caplog):
    expected = ragmart.retrieve("report a lost badge", groups=["nobody"])
    assert expected.abstained and expected.reason
    for strict in (RagmartRetriever(retriever=reader, groups=["nobody"]),
                   LlamaRetriever(retriever=reader, groups=["nobody"])):
        call = strict.invoke if hasattr(strict, "invoke") else strict.retrieve
        with pytest.raises(RagmartAbstained) as raised:
            call("report a lost badge")
        assert raised.value.reason == expected.reason
        assert raised.value.clauses == [c.to_dict() for c in expected.clauses]
    quiet = RagmartRetriever(retriever=reader, groups=["nobody"], on_abstain="empty")
    with caplog.at_level(logging.WARNING, logger="ragmart.integrations"):
        assert quiet.invoke("report a lost badge") == []
    assert expected.reason in caplog.text
    with pytest.raises(ValueError, match="on_abstain must be one of raise, empty"):
        RagmartRetriever(retriever=reader, groups=["all-staff"], on_abstain="ignore")


def test_contract_and_filters_pass_through_and_refusals_stay_errors(reader):
    retriever = RagmartRetriever(retriever=reader, groups=["all-staff"], k=3,
                                 doc_types=["standard"])
    documents = retriever.invoke("password rules for production access")
    assert documents and {d.metadata["document_type"] for d in documents} == {"standard"}
    from ragmart.retrieval.contracts import ContractError

    with pytest.raises(ContractError, match="no-such-contract"):
        RagmartRetriever(retriever=reader, groups=["all-staff"],
                         contract="no-such-contract").invoke("anything")


def test_a_batch_on_worker_threads_answers_as_one_call_at_a_time(reader):
    retriever = RagmartRetriever(retriever=reader, groups=["all-staff"], k=3)
    one_by_one = [[d.id for d in retriever.invoke(q)] for q in QUESTIONS * 3]
    batched = retriever.batch(list(QUESTIONS * 3), config={"max_concurrency": 4})
    assert [[d.id for d in documents] for documents in batched] == one_by_one


def test_construction_states_in_process_or_http_and_never_sends_groups(reader):
    with pytest.raises(ValueError, match="either retriever="):
        RagmartRetriever(groups=["hr"])
    with pytest.raises(ValueError, match="either retriever="):
        LlamaRetriever(retriever=reader, url="http://localhost:8000", api_key="k")
    with pytest.raises(ValueError, match="come from the API key"):
        RagmartRetriever(url="http://localhost:8000", api_key="k", groups=["hr"])
    with pytest.raises(ValueError, match="api_key is missing"):
        LlamaRetriever(url="http://localhost:8000")
    for made in (RagmartRetriever(url="http://localhost:8000", api_key="secret-key-1"),
                 LlamaRetriever(url="http://localhost:8000", api_key="secret-key-1")):
        assert "secret-key-1" not in repr(made) + repr(vars(made))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)


def test_importing_ragmart_imports_no_framework_and_a_missing_one_says_what_to_install():
    proc = _python("import sys, ragmart, ragmart.integrations, ragmart.integrations.backend\n"
                   "assert not [m for m in sys.modules if m.split('.')[0] in "
                   "('langchain_core', 'llama_index')], 'a framework was imported'")
    assert proc.returncode == 0, proc.stderr
    for module, blocked, extra in (("langchain", "langchain_core", "langchain"),
                                   ("llamaindex", "llama_index", "llamaindex")):
        proc = _python(f"import sys; sys.modules[{blocked!r}] = None\n"
                       f"import ragmart.integrations.{module}")
        assert proc.returncode != 0
        assert f"pip install 'ragmart[{extra}]'" in proc.stderr.splitlines()[-1]


README_EXAMPLE = re.compile(r"```python\n(# ragmart-langchain-example\n.*?)```", re.DOTALL)


def test_the_readme_langchain_example_runs_offline_and_cites(project, capsys):
    blocks = README_EXAMPLE.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1, "the README has one ```python block opening with the marker"
    code = blocks[0]
    # ten lines: four imports, six of code (and the marker comment)
    assert len([line for line in code.splitlines() if line.strip()]) == 11
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert re.search(r"sources:( [\w.-]+\.md)+$", out.strip()), out  # the documents' sources


# over HTTP: the real `ragmart serve` application (ragmart.http.app), groups from the keys


@pytest.fixture(scope="module")
def service(project, tmp_path_factory):
    """(the app's TestClient, key name -> key) for keys made by `ragmart keys add`."""
    from fastapi.testclient import TestClient

    from ragmart.http.app import create_app

    path = tmp_path_factory.mktemp("keys") / "keys.json"
    made = {}
    for name, groups in (("staff", "all-staff"), ("facilities", "facilities"),
                         ("nobody", "nobody")):
        proc = subprocess.run([sys.executable, "-m", "ragmart.cli.main", "keys", "add", name,
                               "--groups", groups, "--keys", str(path)],
                              capture_output=True, text=True, cwd=ROOT, env=project.env())
        assert proc.returncode == 0, proc.stderr
        made[name] = proc.stdout.strip()
    made["file"] = str(path)
    with TestClient(create_app(keys_file=path, db_path=project.db_path)) as client:
        yield client, made


def over_http(service, key: str, framework=RagmartRetriever, **options):
    client, keys = service
    return framework(url="http://testserver", api_key=keys[key], http_client=client, **options)


def test_over_http_the_answers_are_the_in_process_ones_for_the_key_s_groups(service, reader):
    for key, groups in (("staff", ["all-staff"]), ("facilities", ["facilities"])):
        remote = over_http(service, key, k=4)
        local = RagmartRetriever(retriever=reader, groups=groups, k=4)
        remote_llama = over_http(service, key, LlamaRetriever, k=4)
        for question in QUESTIONS:
            expected = local.invoke(question)
            assert expected
            got = remote.invoke(question)
            assert [(d.id, d.page_content) for d in got] == \
                [(d.id, d.page_content) for d in expected]
            assert [d.metadata for d in got] == [d.metadata for d in expected]
            nodes = remote_llama.retrieve(question)
            assert [n.node.metadata for n in nodes] == [d.metadata for d in expected]
    seen = {d.metadata["document_id"]
            for d in over_http(service, "staff", k=50).invoke("report a lost badge")}
    assert "badge-access" not in seen
    cited = over_http(service, "facilities", k=1).invoke("report a lost badge")
    assert cited[0].metadata["source"] == WEB_URL


def test_over_http_options_travel_and_refusals_raise_with_status_and_message(service, reader):
    past = over_http(service, "staff", k=3, as_of="2026-11-03T00:00:00+00:00")
    local = RagmartRetriever(retriever=reader, groups=["all-staff"], k=3,
                             as_of=dt.datetime(2026, 11, 3))
    question = "approval limits for purchases"
    assert [d.metadata for d in past.invoke(question)] == \
        [d.metadata for d in local.invoke(question)]
    typed = over_http(service, "staff", k=3, doc_types=["standard"]).invoke(question)
    assert typed and {d.metadata["document_type"] for d in typed} == {"standard"}
    from ragmart.integrations.backend import RagmartServiceError

    with pytest.raises(RagmartServiceError) as refused:
        over_http(service, "staff", contract="no-such-contract").invoke(question)
    assert refused.value.status == 400 and "no-such-contract" in refused.value.message
    client, _ = service
    with pytest.raises(RagmartServiceError) as unknown:
        RagmartRetriever(url="http://testserver", api_key="not-a-key",
                         http_client=client).invoke(question)
    assert unknown.value.status == 401


def test_over_http_an_abstention_carries_the_service_s_reason(service, reader):
    expected = ragmart.retrieve("report a lost badge", groups=["nobody"])
    for framework in (RagmartRetriever, LlamaRetriever):
        retriever = over_http(service, "nobody", framework)
        call = getattr(retriever, "invoke", None) or retriever.retrieve
        with pytest.raises(RagmartAbstained) as raised:
            call("report a lost badge")
        assert raised.value.reason == expected.reason
    assert over_http(service, "nobody", on_abstain="empty").invoke("report a lost badge") == []


def test_over_a_real_socket_with_the_retriever_s_own_http_client(project, service):
    """uvicorn on a loopback port, and the retriever's default httpx client (no test client)."""
    import socket
    import threading
    import time

    import uvicorn

    from ragmart.http.app import create_app

    _, keys = service
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(keys_file=keys["file"], db_path=project.db_path)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        remote = RagmartRetriever(url=f"http://127.0.0.1:{port}/", api_key=keys["staff"], k=3)
        question = QUESTIONS[0]
        assert [d.id for d in remote.invoke(question)] == \
            [c.chunk_id for c in ragmart.retrieve(question, k=3, groups=["all-staff"])]
    finally:
        server.should_exit = True
        thread.join()


def _takes_mode() -> bool:
    import inspect

    return "mode" in inspect.signature(ragmart.Retriever.search).parameters


@pytest.mark.skipif(not _takes_mode(), reason="this ragmart has no search modes yet (hybrid)")
def test_every_mode_passes_through_and_its_results_carry_their_source(reader, service):
    for mode in ("vector", "lexical", "hybrid"):
        for question in ("Who approves a purchase over the limit?", "report a lost badge"):
            expected = ragmart.retrieve(question, k=4, groups=["all-staff", "facilities"],
                                        mode=mode)
            local = RagmartRetriever(retriever=reader, groups=["all-staff", "facilities"], k=4,
                                     mode=mode).invoke(question)
            assert [d.id for d in local] == [c.chunk_id for c in expected], mode
            assert local and all(d.metadata["source"] for d in local), mode
    remote = over_http(service, "facilities", k=2, mode="lexical").invoke("lost badge")
    assert remote[0].metadata["source"] == WEB_URL
