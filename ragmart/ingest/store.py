"""Where landed files are kept: a local folder or an S3 bucket/prefix, behind one interface.

:func:`open_store` chooses the store from the landing setting (RAGMART_LANDING_DIR): an
``s3://bucket/prefix`` URL is an :class:`S3Store`, anything else a :class:`LocalStore`. Both
:meth:`~LandingStore.list` the landing zone as :class:`StoreEntry` rows (the key relative to the
landing root, '/'-separated, with size, ETag, version id and modification time) and
:meth:`~LandingStore.read` exactly the listed version of an entry: an S3 object overwritten
between the listing and the read is never read as the listed one (GetObject with the VersionId
when the entry has one, else If-Match on its ETag; a mismatch raises :class:`ObjectChangedError`).

S3 shows an object only once its upload is complete (a multipart upload in progress is not
listed), so a store never lists half an object. Reads are retried: botocore retries 5xx and
SlowDown responses (``ragmart.ingest.s3_settings``), and a read cut mid-body is read again here;
a read that still fails raises :class:`LandingReadError`, so the build fails and the next one
reads the file. A landing zone that does not exist or cannot be listed raises
:class:`LandingZoneError` naming it (never an empty listing).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"
READ_ATTEMPTS = 4  # a body cut mid-read is read again this many times in all


class LandingZoneError(RuntimeError):
    """The landing zone is missing, unreadable or holds no layout: the build must fail, naming
    it."""


class LandingReadError(RuntimeError):
    """A landed object could not be read completely (after retries): the build fails and the
    object is read by the next build."""


class ObjectChangedError(LandingReadError):
    """The listed version of an object is gone (overwritten or deleted since the listing): the
    next listing shows what is there now."""


@dataclass(frozen=True)
class StoreEntry:
    key: str  # relative to the landing root, '/'-separated: ``dms/0001_x.csv``
    size: int
    last_modified: dt.datetime  # naive UTC
    etag: str | None = None  # S3: the object's ETag (quotes removed); local: None
    version_id: str | None = None  # S3 versioned buckets (list_versions); else None
    is_latest: bool = True  # list_versions: False for a noncurrent version


_EPOCH = dt.datetime(1970, 1, 1)


def _modified(st: os.stat_result) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=st.st_mtime_ns // 1000)


def naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def replace_file(path: Path, data: bytes, tmp: Path) -> None:
    """Replace `path` by `data` in one rename from `tmp` (written and synced first; the mode of
    `path` kept when it exists): a reader, or a writer killed midway, never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_s3_url(landing: str | Path) -> bool:
    """Whether a landing setting names S3. A ``Path`` made of ``s3://b/p`` reads ``s3:/b/p``:
    both spellings are S3."""
    return str(landing).startswith("s3:/")


def open_store(landing: str | Path) -> LandingStore:
    """The store a landing setting names (RAGMART_LANDING_DIR or the dbt var landing_dir)."""
    if is_s3_url(landing):
        return S3Store.from_url(str(landing))
    return LocalStore(landing)


class LandingStore:
    """The interface both stores implement."""

    url: str  # how errors and reports name the landing zone

    def list(self) -> list[StoreEntry]:
        """Every object under the root (hidden names included), sorted by key."""
        raise NotImplementedError

    def top_level(self, entries: list[StoreEntry]) -> set[str]:
        """The names directly under the root (folders end with '/'), hidden ones left out."""
        names = set()
        for entry in entries:
            first, sep, _ = entry.key.partition("/")
            if not first.startswith("."):
                names.add(first + sep)
        return names

    def read(self, entry: StoreEntry) -> bytes:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> StoreEntry:
        raise NotImplementedError

    def delete(self, key: str, version_id: str | None = None) -> None:
        raise NotImplementedError

    def list_versions(self) -> list[StoreEntry]:
        """Every version of every object, noncurrent ones too (``is_latest`` false); a store
        that keeps no versions lists each object once."""
        return self.list()

    def location(self, key: str) -> str:
        """The full name of an object (a path or an s3:// URL)."""
        raise NotImplementedError


class LocalStore(LandingStore):
    """A local folder: keys are paths under it; hidden folders are not walked."""

    def __init__(self, root: str | Path) -> None:
        self.given = root
        self.root = Path(root).expanduser()
        self.url = str(self.root.absolute())

    def describe(self) -> str:
        where = f"landing directory {self.url}"
        if not self.root.is_absolute():
            where += f" ({str(self.given)!r} resolved from the current directory {Path.cwd()})"
        return where

    def list(self) -> list[StoreEntry]:
        fix = ("set RAGMART_LANDING_DIR (or --vars '{landing_dir: ...}') to the folder that holds "
               "dms/ and debezium/")
        if not self.root.exists():
            raise LandingZoneError(
                f"{self.describe()} does not exist; {fix}, or create it (an empty landing zone "
                "is valid)")
        if not self.root.is_dir():
            raise LandingZoneError(f"{self.describe()} is not a directory; {fix}")
        entries = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                path = Path(folder) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed while listing: it is not there
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                entries.append(StoreEntry(
                    key=path.relative_to(self.root).as_posix(),
                    size=st.st_size,
                    last_modified=_modified(st),
                ))
        return sorted(entries, key=lambda e: e.key)

    def top_level(self, entries: list[StoreEntry]) -> set[str]:
        return {p.name + ("/" if p.is_dir() else "") for p in self.root.iterdir()
                if not p.name.startswith(".")}

    def location(self, key: str) -> str:
        return str((self.root / key).absolute())

    def read(self, entry: StoreEntry) -> bytes:
        return (self.root / entry.key).read_bytes()

    def put(self, key: str, data: bytes) -> StoreEntry:
        """Replace the file in one rename, as a PutObject replaces an object: a reader, or a
        put killed midway, never leaves half a file (the temporary name is hidden, so
        ingestion skips it; its mode is kept)."""
        path = self.root / key
        replace_file(path, data, path.with_name(f".{path.name}.put-{os.getpid()}"))
        st = path.stat()
        return StoreEntry(key, st.st_size, _modified(st))

    def delete(self, key: str, version_id: str | None = None) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Store(LandingStore):
    """A bucket and prefix on any S3-compatible endpoint (settings: ragmart.ingest.s3_settings)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self._folders: set[str] = set()  # the top-level folder markers of the last listing
        self.url = f"{S3_SCHEME}{bucket}" + (f"/{self.prefix}" if self.prefix else "")

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        from ragmart.ingest.s3_settings import S3Settings

        rest = url.split(":/", 1)[1].lstrip("/")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise LandingZoneError(
                f"landing zone {url!r} names no bucket: write s3://bucket or s3://bucket/prefix")
        return cls(bucket, prefix, S3Settings.from_env().client())

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _fail(self, exc: Exception, doing: str) -> LandingZoneError:
        from botocore.exceptions import ClientError

        fix = ("check RAGMART_LANDING_DIR, the bucket, RAGMART_S3_ENDPOINT and the credentials "
               "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "?")
            if code in ("NoSuchBucket", "404"):
                return LandingZoneError(
                    f"landing zone {self.url}: bucket {self.bucket} does not exist; {fix}")
            return LandingZoneError(
                f"landing zone {self.url} is not readable ({code} on {doing}); {fix}")
        return LandingZoneError(
            f"landing zone {self.url} is not reachable ({type(exc).__name__} on {doing}); {fix}")

    def _pages(self, operation: str) -> list[dict]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator(operation).paginate(
                Bucket=self.bucket, Prefix=prefix)
            return list(pages)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, operation) from None

    def _relative(self, key: str) -> str | None:
        """The key under the root; None for the root's folder marker and other folder
        markers (zero-byte keys ending in '/'), which are not files."""
        if self.prefix:
            key = key[len(self.prefix) + 1:]
        return key if key and not key.endswith("/") else None

    def _note_folder(self, key: str) -> None:
        """Remember a top-level folder marker (``dms/``, zero bytes): S3 has no folders, and an
        operator creates an empty layout folder as a marker, as the README shows."""
        relative = key[len(self.prefix) + 1:] if self.prefix else key
        first, sep, rest = relative.partition("/")
        if first and sep and not rest:
            self._folders.add(first + "/")

    def top_level(self, entries: list[StoreEntry]) -> set[str]:
        """The names directly under the root, the folder markers of the last listing too."""
        return super().top_level(entries) | {
            name for name in self._folders if not name.startswith(".")}

    def _check_exists(self, pages: list[dict], field: str) -> None:
        if self.prefix and not any(page.get(field) for page in pages):
            raise LandingZoneError(
                f"landing zone {self.url} does not exist (no object under s3://{self.bucket}/"
                f"{self.prefix}/); check RAGMART_LANDING_DIR, or create it: an empty landing "
                f"zone is a folder marker, e.g. `aws s3api put-object --bucket {self.bucket} "
                f"--key {self.prefix}/`")

    def _entries(self, operation: str, field: str) -> list[StoreEntry]:
        """The objects (``Contents``) or versions (``Versions``) a listing operation returns."""
        pages = self._pages(operation)
        self._check_exists(pages, field)
        entries = []
        self._folders = set()
        for page in pages:
            for obj in page.get(field, []):
                self._note_folder(obj["Key"])
                key = self._relative(obj["Key"])
                if key is not None:
                    entries.append(StoreEntry(
                        key=key, size=int(obj["Size"]),
                        last_modified=naive_utc(obj["LastModified"]),
                        etag=obj.get("ETag", "").strip('"') or None,
                        version_id=obj.get("VersionId"), is_latest=obj.get("IsLatest", True)))
        return entries

    def list(self) -> list[StoreEntry]:
        return sorted(self._entries("list_objects_v2", "Contents"), key=lambda e: e.key)

    def list_versions(self) -> list[StoreEntry]:
        """Every version of every object (current and noncurrent; delete markers left out), with
        its version id; an unversioned bucket lists each object once (version id ``null``)."""
        return sorted(self._entries("list_object_versions", "Versions"),
                      key=lambda e: (e.key, not e.is_latest, e.last_modified))

    def read(self, entry: StoreEntry) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, str] = {"Bucket": self.bucket, "Key": self._key(entry.key)}
        if entry.version_id and entry.version_id != "null":
            request["VersionId"] = entry.version_id
        elif entry.etag:
            request["IfMatch"] = f'"{entry.etag}"'
        where = self.location(entry.key)
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                response = self.client.get_object(**request)
                data = response["Body"].read()
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                if code in ("PreconditionFailed", "412", "NoSuchKey", "NoSuchVersion"):
                    raise ObjectChangedError(
                        f"{where} changed since it was listed ({code}): read again by the "
                        "next build") from None
                raise LandingReadError(f"{where} could not be read ({code})") from None
            except BotoCoreError as exc:  # a connection reset or a body cut mid-read
                if attempt == READ_ATTEMPTS:
                    raise LandingReadError(
                        f"{where} could not be read after {attempt} attempts "
                        f"({type(exc).__name__}); the next build reads it") from None
                continue
            if len(data) == entry.size:
                return data
        raise LandingReadError(f"{where} did not read as {entry.size} bytes")

    def put(self, key: str, data: bytes) -> StoreEntry:
        response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return StoreEntry(key, len(data), naive_utc(head["LastModified"]),
                          etag=response.get("ETag", "").strip('"') or None,
                          version_id=response.get("VersionId"))

    def delete(self, key: str, version_id: str | None = None) -> None:
        request = {"Bucket": self.bucket, "Key": self._key(key)}
        if version_id:
            request["VersionId"] = version_id
        self.client.delete_object(**request)
