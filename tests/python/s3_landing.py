"""Tests' side of an S3 landing zone: the environment that points ragmart at the test server,
and a dbt_harness.Project whose landing zone is a bucket/prefix on it."""

from __future__ import annotations

from dataclasses import dataclass

from dbt_harness import Project


def s3_environment(server, *, secret: str | None = None) -> dict[str, str]:
    """The settings a user writes for an S3-compatible endpoint (conftest.S3Server)."""
    return {
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret or server.secret_access_key,
        "AWS_REGION": server.region,
        "RAGMART_S3_ENDPOINT": server.endpoint,
        "RAGMART_S3_URL_STYLE": "path",
        "RAGMART_S3_USE_SSL": "false",
        # no profile or shared files of the machine running the tests
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


@dataclass
class S3Project(Project):
    """A Project whose landing zone is s3://<bucket>/<prefix> on the test server."""

    server: object = None
    bucket: str = ""
    prefix: str = "landing"
    endpoint: str | None = None  # another host:port in front of the server (a proxy)

    @property
    def landing_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def env(self) -> dict[str, str]:
        env = super().env()
        s3 = s3_environment(self.server)
        if self.endpoint:
            s3["RAGMART_S3_ENDPOINT"] = self.endpoint
        env.update(s3)
        env["RAGMART_LANDING_DIR"] = self.landing_url
        env.update(self.extra_env)
        return env

    def client(self):
        return self.server.client()

    def land(self, relative_path: str, data: bytes | str) -> str:
        body = data.encode() if isinstance(data, str) else data
        self.client().put_object(Bucket=self.bucket, Key=f"{self.prefix}/{relative_path}",
                                 Body=body)
        return f"{self.landing_url}/{relative_path}"

    def create_landing(self) -> None:
        """An empty landing zone: the prefix's folder marker."""
        self.client().put_object(Bucket=self.bucket, Key=f"{self.prefix}/", Body=b"")


LANDING_KINDS = ("local", "s3")


def new_bucket(server) -> str:
    import uuid

    name = f"ragmart-test-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return name


def landing_project(kind: str, workdir, request, **kwargs) -> Project:
    """A scratch Project whose (empty, existing) landing zone is a local folder ("local") or a
    prefix of a new bucket on the session's S3 server ("s3")."""
    if kind == "local":
        project = Project(workdir, **kwargs)
        project.landing.mkdir(parents=True, exist_ok=True)
        return project
    server = request.getfixturevalue("s3_server")
    project = S3Project(workdir, server=server, bucket=new_bucket(server), **kwargs)
    project.create_landing()
    return project
