"""`ragmart purge` with PostgreSQL serving: the document leaves every version and publication,
and a byte search of the database's table files (found with pg_relation_filepath, after a
CHECKPOINT) finds none of its text, also when a purge was killed between the DELETE and the
VACUUM and completed by the next `ragmart purge`.

The deployment is the bundled sample plus a victim document carrying a planted sentence, built
by dbt and published twice (the victim edited in between, so its rows belong to two
publications: some removed_in, some live).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from cdc_files import debezium_jsonl, document, paragraph
from dbt_harness import Project

psycopg = pytest.importorskip("psycopg")

VICTIM = "pg-purge-victim"
PLANTED = "Quillwort-7731 signals the planted heron of the purge test"
KEEPER = "pg-purge-keeper"


def _victim(seq: int, op: str, edit: str) -> dict:
    body = [f"{PLANTED} ({edit}).", paragraph("victim", seq), f"{PLANTED} again, {edit}."]
    return {"op": op, "seq": seq, "document_id": VICTIM, "title": f"Victim {edit}",
            "content": document(f"Victim {edit}", {"Body": body, "More": [PLANTED + "."]})}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("pg_purge"))
    project.land_sample()
    project.land("debezium/0200_victim.jsonl", debezium_jsonl([
        _victim(40_000, "c", "first"),
        {"op": "c", "seq": 40_001, "document_id": KEEPER, "title": "Keeper",
         "content": document("Keeper", {"Body": [paragraph("keeper", 1)]})},
    ]))
    project.build()
    return project


@pytest.fixture
def published(built: Project, tmp_path: Path, postgres_url: str) -> Project:
    """A copy of the deployment, published to a fresh database twice (the victim edited)."""
    shutil.copytree(built.workdir, tmp_path / "deployment")
    project = Project(tmp_path / "deployment", extra_env={"RAGMART_SERVING_URL": postgres_url})
    project.ragmart("publish", "v1")
    project.land("debezium/0201_victim_edit.jsonl", debezium_jsonl([_victim(40_002, "u",
                                                                             "second")]))
    project.build()
    second = json.loads(project.ragmart("publish", "v1").stdout)["postgres"]
    assert second["incremental"] and second["rows_removed"] > 0
    return project


def table_files(url: str) -> list[Path]:
    """Every file of the database's relations in schema ragmart (tables, their TOAST tables
    and every index): pg_relation_filepath, its 1 GB segments and forks."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")
        data_dir = Path(conn.execute("show data_directory").fetchone()[0])
        paths = [p for (p,) in conn.execute(
            "select pg_relation_filepath(c.oid) from pg_class as c where c.relnamespace = "
            "'ragmart'::regnamespace or c.oid in (select reltoastrelid from pg_class where "
            "relnamespace = 'ragmart'::regnamespace) or c.oid in (select indexrelid from "
            "pg_index where indrelid in (select reltoastrelid from pg_class where "
            "relnamespace = 'ragmart'::regnamespace)) and pg_relation_filepath(c.oid) is not "
            "null").fetchall() if p]
        (database_dir,) = conn.execute("select 'base/' || oid from pg_database where "
                                       "datname = current_database()").fetchone()
    files = [f for p in paths for f in (data_dir / p).parent.glob(Path(p).name + "*")]
    # and, beyond the relations named: every file of the database's directory
    return sorted(set(files) | set((data_dir / database_dir).iterdir()))


def holding(url: str, needle: str) -> list[Path]:
    data = needle.encode()
    return [f for f in table_files(url) if f.is_file() and data in f.read_bytes()]


def rows_of(url: str, document_id: str) -> dict[str, int]:
    from ragmart.serving.postgres.purge import count_document_rows

    return count_document_rows(url, document_id)


def test_purge_leaves_no_bytes_in_table_files(published: Project, postgres_url: str) -> None:
    before = rows_of(postgres_url, VICTIM)
    assert before["fct_chunk_embeddings_v1"] > 0 and before["fct_chunk_history_v1"] > 0
    assert holding(postgres_url, PLANTED), "the search must find the text before the purge"
    keeper = rows_of(postgres_url, KEEPER)

    dry = json.loads(published.ragmart("purge", "--document-id", VICTIM, "--dry-run").stdout)
    [pg_plan] = [counts for name, counts in dry[0]["databases"].items()
                 if name.startswith("postgresql://")]
    assert pg_plan == before

    # a run without the URL (a build completing the purge, say) must not pass the step by
    published.extra_env["RAGMART_SERVING_URL"] = ""
    refused = published.ragmart("purge", "--document-id", VICTIM, check=False)
    published.extra_env["RAGMART_SERVING_URL"] = postgres_url
    assert refused.returncode != 0 and "set RAGMART_SERVING_URL" in refused.stderr
    assert rows_of(postgres_url, VICTIM) == before

    # as the message says: `ragmart purge` finishes it
    [report] = json.loads(published.ragmart("purge").stdout)
    assert report["document_id"] == VICTIM and report["completed_interrupted_purge"]
    assert {k.rsplit(":", 1)[1]: n for k, n in report["rows_deleted"].items()
            if k.startswith("postgresql://")} == before
    assert rows_of(postgres_url, VICTIM) == {}
    assert rows_of(postgres_url, KEEPER) == keeper
    assert holding(postgres_url, PLANTED) == []
    assert holding(postgres_url, VICTIM) == []
    # what serves was re-evaluated: a refresh row carries the report the gate compares with
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select action from ragmart.publications order by publication_id "
                            "desc limit 1").fetchone() == ("refresh",)


@pytest.mark.slow  # a purge killed between DELETE and VACUUM: one more build and two publishes
def test_interrupted_purge_is_vacuumed_by_the_next(published: Project, postgres_url: str
                                                   ) -> None:
    published.extra_env["RAGMART_KILL_AT"] = "purge_postgres_deleted"
    killed = published.ragmart("purge", "--document-id", VICTIM, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert rows_of(postgres_url, VICTIM) == {}
    # deleted is not gone: the dead tuples still hold the text until the vacuum
    assert holding(postgres_url, PLANTED)
    del published.extra_env["RAGMART_KILL_AT"]
    completed = json.loads(published.ragmart("purge").stdout)
    assert completed[0]["document_id"] == VICTIM and completed[0]["completed_interrupted_purge"]
    assert holding(postgres_url, PLANTED) == []
    assert holding(postgres_url, VICTIM) == []
