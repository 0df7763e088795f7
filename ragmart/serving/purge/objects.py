"""What the landing step asks of an object store, and what a refusal means to the operator.

The landing step works on the landing store (``ragmart.ingest.store``): a local folder or an S3
prefix, one code path. On S3 each call is one request that a bucket policy may refuse; a purge
refused midway must not read as done, and the operator must learn which grant is missing, so a
refused call becomes a :class:`PurgeError` naming the IAM permission the request needs and the
object (the purge stays journaled and the next ``ragmart purge`` goes on from there). A version
that a lifecycle rule moved to an archive storage class cannot be read before it is restored:
the error says so. Errors that are not S3 answers (a local file) pass unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ragmart.serving.purge.deployment import PurgeError

# the request a landing-step call makes -> the IAM permission it needs
PERMISSIONS = {
    "list": "s3:ListBucket",
    "list_versions": "s3:ListBucketVersions",
    "read": "s3:GetObject",
    "read_version": "s3:GetObjectVersion",
    "put": "s3:PutObject",
    "delete": "s3:DeleteObject",
    "delete_version": "s3:DeleteObjectVersion",
}
DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
ARCHIVED = {"InvalidObjectState"}


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind `exc` (the store re-raises botocore's errors as its own, with
    the original as the context), or None when no S3 answer is behind it."""
    from botocore.exceptions import ClientError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return str(seen.response.get("Error", {}).get("Code") or "?")
        seen = seen.__cause__ or seen.__context__
    return None


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` is (or wraps) a failure to reach S3 at all (connection, timeout)."""
    from botocore.exceptions import BotoCoreError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BotoCoreError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def purge_failure(document_id: str | None, operation: str, location: str, exc: Exception,
                  version_id: str | None = None) -> Exception:
    """What the operator is told when landing-store call `operation` on `location` (a version
    of it when `version_id` is given) failed with `exc`: a PurgeError naming the permission S3
    refused, the archived version, or the failure; `exc` itself when no S3 answer is behind
    it (a local file's error)."""
    code = s3_error_code(exc)
    if isinstance(exc, PurgeError) or (code is None and not unreachable(exc)):
        return exc
    purge = f"purge of {document_id!r}" if document_id else "purge"
    what = location + (f" (version {version_id})" if version_id else "")
    finish = ("then run `ragmart purge` to finish it (the purge stays journaled; nothing done "
              "so far is undone)")
    if code in DENIED:
        permission = PERMISSIONS[operation]
        return PurgeError(
            f"{purge} stopped: S3 refused {permission} on {what} ({code}); grant {permission} "
            f"on the landing prefix to these credentials, {finish}")
    if code in ARCHIVED:
        return PurgeError(
            f"{purge} stopped: {what} is in an archive storage class and cannot be read "
            f"({code}); restore it (or delete it), {finish}")
    return PurgeError(
        f"{purge} stopped: {operation.replace('_', ' ')} of {what} failed "
        f"({code or type(exc).__name__}); check the S3 settings (RAGMART_S3_ENDPOINT, the "
        f"credentials), {finish}")


@contextlib.contextmanager
def store_call(document_id: str | None, operation: str, location: str,
               version_id: str | None = None) -> Iterator[None]:
    """Run one landing-store call of the purge of `document_id` (see :func:`purge_failure`)."""
    try:
        yield
    except Exception as exc:
        failure = purge_failure(document_id, operation, location, exc, version_id)
        if failure is exc:
            raise
        raise failure from None
