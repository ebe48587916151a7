"""Activities on the S3 object store: list a model's objects, checksum them, move them into quarantine."""

from __future__ import annotations

import hashlib
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.logging import get_logger
from core.objectstore import ObjectNotFound, ObjectStore
from control.payloads.models import (
    ChecksumResult,
    FileRef,
    ListObjectsInput,
    ModelObject,
    ObjectListing,
    QuarantineInput,
)

log = get_logger(__name__)
HEARTBEAT_EVERY_S = 2.0


class ObjectStoreActivities:
    def __init__(self, store: ObjectStore):
        self.store = store

    @activity.defn
    async def list_model_objects(self, request: ListObjectsInput) -> ObjectListing:
        prefix = request.prefix.rstrip("/") + "/"
        found = await self.store.list_objects(request.bucket, prefix)
        objects = [ModelObject(key=o.key, path=o.key[len(prefix):], size=o.size, etag=o.etag) for o in found
                   if not o.key.endswith("/")]
        if not objects:
            raise ApplicationError(f"no objects under s3://{request.bucket}/{prefix}: upload the model first",
                                   type="NoObjects", non_retryable=True)
        if not any(o.path == "config.json" for o in objects):
            raise ApplicationError(f"config.json is missing under s3://{request.bucket}/{prefix}",
                                   type="MissingConfig", non_retryable=True)
        return ObjectListing(objects=sorted(objects, key=lambda o: o.path))

    @activity.defn
    async def checksum_object(self, ref: FileRef) -> ChecksumResult:
        """SHA-256 of one object, streamed (memory: one chunk), heartbeating the bytes done."""
        digest, done, last_beat = hashlib.sha256(), 0, time.monotonic()
        try:
            async for chunk in self.store.stream(ref.bucket, ref.object.key):
                digest.update(chunk)
                done += len(chunk)
                if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
                    activity.heartbeat({"path": ref.object.path, "bytes": done})
                    last_beat = time.monotonic()
        except ObjectNotFound as error:
            raise ApplicationError(f"{ref.object.path} disappeared while scanning: {error}", type="ObjectMissing",
                                   non_retryable=True) from error
        if done != ref.object.size:
            raise ApplicationError(f"{ref.object.path}: read {done} bytes, listed {ref.object.size}: changed during scan",
                                   type="ObjectChanged", non_retryable=True)
        return ChecksumResult(path=ref.object.path, size=done, sha256=digest.hexdigest())

    @activity.defn
    async def quarantine_objects(self, request: QuarantineInput) -> list[str]:
        """Move every object under the quarantine prefix (copy, then delete). Idempotent: a retry skips moved ones."""
        moved = []
        target_prefix = request.quarantine_prefix.rstrip("/") + "/"
        for obj in request.objects:
            target = target_prefix + obj.path
            if await self.store.exists(request.bucket, obj.key):
                await self.store.copy(request.bucket, obj.key, target, obj.size)
                await self.store.delete(request.bucket, obj.key)
            elif not await self.store.exists(request.bucket, target):
                raise ApplicationError(f"{obj.key} is neither in place nor in quarantine", type="ObjectMissing",
                                       non_retryable=True)
            moved.append(target)
            activity.heartbeat({"moved": len(moved)})
        log.info("quarantined model objects", count=len(moved), prefix=target_prefix)
        return moved
