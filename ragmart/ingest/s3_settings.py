"""How ragmart reaches an S3 landing zone: the settings, read once here for boto3 (ingestion,
``ragmart freshness``, purge) and DuckDB's httpfs (``dbt source freshness``, read_blob).

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, instance roles); ragmart never prints,
logs or stores them. The region is AWS_REGION or AWS_DEFAULT_REGION (default us-east-1). For
S3-compatible stores (MinIO, R2): RAGMART_S3_ENDPOINT (``host:port`` or a URL),
RAGMART_S3_URL_STYLE (``path`` or ``vhost``) and RAGMART_S3_USE_SSL (``true``/``false``).
Requests are retried explicitly (``standard`` mode, :data:`MAX_ATTEMPTS`): 5xx, SlowDown and
throttling answers and connection errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

MAX_ATTEMPTS = 6  # botocore attempts per request (the first one included)
DEFAULT_REGION = "us-east-1"
TIMEOUT_SECONDS = 30


class S3SettingsError(ValueError):
    pass


def _flag(name: str, default: bool) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise S3SettingsError(f"{name}={text!r} is not valid: write true or false")


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None  # host[:port], None for AWS
    use_ssl: bool
    url_style: str  # path | vhost
    region: str

    @classmethod
    def from_env(cls) -> S3Settings:
        endpoint = os.environ.get("RAGMART_S3_ENDPOINT", "").strip() or None
        use_ssl = _flag("RAGMART_S3_USE_SSL", True)
        if endpoint and "://" in endpoint:
            scheme, _, endpoint = endpoint.partition("://")
            if scheme not in ("http", "https"):
                raise S3SettingsError(
                    f"RAGMART_S3_ENDPOINT scheme {scheme!r} is not valid: write host:port, "
                    "http://host:port or https://host:port")
            if "RAGMART_S3_USE_SSL" not in os.environ:
                use_ssl = scheme == "https"
            endpoint = endpoint.rstrip("/")
        style = os.environ.get("RAGMART_S3_URL_STYLE", "").strip().lower() or "vhost"
        if style not in ("path", "vhost"):
            raise S3SettingsError(
                f"RAGMART_S3_URL_STYLE={style!r} is not valid: write path or vhost")
        region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                  or DEFAULT_REGION).strip()
        return cls(endpoint, use_ssl, style, region)

    @property
    def endpoint_url(self) -> str | None:
        if not self.endpoint:
            return None
        return f"{'https' if self.use_ssl else 'http'}://{self.endpoint}"

    def client(self) -> Any:
        """A boto3 S3 client with explicit retries and timeouts."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS,
            s3={"addressing_style": "path" if self.url_style == "path" else "virtual"},
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, use_ssl=self.use_ssl, config=config)

    def duckdb_secret_sql(self) -> str:
        """A temporary DuckDB secret (``CREATE SECRET``) for httpfs, from the credentials boto3
        resolves. Never log or print the statement: it holds the secret key."""
        import boto3

        from ragmart.retrieval.values import sql_text as _literal

        credentials = boto3.session.Session().get_credentials()
        options = {"TYPE": "s3", "REGION": _literal(self.region),
                   "URL_STYLE": _literal(self.url_style),
                   "USE_SSL": "true" if self.use_ssl else "false"}
        if self.endpoint:
            options["ENDPOINT"] = _literal(self.endpoint)
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options["KEY_ID"] = _literal(frozen.access_key)
            options["SECRET"] = _literal(frozen.secret_key)
            if frozen.token:
                options["SESSION_TOKEN"] = _literal(frozen.token)
        body = ", ".join(f"{k} {v}" for k, v in options.items())
        return f"create or replace temporary secret ragmart_landing ({body})"


def configure_duckdb(conn: Any) -> None:
    """Let a DuckDB connection read the S3 landing zone (read_blob for `dbt source
    freshness`): httpfs from its wheel and a temporary secret from the environment. The
    secret is never in an error message: a failure names only what failed."""
    import importlib.util

    from ragmart.duck import load_extension

    if importlib.util.find_spec("pytz") is None:  # DuckDB's read_blob over S3 imports it
        raise S3SettingsError("an s3:// landing zone needs the pytz package: pip install pytz")
    load_extension(conn, "httpfs")
    statement = S3Settings.from_env().duckdb_secret_sql()
    try:
        conn.execute(statement)
    except Exception as exc:  # the message could quote the statement, which holds the secret
        raise S3SettingsError(
            f"could not create DuckDB's S3 secret for the landing zone ({type(exc).__name__}); "
            "check AWS_REGION, RAGMART_S3_ENDPOINT, RAGMART_S3_URL_STYLE and "
            "RAGMART_S3_USE_SSL") from None
