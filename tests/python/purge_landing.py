"""The landing zone a purge test works on: a local folder, or the same files under a prefix of a
bucket on the test S3 server (``conftest.s3_server``), seen the same way by the tests.

A deployment built from the local folder is moved onto S3 by :func:`move_to_s3`: its files are
uploaded under ``s3://bucket/landing/`` and the local folder removed, so nothing of the landing
zone is left on disk and every byte a test finds is in the bucket.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dbt_harness import Project
from s3_landing import S3Project

PREFIX = "landing"


def forms(text: str) -> set[bytes]:
    """`text` as a file could hold it: UTF-8, UTF-16-LE/BE, each raw and JSON-escaped."""
    import json

    escaped = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    return {s.encode(enc) for s in escaped for enc in ("utf-8", "utf-16-le", "utf-16-be")}


@dataclass
class LocalLanding:
    """The landing folder of a deployment."""

    project: Project

    def name(self, relative_path: str) -> str:
        """How ragmart names the file (in plans, reports and errors)."""
        return str(self.project.landing / relative_path)

    def land(self, relative_path: str, data: bytes | str) -> str:
        return str(self.project.land(relative_path, data))

    def remove(self, relative_path: str) -> None:
        (self.project.landing / relative_path).unlink()

    def states(self) -> dict[str, tuple]:
        """relative path -> what changes when the file is written."""
        root = self.project.landing
        return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in root.rglob("*") if p.is_file()}

    def traces(self, text: str) -> list[str]:
        """Relative paths of the files holding `text` (see :func:`forms`)."""
        wanted = forms(text)
        root = self.project.landing
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and any(w in p.read_bytes() for w in wanted))


@dataclass
class S3Landing:
    """A prefix of a bucket as the deployment's landing zone; every version of every object
    counts (a noncurrent version is as readable as the current one, by anyone allowed
    s3:GetObjectVersion)."""

    project: S3Project

    @property
    def url(self) -> str:
        return self.project.landing_url

    def name(self, relative_path: str) -> str:
        return f"{self.url}/{relative_path}"

    def land(self, relative_path: str, data: bytes | str) -> str:
        return self.project.land(relative_path, data)

    def remove(self, relative_path: str) -> None:
        self.project.client().delete_object(Bucket=self.project.bucket,
                                            Key=f"{PREFIX}/{relative_path}")

    def versions(self) -> list[dict]:
        """Every version and delete marker under the prefix (boto3's dicts, plus "Marker")."""
        out: list[dict] = []
        for page in self.project.client().get_paginator("list_object_versions").paginate(
                Bucket=self.project.bucket, Prefix=f"{PREFIX}/"):
            out += [{**v, "Marker": False} for v in page.get("Versions", [])]
            out += [{**m, "Marker": True} for m in page.get("DeleteMarkers", [])]
        return out

    def states(self) -> dict[str, tuple]:
        """relative path -> (version id, ETag) of each current object."""
        return {v["Key"][len(PREFIX) + 1:]: (v["VersionId"], v.get("ETag"))
                for v in self.versions() if v["IsLatest"] and not v["Marker"]}

    def read(self, relative_path: str, version_id: str | None = None) -> bytes:
        """The current bytes of an object, or those of one of its versions."""
        extra = {"VersionId": version_id} if version_id else {}
        return self.project.client().get_object(
            Bucket=self.project.bucket, Key=f"{PREFIX}/{relative_path}", **extra)["Body"].read()

    def traces(self, text: str) -> list[str]:
        """Relative paths of the objects with a version, current or not, holding `text` (see
        :func:`forms`)."""
        wanted = forms(text)
        return sorted({v["Key"][len(PREFIX) + 1:] for v in self.versions() if not v["Marker"]
                       and any(w in self.read(v["Key"][len(PREFIX) + 1:], v["VersionId"])
                               for w in wanted)})


def move_to_s3(project: Project, server: object, bucket: str, *, versioned: bool = False,
               source: Path | None = None) -> S3Landing:
    """The deployment with its landing folder (or `source`, a copy of it) uploaded under
    s3://bucket/landing/ and the folder removed."""
    s3 = S3Project(project.workdir, provider=project.provider,
                   extra_env=dict(project.extra_env), server=server, bucket=bucket,
                   prefix=PREFIX)
    if versioned:
        server.client().put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    folder = source or project.landing
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.land(path.relative_to(folder).as_posix(), path.read_bytes())
    shutil.rmtree(project.landing, ignore_errors=True)
    return S3Landing(s3)
