"""Model transfer to the local cluster's model storage: streamed, resumable, verified, cached."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.objectstore import ObjectStore
from control.payloads.deployments import TransferFileInput, TransferFileResult

HEARTBEAT_EVERY_S = 1.0
VERIFIED_SUFFIX = ".bud-sha256"  # sidecar written after a verified copy: the cache key


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
        target = destination / request.path
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
        with open(partial, "ab") as out:
            if offset < request.size:
                async for chunk in self.store.stream(request.bucket, request.key, start=offset):
                    out.write(chunk)
                    digest.update(chunk)
                    copied += len(chunk)
                    if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
                        out.flush()
                        activity.heartbeat({"path": request.path, "offset": offset + copied})
                        last_beat = time.monotonic()
            out.flush()
            os.fsync(out.fileno())
        size = partial.stat().st_size
        if size != request.size:
            raise ApplicationError(f"{request.path}: copied {size} of {request.size} bytes", type="ShortCopy")
        if request.sha256 and digest.hexdigest() != request.sha256:
            partial.unlink()  # corrupt: start over on the retry
            raise ApplicationError(f"{request.path}: checksum {digest.hexdigest()[:12]}… does not match the "
                                   f"registry's {request.sha256[:12]}…", type="ChecksumMismatch")
        partial.replace(target)
        sidecar.write_text(request.sha256 or "")
        return TransferFileResult(path=request.path, destination=str(destination), bytes_copied=copied, skipped=False,
                                  resumed_from=resumed_from)
