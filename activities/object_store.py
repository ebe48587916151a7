"""Activities on the S3 object store: list a model's objects, checksum them, move them into quarantine.

What retrying cannot change fails at once (non-retryable, with the reason): a prefix that breaks the limits of
registry.model_objects, a missing bucket, an object deleted or replaced between listing and reading. The store not
answering retries, as every infrastructure failure does.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
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
from registry.model_objects import ModelObjectLimits, format_limit, format_size, path_problem

log = get_logger(__name__)
MAX_NAMED_OFFENDERS = 5  # a failure reason names this many offending files, then counts the rest


@contextlib.contextmanager
def object_errors(path: str) -> Iterator[None]:
    """Reading one listed object: it being gone, or shorter than listed, is permanent for this registration."""
    try:
        yield
    except ObjectNotFound as error:
        raise ApplicationError(f"{path} disappeared from the object store after it was listed (deleted or moved "
                               "during registration): upload it again and register again", type="ObjectMissing",
                               non_retryable=True) from error
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "InvalidRange":
            raise
        raise ApplicationError(f"{path} is shorter than when it was listed: it changed during registration",
                               type="ObjectChanged", non_retryable=True) from error


# Infrastructure not answering (the store, clamd, the network): retried for as long as it takes.
INFRASTRUCTURE_ERRORS = (ConnectionError, TimeoutError, ClientError)
UNEXPECTED_ERROR_ATTEMPTS = 3


@contextlib.contextmanager
def fails_after_retries(what: str) -> Iterator[None]:
    """An exception that is neither decided (an ApplicationError) nor infrastructure is a fault meeting this input:
    it is retried twice (the worker may be at fault), then fails the registration with its reason instead of
    retrying the same file forever."""
    try:
        yield
    except (ApplicationError, *INFRASTRUCTURE_ERRORS):
        raise
    except Exception as error:
        if activity.info().attempt < UNEXPECTED_ERROR_ATTEMPTS:
            raise
        raise ApplicationError(f"{what} failed {UNEXPECTED_ERROR_ATTEMPTS} times: {type(error).__name__}: "
                               f"{str(error)[:300]}", type="ScanFailed", non_retryable=True) from error


def _named(paths: list[str]) -> str:
    shown = ", ".join(repr(path) for path in paths[:MAX_NAMED_OFFENDERS])
    more = len(paths) - MAX_NAMED_OFFENDERS
    return shown + (f" and {more} more" if more > 0 else "")


class ObjectStoreActivities:
    def __init__(self, store: ObjectStore, limits: ModelObjectLimits = ModelObjectLimits()):
        self.store = store
        self.limits = limits

    @activity.defn
    async def list_model_objects(self, request: ListObjectsInput) -> ObjectListing:
        """The model's objects, sorted by path; FAILED (non-retryable) when there are none, no config.json, too
        many, one too large or one whose name is not a plain relative path (registry.model_objects)."""
        prefix = request.prefix.rstrip("/") + "/"
        location = f"s3://{request.bucket}/{prefix}"
        try:
            found = await self.store.list_objects(request.bucket, prefix, max_keys=self.limits.max_objects + 1)
        except ObjectNotFound as error:
            raise ApplicationError(f"{location}: the bucket does not exist", type="NoBucket",
                                   non_retryable=True) from error
        objects = [ModelObject(key=o.key, path=o.key[len(prefix):], size=o.size, etag=o.etag) for o in found
                   if not o.key.endswith("/")]
        if len(found) > self.limits.max_objects:
            raise ApplicationError(f"more than {self.limits.max_objects:,} objects under {location}: a model may hold "
                                   f"at most {self.limits.max_objects:,} files (was the right folder uploaded?)",
                                   type="TooManyObjects", non_retryable=True)
        if odd := [o.path for o in objects if path_problem(o.path)]:
            raise ApplicationError(f"unusable file name under {location}: {odd[0]!r} {path_problem(odd[0])} (all: "
                                   f"{_named(odd)}); model files need plain relative names, rename and upload again",
                                   type="BadFileName", non_retryable=True)
        if large := [o for o in objects if o.size > self.limits.max_file_bytes]:
            raise ApplicationError(f"{large[0].path} is {format_size(large[0].size)}, larger than the "
                                   f"{format_limit(self.limits.max_file_bytes)} limit per file"
                                   + (f" ({len(large) - 1} more files too)" if len(large) > 1 else "")
                                   + ": shard the weights into smaller files", type="FileTooLarge",
                                   non_retryable=True)
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
        digest, done = hashlib.sha256(), 0
        async with heartbeating({"path": ref.object.path, "bytes": 0}) as progress:
            with object_errors(ref.object.path):
                async for chunk in self.store.stream(ref.bucket, ref.object.key):
                    digest.update(chunk)
                    done += len(chunk)
                    progress["bytes"] = done
        if done != ref.object.size:
            raise ApplicationError(f"{ref.object.path}: read {done} bytes, listed {ref.object.size}: changed during scan",
                                   type="ObjectChanged", non_retryable=True)
        return ChecksumResult(path=ref.object.path, size=done, sha256=digest.hexdigest())

    @activity.defn
    async def quarantine_objects(self, request: QuarantineInput) -> list[str]:
        """Move every object under the quarantine prefix (copy, then delete). Idempotent: a retry skips moved ones."""
        moved = []
        target_prefix = request.quarantine_prefix.rstrip("/") + "/"
        async with heartbeating({"moved": 0}) as progress:  # one server-side copy of a large object takes minutes
            for obj in request.objects:
                target = target_prefix + obj.path
                if await self.store.exists(request.bucket, obj.key):
                    await self.store.copy(request.bucket, obj.key, target, obj.size)
                    await self.store.delete(request.bucket, obj.key)
                elif not await self.store.exists(request.bucket, target):
                    raise ApplicationError(f"{obj.key} is neither in place nor in quarantine", type="ObjectMissing",
                                           non_retryable=True)
                moved.append(target)
                progress["moved"] = len(moved)
        log.info("quarantined model objects", count=len(moved), prefix=target_prefix)
        return moved
