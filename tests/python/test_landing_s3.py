"""An S3 landing zone through `dbt build`, `dbt source freshness` and `ragmart freshness`: a build
reads only the objects it has not read (and an object overwritten in place again), never an
upload in progress; a missing bucket or prefix fails the build naming the URL; faults of the
server end in a retried read or a failed build the next build completes; the credentials are
never printed nor stored.

The server is moto (conftest.s3_server); a fault-injecting proxy (s3_proxy.FaultProxy) sits in
front of it where a test counts reads or injects faults.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from dbt_harness import SAMPLE_LANDING
from s3_landing import S3Project, new_bucket
from s3_proxy import FaultProxy

from ragmart.ingest.landing import ingest_files, list_landing_files

NO_UNIT = ("--exclude-resource-type", "unit_test")
ROW = "source_file, source_line, document_id, change_seq, quarantine_reason"
SAMPLE = sorted(p.relative_to(SAMPLE_LANDING).as_posix()
                for p in SAMPLE_LANDING.glob("*/*") if p.is_file())


def expected_rows(names: list[str]) -> list[tuple]:
    """What ingestion reads from these sample files (read from the local sample)."""
    files = [f for f in list_landing_files(SAMPLE_LANDING) if f.relative_path in names]
    table = ingest_files(files, seen_keys=set(), seen_hashes=set(), max_content_bytes=1_000_000)
    columns = [c.strip() for c in ROW.split(",")]
    return sorted(tuple(r[c] for c in columns) for r in table.to_pylist())


def landed_rows(project: S3Project) -> list[tuple]:
    if not project.db_path.exists() or not project.query(
            "select 1 from duckdb_tables() where table_name = 'stg_landing__document_events'"):
        return []
    return sorted(project.query(f"select {ROW} from stg_landing__document_events"))


def land_sample(project: S3Project, names: list[str]) -> None:
    for name in names:
        project.land(name, (SAMPLE_LANDING / name).read_bytes())


@pytest.fixture
def project(tmp_path: Path, s3_server) -> S3Project:
    project = S3Project(tmp_path, server=s3_server, bucket=new_bucket(s3_server))
    project.create_landing()
    return project


def test_a_build_reads_what_landed_once_and_an_overwritten_object_again(project) -> None:
    client = project.client()
    with FaultProxy(project.server.host, project.server.port) as proxy:
        project.endpoint = proxy.endpoint
        land_sample(project, SAMPLE)
        # an upload in progress (multipart, not completed) is not an object yet
        upload = client.create_multipart_upload(
            Bucket=project.bucket, Key="landing/dms/0099_big.csv")
        part = client.upload_part(
            Bucket=project.bucket, Key="landing/dms/0099_big.csv", PartNumber=1,
            UploadId=upload["UploadId"],
            Body=(SAMPLE_LANDING / "dms" / "0099_late_arrival.csv").read_bytes())
        project.build(*NO_UNIT)
        prefix = f"{project.bucket}/landing/"
        assert dict(proxy.reads) == {prefix + name: 1 for name in SAMPLE}
        first = landed_rows(project)
        assert first == expected_rows(SAMPLE)

        # one object overwritten in place with another file's content, one new, the upload done
        overwritten, source = SAMPLE[0], SAMPLE[1]
        project.land(overwritten, (SAMPLE_LANDING / source).read_bytes())
        project.land("debezium/0100_new.jsonl",
                     (SAMPLE_LANDING / "debezium" / "0008_rename.jsonl").read_bytes())
        client.complete_multipart_upload(
            Bucket=project.bucket, Key="landing/dms/0099_big.csv", UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        proxy.reads.clear()
        project.build(*NO_UNIT)
        assert dict(proxy.reads) == {prefix + k: 1 for k in (
            overwritten, "debezium/0100_new.jsonl", "dms/0099_big.csv")}
    # the overwritten object is a new reading of its key, with the new content's records
    latest = sorted(project.query(
        f"select {ROW} from stg_landing__document_events where source_file = $f and "
        "ingested_at = (select max(ingested_at) from stg_landing__document_events "
        "where source_file = $f)", {"f": overwritten}))
    assert [r[1:] for r in latest] == [r[1:] for r in expected_rows([source])]
    assert len(landed_rows(project)) == len(first) + len(latest) + len(
        expected_rows(["debezium/0008_rename.jsonl", "dms/0099_late_arrival.csv"]))


def test_source_freshness_and_ragmart_freshness_report_the_newest_objects_time(project) -> None:
    def landed_at(name: str) -> dt.datetime:
        head = project.client().head_object(Bucket=project.bucket, Key=f"landing/{name}")
        return head["LastModified"].astimezone(dt.UTC).replace(tzinfo=None)

    names = ["debezium/0002_initial_snapshot.jsonl", "dms/0001_initial_load.csv"]
    land_sample(project, names)
    project.build(*NO_UNIT)
    project.dbt("source", "freshness")
    sources = json.loads((project.workdir / "target" / "sources.json").read_text())
    loaded = {r["unique_id"].rsplit(".", 1)[1]: r["max_loaded_at"] for r in sources["results"]}
    assert {layout: dt.datetime.fromisoformat(loaded[f"{layout}_files"]).replace(tzinfo=None)
            for layout in ("debezium", "dms")} == {
        name.split("/")[0]: landed_at(name) for name in names}
    # an object landed after the build: pending in ragmart freshness, with its S3 time
    land_sample(project, ["dms/0003_edits.csv"])
    proc = project.ragmart("freshness", "--json", check=False)
    assert proc.stdout, proc.stderr
    shown = json.loads(proc.stdout)
    lags = {lag["layout"]: lag for lag in shown["serving"]["serving_lag"]["layouts"]}
    assert lags["dms"]["pending"] == 1
    assert lags["dms"]["newest_landed_at"] == landed_at("dms/0003_edits.csv").isoformat()


@pytest.mark.parametrize("where", ["bucket", "prefix"])
def test_a_missing_bucket_or_prefix_fails_the_build_naming_the_url(project, where) -> None:
    if where == "bucket":
        project.bucket += "-missing"
        expected = f"landing zone {project.landing_url}: bucket {project.bucket} does not exist"
    else:
        project.prefix = "nowhere"
        expected = f"landing zone {project.landing_url} does not exist"
    proc = project.build("--select", "stg_landing__document_events", check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout
    assert landed_rows(project) == []


@pytest.mark.slow  # three builds; the store-level fault test runs in the fast suite
def test_faults_end_in_a_retried_read_or_a_failed_build_the_next_build_completes(
        project) -> None:
    first, rest = SAMPLE[: len(SAMPLE) // 2], SAMPLE[len(SAMPLE) // 2:]
    with FaultProxy(project.server.host, project.server.port) as proxy:
        project.endpoint = proxy.endpoint
        land_sample(project, first)
        seen: dict[str, int] = {}

        def transient(method, path, query):  # every request fails once, listings too
            key = f"{method} {path} {sorted(query)}"
            seen[key] = seen.get(key, 0) + 1
            return {1: "503", 2: "reset" if proxy.object_key(method, path, query) else "500"
                    }.get(seen[key])

        proxy.plan = transient
        project.build("--select", "stg_landing__document_events")
        assert proxy.injected["503"] and proxy.injected["500"] and proxy.injected["reset"]
        assert landed_rows(project) == expected_rows(first)

        # a fault that outlasts the retries on the last object of a batch: the build fails and
        # none of the batch counts as read
        land_sample(project, rest)
        broken = f"/{project.bucket}/landing/{rest[-1]}"
        proxy.plan = lambda method, path, query: "reset" if path == broken else None
        proc = project.build("--select", "stg_landing__document_events", check=False)
        assert proc.returncode != 0 and "could not be read after 4 attempts" in proc.stdout
        assert landed_rows(project) == expected_rows(first)

        proxy.plan = lambda method, path, query: None
        project.build(*NO_UNIT)
    assert landed_rows(project) == expected_rows(SAMPLE)


@pytest.mark.slow  # two builds, two `dbt source freshness`, two `ragmart freshness`
def test_credentials_are_never_printed_logged_or_stored(project) -> None:
    secret = f"PlantedSecret{uuid.uuid4().hex}"
    project.extra_env["AWS_SECRET_ACCESS_KEY"] = secret
    land_sample(project, SAMPLE)
    outputs = [project.build(*NO_UNIT), project.dbt("source", "freshness"),
               project.ragmart("freshness", check=False),
               project.ragmart("freshness", "--json", check=False)]
    project.extra_env["RAGMART_LANDING_DIR"] = f"s3://{project.bucket}/missing"
    failed = project.build(*NO_UNIT, check=False)
    assert failed.returncode != 0 and "does not exist" in failed.stdout
    outputs.append(failed)
    outputs.append(project.dbt("source", "freshness", check=False))
    for proc in outputs:
        assert secret not in proc.stdout and secret not in proc.stderr
    files = [p for p in project.workdir.rglob("*") if p.is_file()]
    assert project.db_path in files and any("logs" in p.parts for p in files)
    assert any("target" in p.parts for p in files)
    leaked = [p for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
