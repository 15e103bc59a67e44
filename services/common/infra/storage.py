"""Object storage (S3 API: MinIO in production, SeaweedFS in dev/tests) through the `minio` SDK.

Every object written here carries its sha256 as user metadata (x-amz-meta-sha256), and reads verify it, so a
truncated or swapped object is detected instead of being rendered. Transient failures (connection errors,
5xx, SlowDown) are retried with bounded exponential backoff; client errors (4xx) are not.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, S3Error, ServerError

from services.common import config
from services.common.domain.errors import InputError, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

SHA256_META = "sha256"  # stored as x-amz-meta-sha256
DEFAULT_BUCKET = "likeness"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum multipart part size
_SPOOL_IN_MEMORY = 8 * 1024 * 1024  # streamed uploads larger than this spool to a temp file
_COPY_CHUNK = 1024 * 1024
_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ObjectNotFoundError(LookupError):
    """The key (or its bucket) does not exist."""


class IntegrityError(RuntimeError):
    """Stored bytes do not match the object's sha256 metadata."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    sha256: str | None  # None only for objects not written through Storage
    size: int
    content_type: str
    etag: str  # multipart uploads have an etag ending in "-<parts>"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_S3_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # non-XML body, e.g. a proxy's 502 page
        return getattr(exc, "_code", 0) >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _check_key(key: str) -> None:
    if not key or key.startswith("/"):
        raise ValueError(f"invalid object key {key!r}")


def _normalize_sha256(declared: str, field: str) -> str:
    value = declared.strip().lower()
    if not _SHA256_RE.match(value):
        raise InputError(field, "sha256 must be 64 hex digits")
    return value


class Storage:
    """One bucket on an S3 endpoint ("host:port")."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str = DEFAULT_BUCKET,
        *,
        secure: bool = False,
        region: str = "us-east-1",  # MinIO's default; a fixed region spares a GetBucketLocation round trip
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        part_size: int = MIN_PART_SIZE,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be >= {MIN_PART_SIZE}")
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.part_size = part_size
        # urllib3's own retries are off: _retry below is the single, bounded retry policy.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=False,
            maxsize=10,
        )
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )

    @classmethod
    def from_env(cls, bucket: str | None = None) -> Storage:
        """LIKENESS_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY/BUCKET/SECURE/MAX_ATTEMPTS."""
        access_key = config.get_str("LIKENESS_S3_ACCESS_KEY")
        secret_key = config.get_str("LIKENESS_S3_SECRET_KEY")
        if not access_key or not secret_key:
            raise RuntimeError("LIKENESS_S3_ACCESS_KEY and LIKENESS_S3_SECRET_KEY must be set")
        return cls(
            config.get_str("LIKENESS_S3_ENDPOINT"),
            access_key,
            secret_key,
            bucket or config.get_str("LIKENESS_S3_BUCKET"),
            secure=config.get_bool("LIKENESS_S3_SECURE"),
            max_attempts=config.get_int("LIKENESS_S3_MAX_ATTEMPTS"),
        )

    # -- retry -----------------------------------------------------------------------------------------------

    def _retry(self, what: str, op: Callable[[], T]) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return op()
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_transient(exc):
                    raise
                if attempt == self.max_attempts:
                    raise StorageUnavailable(f"object storage unreachable ({what}, {attempt} attempts): {exc}") from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                log.warning("s3 %s failed (attempt %d/%d): %s; retrying in %.2fs",
                            what, attempt, self.max_attempts, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _raise_if_not_found(self, exc: S3Error, key: str) -> None:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
            raise ObjectNotFoundError(f"s3://{self.bucket}/{key}: {exc.code}") from exc

    # -- bucket ----------------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        def op() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # another replica created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._retry("ensure_bucket", op)

    # -- writes ----------------------------------------------------------------------------------------------

    def _put_seekable(self, key: str, data: BinaryIO, size: int, sha256: str, content_type: str) -> ObjectInfo:
        def op() -> ObjectInfo:
            data.seek(0)
            result = self.client.put_object(
                self.bucket, key, data, size, content_type=content_type,
                metadata={SHA256_META: sha256}, part_size=self.part_size,
            )
            return ObjectInfo(self.bucket, key, sha256, size, content_type, (result.etag or "").strip('"'))
        return self._retry(f"put {key}", op)

    def put_bytes(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> ObjectInfo:
        _check_key(key)
        return self._put_seekable(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), content_type)

    def put_file(self, key: str, path: str | Path, content_type: str = DEFAULT_CONTENT_TYPE) -> ObjectInfo:
        _check_key(key)
        with open(path, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
            size = f.tell()
            return self._put_seekable(key, f, size, sha, content_type)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        max_size: int,
        expected_sha256: str | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
        field: str = "asset",
    ) -> ObjectInfo:
        """Upload a stream of chunks (e.g. a client-streaming gRPC upload).

        The stream is spooled locally (memory up to 8 MiB, then a temp file) so that nothing reaches storage
        unless it is within `max_size` and matches `expected_sha256`; violations raise InputError(field, ...).
        Spooling also makes the upload retryable and lets large ones go multipart.
        """
        _check_key(key)
        declared = _normalize_sha256(expected_sha256, field) if expected_sha256 is not None else None
        digest = hashlib.sha256()
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise InputError(field, f"too large: more than {max_size} bytes")
                digest.update(chunk)
                spool.write(chunk)
            sha = digest.hexdigest()
            if declared is not None and sha != declared:
                raise InputError(field, f"sha256 mismatch: declared {declared}, received {sha} ({size} bytes)")
            return self._put_seekable(key, cast(BinaryIO, spool), size, sha, content_type)

    def copy(self, source: str, key: str) -> None:
        """A server-side copy (no bytes through this process), metadata (the sha256) included."""
        _check_key(source)
        _check_key(key)
        try:
            self._retry(f"copy {source}", lambda: self.client.copy_object(self.bucket, key, CopySource(self.bucket, source)))
        except S3Error as exc:
            self._raise_if_not_found(exc, source)
            raise

    def delete(self, key: str) -> None:
        """Delete `key`; deleting a missing key is not an error (S3 semantics)."""
        _check_key(key)
        self._retry(f"delete {key}", lambda: self.client.remove_object(self.bucket, key))

    # -- reads -----------------------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        _check_key(key)
        try:
            obj = self._retry(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        except S3Error as exc:
            self._raise_if_not_found(exc, key)
            raise
        sha = obj.metadata.get(f"x-amz-meta-{SHA256_META}") if obj.metadata is not None else None
        return ObjectInfo(
            self.bucket, key, sha, int(obj.size or 0), obj.content_type or DEFAULT_CONTENT_TYPE,
            (obj.etag or "").strip('"'),
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def _download(self, key: str, sink: BinaryIO) -> None:
        """Stream `key` into `sink`, verifying the sha256 metadata."""
        def op() -> None:
            sink.seek(0)
            sink.truncate()
            response = self.client.get_object(self.bucket, key)
            try:
                declared = response.headers.get(f"x-amz-meta-{SHA256_META}")
                digest = hashlib.sha256()
                for block in response.stream(_COPY_CHUNK):
                    digest.update(block)
                    sink.write(block)
            finally:
                response.close()
                response.release_conn()
            if declared and digest.hexdigest() != declared.lower():
                raise IntegrityError(f"s3://{self.bucket}/{key}: sha256 {digest.hexdigest()} != metadata {declared}")
        try:
            self._retry(f"get {key}", op)
        except S3Error as exc:
            self._raise_if_not_found(exc, key)
            raise

    def get_bytes(self, key: str) -> bytes:
        _check_key(key)
        buf = io.BytesIO()
        self._download(key, buf)
        return buf.getvalue()

    def get_file(self, key: str, path: str | Path) -> Path:
        """Download to `path` atomically (a partial download never appears at `path`)."""
        _check_key(key)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w+b") as tmp:
                self._download(key, tmp)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (recursive), sorted."""
        return self._retry(
            f"list {prefix}",
            lambda: sorted(o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                           if o.object_name is not None),
        )

    def list_with_times(self, prefix: str = "") -> list[tuple[str, float]]:
        """(key, last modified as Unix seconds) under `prefix` (recursive), sorted by key."""
        return self._retry(
            f"list {prefix}",
            lambda: sorted((o.object_name, o.last_modified.timestamp())
                           for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                           if o.object_name is not None and o.last_modified is not None),
        )

    def presigned_get_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL anyone can GET until `expires` elapses (signed locally; no request is made)."""
        _check_key(key)
        return self.client.presigned_get_object(self.bucket, key, expires=expires)

    # -- housekeeping (tests, dev) ---------------------------------------------------------------------------

    def remove_bucket(self) -> None:
        """Delete every object and then the bucket itself."""
        for key in self.list():
            self.delete(key)
        self._retry("remove_bucket", lambda: self.client.remove_bucket(self.bucket))


__all__ = ["IntegrityError", "MIN_PART_SIZE", "ObjectInfo", "ObjectNotFoundError", "Storage"]
