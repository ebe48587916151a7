"""Model transfer to the local cluster's model storage: streamed, resumable, verified, cached."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.objectstore import ObjectNotFound, ObjectStore
from control.payloads.deployments import TransferFileInput, TransferFileResult

HEARTBEAT_EVERY_S = 1.0
VERIFIED_SUFFIX = ".bud-sha256"  # sidecar written after a verified copy: the cache key
# A checksum or size that still disagrees after this many fresh copies means the object changed after the scan:
# copying again cannot fix it, so the deploy fails with the reason instead of retrying for ever.
COPY_ATTEMPTS = 2


def contained_path(root: Path, relative: str) -> Path:
    """`root / relative`, refusing any path that could land outside `root`: absolute paths, `..` parts, `~`, NUL
    bytes, or a link out (real S3 accepts such object keys even where the dev store does not)."""
    target = (root / relative).resolve() if relative and "\x00" not in relative else None
    if target is None or Path(relative).is_absolute() or ".." in Path(relative).parts or relative.startswith("~") \
            or not target.is_relative_to(root.resolve()):
        raise ApplicationError(f"{relative!r}: object path escapes the model folder; not copied", type="UnsafePath",
                               non_retryable=True)
    return target


class TransferActivities:
    def __init__(self, store: ObjectStore, cache_dir: Path):
        self.store = store
        self.cache_dir = cache_dir

    @activity.defn
    async def transfer_model_file(self, request: TransferFileInput) -> TransferFileResult:
        """Copy one object into the destination folder.

        Skips when a verified copy with the same checksum is there; resumes a partial copy from its size (the
        heartbeat records the offset too); verifies the SHA-256 against the registry before the file appears.
        """
        destination = self.cache_dir / str(request.model_id)
        target = contained_path(destination, request.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        sidecar = target.with_name(target.name + VERIFIED_SUFFIX)
        if target.exists() and target.stat().st_size == request.size and sidecar.exists() \
                and sidecar.read_text().strip() == (request.sha256 or ""):
            return TransferFileResult(path=request.path, destination=str(destination), bytes_copied=0, skipped=True)
        partial = target.with_name(target.name + ".part")
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > request.size:
            partial.unlink()
            offset = 0
        resumed_from, copied, last_beat = offset, 0, time.monotonic()
        # One pass: the checksum is computed while writing (a resumed copy first re-hashes what it already has).
        digest = hashlib.sha256()
        if offset:
            with open(partial, "rb") as existing:
                while block := existing.read(8 * 1024 * 1024):
                    digest.update(block)
        last_attempt = activity.info().attempt >= COPY_ATTEMPTS
        with open(partial, "ab") as out:
            if offset < request.size:
                try:
                    async for chunk in self.store.stream(request.bucket, request.key, start=offset):
                        out.write(chunk)
                        digest.update(chunk)
                        copied += len(chunk)
                        if offset + copied > request.size:
                            break  # larger than what was scanned: changed since; no need to read the rest
                        if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
                            out.flush()
                            activity.heartbeat({"path": request.path, "offset": offset + copied})
                            last_beat = time.monotonic()
                except ClientError as error:  # a range past the end: the object shrank since the scan
                    if error.response.get("Error", {}).get("Code") != "InvalidRange":
                        raise
                    partial.unlink(missing_ok=True)
                    raise ApplicationError(f"{request.path}: smaller than the {request.size} bytes the registry "
                                           "scanned; the object changed after the scan", type="ObjectChanged",
                                           non_retryable=True) from None
                except ObjectNotFound:
                    partial.unlink(missing_ok=True)
                    raise ApplicationError(f"{request.path}: the object is gone from the store "
                                           f"(s3://{request.bucket}/{request.key}); register the model again",
                                           type="ObjectMissing", non_retryable=True) from None
            out.flush()
            os.fsync(out.fileno())
        size = partial.stat().st_size
        if size > request.size:
            partial.unlink()
            raise ApplicationError(f"{request.path}: larger than the {request.size} bytes the registry scanned; the "
                                   "object changed after the scan", type="ObjectChanged", non_retryable=True)
        if size < request.size:  # the stream ended early: resumed on the retry, unless the object shrank
            if (await self.store.head(request.bucket, request.key)).size != request.size:
                partial.unlink()
                raise ApplicationError(f"{request.path}: the object no longer holds the {request.size} bytes the "
                                       "registry scanned; it changed after the scan", type="ObjectChanged",
                                       non_retryable=True)
            raise ApplicationError(f"{request.path}: copied {size} of the {request.size} bytes the registry scanned",
                                   type="ShortCopy", non_retryable=last_attempt)
        if request.sha256 and digest.hexdigest() != request.sha256:
            partial.unlink()  # corrupt: start over on the retry
            raise ApplicationError(f"{request.path}: checksum {digest.hexdigest()[:12]}… does not match the "
                                   f"registry's {request.sha256[:12]}…; the object changed after the scan",
                                   type="ChecksumMismatch", non_retryable=last_attempt)
        partial.replace(target)
        sidecar.write_text(request.sha256 or "")
        return TransferFileResult(path=request.path, destination=str(destination), bytes_copied=copied, skipped=False,
                                  resumed_from=resumed_from)
