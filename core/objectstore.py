"""The S3 object store (rclone serve s3 locally, any S3 in production): one client per process, streamed I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from core.settings import Settings

STREAM_CHUNK = 8 * 1024 * 1024


class ObjectStoreUnavailable(ConnectionError):
    """The store did not answer (transient: activities retry)."""


class ObjectNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix). ValueError with the reason otherwise."""
    if not uri.startswith("s3://"):
        raise ValueError("must be an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError("names no bucket")
    return bucket, prefix


class ObjectStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client = None

    async def __aenter__(self) -> "ObjectStore":
        session = aioboto3.Session()
        # Checksums only when required: a ranged GET (resuming a copy) returns the whole object's checksum, which the
        # client would otherwise compare with the partial body and reject. Integrity is ours: SHA-256 per file.
        config = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                        retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32,
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self._client = await self._stack.enter_async_context(session.client(
            "s3", endpoint_url=self.settings.s3_endpoint, aws_access_key_id=self.settings.s3_access_key,
            aws_secret_access_key=self.settings.s3_secret_key, region_name=self.settings.s3_region, config=config,
        ))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    @property
    def client(self):
        assert self._client is not None, "use ObjectStore as an async context manager"
        return self._client

    async def _call(self, method: str, **kwargs):
        try:
            return await getattr(self.client, method)(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                raise ObjectNotFound(f"{kwargs.get('Bucket')}/{kwargs.get('Key', kwargs.get('Prefix', ''))}: {code}") from error
            raise
        except (EndpointConnectionError, BotoCoreError, OSError) as error:
            raise ObjectStoreUnavailable(f"object store {self.settings.s3_endpoint} unavailable: {error}") from error

    async def list_objects(self, bucket: str, prefix: str, max_keys: int | None = None) -> list[ObjectInfo]:
        """Every object under `prefix`, or the first `max_keys` of them (a caller bounding a listing stops early)."""
        objects: list[ObjectInfo] = []
        token = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                objects.append(ObjectInfo(key=item["Key"], size=int(item["Size"]), etag=item.get("ETag", "").strip('"')))
            if max_keys is not None and len(objects) >= max_keys:
                return objects[:max_keys]
            if not page.get("IsTruncated"):
                return objects
            token = page["NextContinuationToken"]

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        reply = await self._call("head_object", Bucket=bucket, Key=key)
        return ObjectInfo(key=key, size=int(reply["ContentLength"]), etag=reply.get("ETag", "").strip('"'))

    async def stream(self, bucket: str, key: str, start: int = 0, chunk_size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
        """Yield the object's bytes from `start` in chunks; memory stays at one chunk."""
        kwargs = {"Bucket": bucket, "Key": key}
        if start:
            kwargs["Range"] = f"bytes={start}-"
        reply = await self._call("get_object", **kwargs)
        body = reply["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(chunk_size)
                except (BotoCoreError, OSError) as error:
                    raise ObjectStoreUnavailable(f"reading {bucket}/{key} failed: {error}") from error
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def read_range(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        reply = await self._call("get_object", Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        async with reply["Body"] as body:
            return await body.read()

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        reply = await self._call("get_object", Bucket=bucket, Key=key)
        async with reply["Body"] as body:
            return await body.read()

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        await self._call("put_object", Bucket=bucket, Key=key, Body=data)

    async def copy(self, bucket: str, source_key: str, target_key: str, size: int) -> None:
        """Server-side copy (multipart above 5 GiB, as S3 requires)."""
        part_limit = 5 * 1024**3
        if size <= part_limit:
            await self._call("copy_object", Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": source_key})
            return
        upload = await self._call("create_multipart_upload", Bucket=bucket, Key=target_key)
        parts, part_size = [], 1024**3
        for number, offset in enumerate(range(0, size, part_size), start=1):
            end = min(offset + part_size, size) - 1
            reply = await self._call("upload_part_copy", Bucket=bucket, Key=target_key, UploadId=upload["UploadId"],
                                     PartNumber=number, CopySource={"Bucket": bucket, "Key": source_key},
                                     CopySourceRange=f"bytes={offset}-{end}")
            parts.append({"PartNumber": number, "ETag": reply["CopyPartResult"]["ETag"]})
        await self._call("complete_multipart_upload", Bucket=bucket, Key=target_key, UploadId=upload["UploadId"],
                         MultipartUpload={"Parts": parts})

    async def delete(self, bucket: str, key: str) -> None:
        await self._call("delete_object", Bucket=bucket, Key=key)

    async def exists(self, bucket: str, key: str) -> bool:
        try:
            await self.head(bucket, key)
            return True
        except (ObjectNotFound, ClientError):
            return False
