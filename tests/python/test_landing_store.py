"""The landing store (ragmart.ingest.store) over a local folder and an S3 server, through its
public interface: open_store(RAGMART_LANDING_DIR) -> list / read / put / delete."""

from __future__ import annotations

import pytest
from s3_landing import s3_environment

from ragmart.ingest.store import (
    LandingZoneError,
    LocalStore,
    ObjectChangedError,
    S3Store,
    open_store,
)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for name, value in s3_environment(s3_server).items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        (tmp_path / "landing").mkdir()
        return open_store(tmp_path / "landing")
    server = request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("s3_bucket")
    server.client().put_object(Bucket=bucket, Key="zone/", Body=b"")
    return open_store(f"s3://{bucket}/zone")


def test_the_landing_setting_chooses_the_store(tmp_path, s3_env, s3_bucket) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    s3 = open_store(f"s3://{s3_bucket}/a/b/")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == (s3_bucket, "a/b")
    assert s3.url == f"s3://{s3_bucket}/a/b"


def test_put_list_read_delete(store) -> None:
    assert store.list() == []
    store.put("dms/0002_b.csv", b"bb")
    put = store.put("dms/0001_a.csv", b"a")
    store.put("debezium/.part", b"hidden")
    listed = store.list()
    assert [(e.key, e.size) for e in listed] == [
        ("debezium/.part", 6), ("dms/0001_a.csv", 1), ("dms/0002_b.csv", 2)]
    assert listed[1].last_modified == put.last_modified
    assert store.read(listed[2]) == b"bb"
    assert store.top_level(listed) == {"debezium/", "dms/"}
    store.delete("dms/0001_a.csv")
    assert [e.key for e in store.list()] == ["debezium/.part", "dms/0002_b.csv"]


def test_s3_entries_carry_the_etag_and_an_overwritten_object_is_never_read_as_listed(
        s3_env, s3_bucket) -> None:
    store = open_store(f"s3://{s3_bucket}/zone")
    store.put("dms/1.csv", b"first")
    [listed] = store.list()
    assert listed.etag and listed.version_id is None
    store.put("dms/1.csv", b"other")  # overwritten in place after the listing
    with pytest.raises(ObjectChangedError, match=f"s3://{s3_bucket}/zone/dms/1.csv changed"):
        store.read(listed)
    [now] = store.list()
    assert now.etag != listed.etag and store.read(now) == b"other"


def test_s3_versions_are_listed_and_each_reads_its_own_bytes(s3_env, s3_bucket) -> None:
    s3_env.client().put_bucket_versioning(
        Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    store = open_store(f"s3://{s3_bucket}/zone")
    store.put("dms/1.csv", b"version one")
    store.put("dms/1.csv", b"version two!")
    versions = store.list_versions()
    assert [(v.key, v.is_latest) for v in versions] == [("dms/1.csv", True), ("dms/1.csv", False)]
    assert [store.read(v) for v in versions] == [b"version two!", b"version one"]
    store.delete("dms/1.csv", versions[1].version_id)
    assert [v.is_latest for v in store.list_versions()] == [True]


def test_a_multipart_upload_in_progress_is_not_listed(s3_env, s3_bucket) -> None:
    client = s3_env.client()
    store = open_store(f"s3://{s3_bucket}/zone")
    store.put("dms/done.csv", b"x")
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="zone/dms/big.csv")
    client.upload_part(Bucket=s3_bucket, Key="zone/dms/big.csv", PartNumber=1,
                       UploadId=upload["UploadId"], Body=b"y" * (5 * 1024 * 1024))
    assert [e.key for e in store.list()] == ["dms/done.csv"]


@pytest.mark.parametrize("url, expected", [
    ("s3://{bucket}-missing/zone", "bucket {bucket}-missing does not exist"),
    ("s3://{bucket}/absent", "landing zone s3://{bucket}/absent does not exist"),
    ("s3://", "names no bucket"),
])
def test_a_missing_s3_landing_zone_is_an_error_naming_it(s3_env, s3_bucket, url, expected):
    with pytest.raises(LandingZoneError, match=expected.format(bucket=s3_bucket)):
        open_store(url.format(bucket=s3_bucket)).list()


def test_a_bucket_without_prefix_may_be_empty(s3_env, s3_bucket) -> None:
    assert open_store(f"s3://{s3_bucket}").list() == []


def test_unreadable_credentials_are_an_error_naming_the_zone(s3_env, s3_bucket, monkeypatch):
    # moto accepts any key unless told otherwise; an endpoint nobody serves is unreachable
    monkeypatch.setenv("RAGMART_S3_ENDPOINT", "127.0.0.1:9")
    monkeypatch.setattr("ragmart.ingest.s3_settings.MAX_ATTEMPTS", 1)
    with pytest.raises(LandingZoneError, match=f"landing zone s3://{s3_bucket}/zone is not "
                       "reachable"):
        open_store(f"s3://{s3_bucket}/zone").list()


def test_s3_reads_are_retried_through_500_slowdown_and_a_reset_mid_read(
        s3_env, s3_bucket, monkeypatch) -> None:
    from s3_proxy import FaultProxy

    from ragmart.ingest.store import LandingReadError

    with FaultProxy(s3_env.host, s3_env.port) as proxy:
        monkeypatch.setenv("RAGMART_S3_ENDPOINT", proxy.endpoint)
        store = open_store(f"s3://{s3_bucket}/zone")
        body = b"0123456789" * 1000
        store.put("dms/1.csv", body)
        faults = iter(["500", "503", "reset", "503", "reset"])
        proxy.plan = lambda method, path, query: next(faults, None)
        [entry] = store.list()  # the listing: a 500, then a 503, then listed
        assert store.read(entry) == body  # a reset mid-body, a 503, a reset, then read
        assert proxy.injected == {"500": 1, "503": 2, "reset": 2}
        proxy.plan = lambda method, path, query: "reset"
        with pytest.raises(LandingReadError, match=r"dms/1.csv could not be read after 4"):
            store.read(entry)


def test_an_object_overwritten_after_the_listing_is_left_for_the_next_ingestion(
        s3_env, s3_bucket) -> None:
    from ragmart.ingest.landing import ingest_files, list_landing_files

    header = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at\n"

    def csv(seq: int, content: str) -> bytes:
        return (header + f"I,2026-11-02 09:00:00,{seq},doc-{seq},policy,T,{content},"
                "2026-11-02 09:00:00\n").encode()

    store = open_store(f"s3://{s3_bucket}/zone")
    store.put("dms/1.csv", csv(1, "first"))
    store.put("dms/2.csv", csv(2, "other"))
    listed = list_landing_files(store.url)
    store.put("dms/1.csv", csv(1, "rewritten"))  # between the listing and the read

    def ingest(files):
        return ingest_files(files, seen_keys=set(), seen_hashes=set(),
                            max_content_bytes=1_000_000).to_pylist()

    assert [(r["source_file"], r["content"]) for r in ingest(listed)] == [("dms/2.csv", "other")]
    again = [r for r in ingest(list_landing_files(store.url)) if r["source_file"] == "dms/1.csv"]
    assert [r["content"] for r in again] == ["rewritten"] and again[0]["file_etag"]


def test_an_empty_layout_folder_counts_on_s3_as_on_disk(store) -> None:
    """A file at the root beside an empty dms/ folder (on S3 a folder marker): the layout is
    there, so the file is listed (and quarantined by ingestion), not a misconfiguration."""
    from ragmart.ingest.landing import list_landing_files

    store.put("0000_batch.csv", b"x\n")
    with pytest.raises(LandingZoneError, match="holds no dms/ or debezium/ folder"):
        list_landing_files(store)
    if isinstance(store, LocalStore):
        (store.root / "dms").mkdir()
    else:
        store.put("dms/", b"")
    assert [f.relative_path for f in list_landing_files(store)] == ["0000_batch.csv"]
