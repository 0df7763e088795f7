"""Compliance purge of a deployment whose landing zone is an S3 prefix (moto), through the real
CLI after a real dbt build from the bucket.

In a versioned bucket a purge that only rewrote the current objects would leave the document
readable in their noncurrent versions (and under the delete marker of an object deleted long
ago): every version holding it is removed, and the report says how many. Without permission to
remove a version, the purge stops naming the permission and the object, stays journaled, and
the next `ragmart purge` completes it. The check is a byte search of every version of every
object in the bucket (`S3Landing.traces`).
"""

from __future__ import annotations

import json
import shutil
import signal
import uuid
from pathlib import Path

import pytest
from dbt_harness import Project
from purge_landing import S3Landing, move_to_s3
from s3_proxy import FaultProxy
from test_purge import (
    KEEPER,
    KEEPER_SENTENCE,
    QUARANTINED,
    VICTIMS,
    _envelope,
    _land_victims,
    assert_purged,
    traces,
)

DOC_ID, VICTIM_FILE, TEXT = VICTIMS["debezium_jsonl"]
OLD_FILE = "debezium/0090_old_export.jsonl"  # deleted before the purge: only versions remain
ONLY_FILE = "debezium/0105_victim_only.jsonl"  # nothing but the victim's records
NEIGHBOUR = "debezium/0104_neighbour.jsonl"  # names the id, is not the document's
EXPORT = "dms/0301_export.txt"  # not records (ingestion cannot read it), names the id; deleted


@pytest.fixture(scope="module")
def built_s3(tmp_path_factory: pytest.TempPathFactory, s3_server) -> tuple[Project, Path]:
    """A deployment built from a bucket, and a local copy of what it landed."""
    root = tmp_path_factory.mktemp("purge-s3")
    project = Project(root / "d")
    project.land_sample()
    _land_victims(project)
    source = root / "landed"
    shutil.copytree(project.landing, source)
    bucket = f"ragmart-purge-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    zone = move_to_s3(project, s3_server, bucket, source=source)
    zone.project.build()
    zone.project.ragmart("publish", "v1")
    return zone.project, source


def deployment_on(built_s3, tmp_path: Path, s3_server, bucket: str, *,
                  versioned: bool) -> S3Landing:
    """A copy of the built deployment whose landing zone is a fresh copy in `bucket`."""
    built, source = built_s3
    shutil.copytree(built.workdir, tmp_path / "d")
    return move_to_s3(Project(tmp_path / "d"), s3_server, bucket, versioned=versioned,
                      source=source)


def jsonl(*envelopes: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in envelopes)


def with_history(zone: S3Landing) -> dict[str, int]:
    """Versions holding the victim besides the current objects: an earlier version of its file,
    an object deleted (a delete marker over it), an object of nothing but the victim's records,
    a deleted file ingestion cannot read that names the victim; and a noncurrent version of the
    neighbour, which is not the victim's. Returns the number of versions per object that hold
    the victim once the purge has rewritten or deleted the current objects."""
    current = zone.read(VICTIM_FILE)
    zone.land(VICTIM_FILE, jsonl(_envelope(DOC_ID, TEXT, 4990)))
    zone.land(VICTIM_FILE, current)  # the file as built, again current
    zone.land(OLD_FILE, jsonl(_envelope(DOC_ID, TEXT, 4980),
                              _envelope(f"{KEEPER}-old", KEEPER_SENTENCE, 4981)))
    zone.remove(OLD_FILE)
    zone.land(ONLY_FILE, jsonl(_envelope(DOC_ID, TEXT, 5100)))
    zone.land(NEIGHBOUR, zone.read(NEIGHBOUR))
    zone.land(EXPORT, f"{DOC_ID}: {TEXT}\n")
    zone.remove(EXPORT)
    # the original upload, the earlier version, the re-upload
    return {VICTIM_FILE: 3, OLD_FILE: 1, ONLY_FILE: 1, EXPORT: 1}


def on_s3(names: list[str]) -> list[str]:
    return [name for name in names if name.startswith("s3://")]


def versions_of(zone: S3Landing, relative_path: str) -> list[dict]:
    return [v for v in zone.versions() if v["Key"].endswith(f"/{relative_path}")]


def test_a_versioned_bucket_loses_every_version_holding_the_document(
        built_s3, tmp_path, s3_server, s3_bucket) -> None:
    zone = deployment_on(built_s3, tmp_path, s3_server, s3_bucket, versioned=True)
    project = zone.project
    holding = with_history(zone)
    assert zone.traces(TEXT) == sorted(holding)
    neighbour_versions = len(versions_of(zone, NEIGHBOUR))
    before = zone.states()

    plan = json.loads(project.ragmart("purge", "--document-id", DOC_ID, "--dry-run").stdout)[0]
    assert plan["landing"] == {zone.name(VICTIM_FILE): [1, 2, 3], zone.name(ONLY_FILE): [1]}
    # noncurrent versions the plan names (the current ones are in "landing")
    assert {name: len(ids) for name, ids in plan["versions"].items()} == {
        zone.name(VICTIM_FILE): 2, zone.name(OLD_FILE): 1, zone.name(EXPORT): 1}
    assert zone.states() == before

    proc = project.ragmart("purge", "--document-id", DOC_ID)
    report = json.loads(proc.stdout)[0]
    assert on_s3(report["files_rewritten"]) == [zone.name(VICTIM_FILE)]
    assert on_s3(report["files_deleted"]) == [zone.name(ONLY_FILE)]
    # every version that held it: the ones the plan named, and the current ones the purge
    # rewrote or deleted (each left as a noncurrent version by the write)
    removed = {name: len(ids) for name, ids in report["versions_deleted"].items()}
    assert removed == {zone.name(name): n for name, n in holding.items()}
    total = sum(holding.values())
    assert f"removed {total} object versions holding {DOC_ID!r}" in proc.stderr

    for text in (TEXT, *QUARANTINED):
        assert zone.traces(text) == [], text
    assert_purged(project, "debezium_jsonl", zone)
    # the rest of the bucket is as it was: the keeper records in the current objects, the
    # neighbour's versions, every other object untouched; the deleted objects stay deleted
    after = zone.states()
    assert {k for k in before if before[k] != after.get(k)} == {VICTIM_FILE, ONLY_FILE}
    assert ONLY_FILE not in after and OLD_FILE not in after
    assert KEEPER_SENTENCE.encode() in zone.read(VICTIM_FILE)
    assert len(versions_of(zone, NEIGHBOUR)) == neighbour_versions
    assert [v["Marker"] for v in versions_of(zone, OLD_FILE)] == [True]


def test_without_permission_to_delete_versions_the_purge_names_it_and_stays_journaled(
        built_s3, tmp_path, s3_server, s3_bucket) -> None:
    zone = deployment_on(built_s3, tmp_path, s3_server, s3_bucket, versioned=True)
    project = zone.project
    with_history(zone)

    with FaultProxy(s3_server.host, s3_server.port) as proxy:
        # a bucket policy without s3:DeleteObjectVersion
        proxy.plan = lambda method, path, query: (
            "403" if method == "DELETE" and "versionId" in query else None)
        project.endpoint = proxy.endpoint
        proc = project.ragmart("purge", "--document-id", DOC_ID, check=False)
    assert proxy.injected["403"] >= 1
    assert proc.returncode == 2, proc.stderr
    assert "s3:DeleteObjectVersion" in proc.stderr and "Traceback" not in proc.stderr
    assert f"{zone.url}/debezium/" in proc.stderr  # the object it could not remove
    assert "ragmart purge" in proc.stderr  # what to run once the permission is granted
    journal = json.loads((project.workdir / "purge_journal.json").read_text())
    assert "landing" not in journal[DOC_ID]["done"]
    assert zone.traces(TEXT) != []

    project.endpoint = None  # the permission granted
    done = json.loads(project.ragmart("purge").stdout)
    assert [r["document_id"] for r in done] == [DOC_ID] and done[0]["versions_deleted"]
    assert zone.traces(TEXT) == []
    assert_purged(project, "debezium_jsonl", zone)


def test_a_purge_killed_between_objects_is_completed_on_every_version(
        built_s3, tmp_path, s3_server, s3_bucket) -> None:
    zone = deployment_on(built_s3, tmp_path, s3_server, s3_bucket, versioned=True)
    project = zone.project
    with_history(zone)
    project.extra_env["RAGMART_KILL_AT"] = "purge_landing_file"
    killed = project.ragmart("purge", "--document-id", DOC_ID, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    del project.extra_env["RAGMART_KILL_AT"]
    done = json.loads(project.ragmart("purge").stdout)
    assert done[0]["completed_interrupted_purge"]
    assert zone.traces(TEXT) == []
    assert_purged(project, "debezium_jsonl", zone)


def test_an_unversioned_bucket_keeps_no_copy_and_no_local_file(
        built_s3, tmp_path, s3_server, s3_bucket) -> None:
    """The plain case, as a user meets it: built from the bucket, purged through the CLI, no
    byte of the document left in the bucket or the deployment's files."""
    zone = deployment_on(built_s3, tmp_path, s3_server, s3_bucket, versioned=False)
    project = zone.project
    report = json.loads(project.ragmart("purge", "--document-id", DOC_ID).stdout)[0]
    assert on_s3(report["files_rewritten"]) == [zone.name(VICTIM_FILE)]
    assert report["versions_deleted"] == {}
    assert zone.traces(TEXT) == [] and traces(project.workdir, TEXT) == []
    assert_purged(project, "debezium_jsonl", zone)


# the request a bucket policy refuses -> the permission the purge must name; the refusals of
# writes come after the purge is journaled, those of reads before it changes anything
REFUSALS = {
    "s3:ListBucket": (lambda m, q, obj: m == "GET" and "list-type" in q, False),
    "s3:ListBucketVersions": (lambda m, q, obj: m == "GET" and "versions" in q, False),
    "s3:GetObject": (lambda m, q, obj: m == "GET" and obj and "versionId" not in q, False),
    "s3:GetObjectVersion": (lambda m, q, obj: m == "GET" and obj and "versionId" in q, False),
    "s3:PutObject": (lambda m, q, obj: m == "PUT" and obj, True),
    "s3:DeleteObject": (lambda m, q, obj: m == "DELETE" and "versionId" not in q, True),
    "s3:DeleteObjectVersion": (lambda m, q, obj: m == "DELETE" and "versionId" in q, True),
}


@pytest.mark.parametrize("permission", sorted(REFUSALS))
def test_each_refused_permission_is_named_and_the_next_purge_completes(
        permission, tmp_path, s3_server, s3_bucket, monkeypatch) -> None:
    """A landing zone alone (no build: the landing step in-process through the public entry
    points), in a versioned bucket where the purge makes every kind of request."""
    from s3_landing import s3_environment

    from ragmart.serving.purge.deployment import Deployment, PurgeError
    from ragmart.serving.purge.journal import load_journal
    from ragmart.serving.purge.run import complete_pending, purge_document

    zone = move_to_s3(Project(tmp_path), s3_server, s3_bucket, versioned=True,
                      source=tmp_path / "none")
    zone.land(VICTIM_FILE, jsonl(_envelope(DOC_ID, TEXT, 1)))  # then noncurrent
    zone.land(VICTIM_FILE, jsonl(_envelope(DOC_ID, TEXT, 2), _envelope(KEEPER, "kept", 3)))
    zone.land(ONLY_FILE, jsonl(_envelope(DOC_ID, TEXT, 4)))
    refused, after_begin = REFUSALS[permission]
    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)

    def deployment() -> Deployment:  # a new one: its S3 client reads the endpoint
        return Deployment(tmp_path / "ragmart.duckdb", Path(zone.url))

    with FaultProxy(s3_server.host, s3_server.port) as proxy:
        proxy.plan = lambda method, path, query: "403" if refused(
            method, query, path.count("/") > 1) else None
        monkeypatch.setenv("RAGMART_S3_ENDPOINT", proxy.endpoint)
        with pytest.raises(PurgeError) as refusal:
            purge_document(deployment(), DOC_ID)
    assert f"S3 refused {permission} on s3://{s3_bucket}/" in str(refusal.value)
    assert (DOC_ID in load_journal(tmp_path / "ragmart.duckdb")) == after_begin

    monkeypatch.setenv("RAGMART_S3_ENDPOINT", s3_server.endpoint)  # granted
    if after_begin:
        (report,) = complete_pending(deployment())
    else:
        report = purge_document(deployment(), DOC_ID)
    assert report.versions_deleted
    assert zone.traces(TEXT) == [] and zone.read(VICTIM_FILE).count(b"kept") == 1
