"""Object storage: where uploaded files (product images) live.

One port, two adapters, chosen by settings like every other adapter of the platform:

- ``LocalStorage``: files in a directory (the embedded shape: ``<data_dir>/media``);
- ``S3Storage``: a bucket of any S3-compatible store (AWS S3, MinIO, Ceph, R2...).

Keys are slash-separated relative paths such as ``products/<id>/<id>/thumb.webp``.
Every adapter accepts only plain keys (``validate_key``): no absolute paths, no ``.``
or ``..`` segments, no hidden segments, no backslashes, so a key can never name
anything outside the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")
# Content types of LocalStorage objects that their key's extension does not tell,
# beside (never among) the objects: no key segment starts with a dot, so no key
# reaches this directory.
_META_DIR = ".meta"
_DEFAULT_TYPE = "application/octet-stream"

mimetypes.add_type("image/webp", ".webp")


class InvalidObjectKey(ValueError):
    """A key that is not a plain relative path inside the store."""


def validate_key(key: str) -> str:
    """``key`` when it is a plain relative path; ``InvalidObjectKey`` otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidObjectKey("an object key has 1 to 1024 characters")
    segments = key.split("/")
    for segment in segments:
        # Refuses "" (a leading, doubled or trailing slash), "." and ".." and hidden
        # names (they start with a dot), backslashes, NUL and anything else unusual.
        if not _SEGMENT.match(segment):
            raise InvalidObjectKey(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    content_type: str
    # A strong validator, quoted as HTTP wants it: the same bytes, the same ETag.
    etag: str


class ObjectStorage(Protocol):
    """Where bytes are kept under keys. Every method may be awaited from the event loop."""

    async def start(self) -> None:
        """Prepare the store (create the directory or bucket when missing)."""

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what was there, all or nothing."""

    async def get(self, key: str) -> StoredObject | None:
        """The object under ``key``; ``None`` when there is none (or the key is invalid)."""

    async def delete(self, key: str) -> None:
        """Remove the object under ``key``; a missing object is not an error."""

    async def ready(self) -> bool:
        """Whether the store answers (for ``/readyz``)."""

    async def close(self) -> None:
        """Release connections."""


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _guess_type(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or _DEFAULT_TYPE


def _write_atomically(target: Path, data: bytes) -> None:
    """Write to a temporary file beside ``target``, flush it, then rename over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class LocalStorage:
    """Objects as files under one directory; readers never see a half-written file."""

    def __init__(self, directory: Path) -> None:
        self.root = Path(directory).resolve()

    def path_of(self, key: str) -> Path:
        """The file of ``key``, which is always inside the directory."""
        path = (self.root / validate_key(key)).resolve()
        # Defence in depth: a symlink placed inside the directory must not lead out.
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidObjectKey(f"invalid object key {key!r}")
        return path

    def _meta_of(self, key: str) -> Path:
        return self.root / _META_DIR / (validate_key(key) + ".json")

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_of(key)
        meta_path = self._meta_of(key)
        # The type is written down only when the key's extension does not tell it.
        meta = (
            None
            if content_type == _guess_type(key)
            else json.dumps({"content_type": content_type}).encode()
        )

        def write() -> None:
            # The metadata first: a reader that finds the file also finds its type.
            if meta is None:
                with contextlib.suppress(FileNotFoundError):
                    meta_path.unlink()
            else:
                _write_atomically(meta_path, meta)
            _write_atomically(path, data)

        await asyncio.to_thread(write)

    async def get(self, key: str) -> StoredObject | None:
        try:
            path = self.path_of(key)
        except InvalidObjectKey:
            return None

        def read() -> StoredObject | None:
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            meta: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads(self._meta_of(key).read_bytes())
            return StoredObject(
                data=data,
                content_type=str(meta.get("content_type") or _guess_type(key)),
                # From the bytes themselves, so it can never describe other bytes.
                etag=_etag(data),
            )

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        path = self.path_of(key)

        def remove() -> None:
            for target in (path, self._meta_of(key)):
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()

        await asyncio.to_thread(remove)

    async def ready(self) -> bool:
        return await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK))

    async def close(self) -> None:
        return None


class S3Storage:
    """Objects in a bucket of an S3-compatible store, through boto3 in worker threads.

    boto3 is synchronous; its clients are thread-safe, so one client serves every
    call, each run with ``asyncio.to_thread`` to keep the event loop free.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.region = region
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=Config(
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"max_attempts": 3, "mode": "standard"},
                # Self-hosted stores (MinIO, moto...) rarely have per-bucket DNS names.
                s3={"addressing_style": "path"} if endpoint_url else {},
            ),
        )

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    async def start(self) -> None:
        """Create the bucket when it does not exist yet."""
        from botocore.exceptions import ClientError

        def ensure() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if self._code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise
            arguments: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self._client.create_bucket(**arguments)
            except ClientError as exc:
                # Another process of the platform created it first.
                if self._code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

        await asyncio.to_thread(ensure)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        validate_key(key)
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
        )

    async def get(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            validate_key(key)
        except InvalidObjectKey:
            return None

        def fetch() -> StoredObject | None:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if self._code(exc) in {"NoSuchKey", "404", "NotFound"}:
                    return None
                raise
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()
            return StoredObject(
                data=data,
                content_type=str(response.get("ContentType") or _guess_type(key)),
                etag=str(response.get("ETag") or _etag(data)),
            )

        return await asyncio.to_thread(fetch)

    async def delete(self, key: str) -> None:
        validate_key(key)
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)

    async def ready(self) -> bool:
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
