"""The transfer activity against the real S3 server: resume from a partial copy, verify, skip cached, refuse corrupt."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.transfer import TransferActivities
from core.objectstore import ObjectStore
from control.payloads.deployments import TransferFileInput
from tests.helpers import unique


async def put(settings, data: bytes) -> str:
    key = f"{unique('transfer')}/weights.bin"
    async with ObjectStore(settings) as store:
        await store.put_bytes(settings.models_bucket, key, data)
    return key


async def test_resume_verify_and_cache(settings, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)
    key = await put(settings, data)
    request = TransferFileInput(bucket=settings.models_bucket, key=key, path="weights.bin", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest(), model_id=uuid.uuid4())
    async with ObjectStore(settings) as store:
        activities = TransferActivities(store, tmp_path)
        folder = tmp_path / str(request.model_id)
        folder.mkdir()
        (folder / "weights.bin.part").write_bytes(data[:1_000_000])  # what a killed worker left behind
        first = await ActivityEnvironment().run(activities.transfer_model_file, request)
        assert first.resumed_from == 1_000_000 and first.bytes_copied == len(data) - 1_000_000
        assert (folder / "weights.bin").read_bytes() == data and not (folder / "weights.bin.part").exists()
        again = await ActivityEnvironment().run(activities.transfer_model_file, request)
        assert again.skipped and again.bytes_copied == 0


async def test_corrupt_copy_is_refused_and_discarded(settings, tmp_path):
    data = os.urandom(512 * 1024)
    key = await put(settings, data)
    request = TransferFileInput(bucket=settings.models_bucket, key=key, path="weights.bin", size=len(data),
                                sha256="0" * 64, model_id=uuid.uuid4())
    async with ObjectStore(settings) as store:
        activities = TransferActivities(store, tmp_path)
        with pytest.raises(ApplicationError, match="does not match the registry"):
            await ActivityEnvironment().run(activities.transfer_model_file, request)
    folder = tmp_path / str(request.model_id)
    assert list(folder.iterdir()) == []  # neither the file nor a partial copy is left to be trusted later


def attempt(number: int) -> ActivityEnvironment:
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, attempt=number)
    return environment


async def test_an_object_changed_after_the_scan_fails_for_good_with_the_reason(settings, tmp_path):
    """One fresh copy is tried again (a flipped bit in flight); a second mismatch is final, never retried for ever."""
    scanned = os.urandom(256 * 1024)
    key = await put(settings, b"x" * len(scanned))  # same size, other bytes: replaced after the scan
    request = TransferFileInput(bucket=settings.models_bucket, key=key, path="weights.bin", size=len(scanned),
                                sha256=hashlib.sha256(scanned).hexdigest(), model_id=uuid.uuid4())
    async with ObjectStore(settings) as store:
        activities = TransferActivities(store, tmp_path)
        with pytest.raises(ApplicationError, match="changed after the scan") as first:
            await attempt(1).run(activities.transfer_model_file, request)
        assert not first.value.non_retryable
        with pytest.raises(ApplicationError, match="changed after the scan") as second:
            await attempt(2).run(activities.transfer_model_file, request)
        assert second.value.non_retryable and second.value.type == "ChecksumMismatch"
        for size in (len(scanned) + 10, len(scanned) - 10):  # grown or shrunk: final at once
            async with ObjectStore(settings) as writer:
                await writer.put_bytes(settings.models_bucket, key, b"y" * size)
            with pytest.raises(ApplicationError, match="changed after the scan") as changed:
                await attempt(1).run(activities.transfer_model_file, request)
            assert changed.value.non_retryable, size


async def test_a_missing_object_fails_for_good(settings, tmp_path):
    request = TransferFileInput(bucket=settings.models_bucket, key=f"{unique('gone')}/weights.bin",
                                path="weights.bin", size=10, sha256="0" * 64, model_id=uuid.uuid4())
    async with ObjectStore(settings) as store:
        with pytest.raises(ApplicationError, match="gone from the store") as missing:
            await attempt(1).run(TransferActivities(store, tmp_path).transfer_model_file, request)
    assert missing.value.non_retryable and missing.value.type == "ObjectMissing"


@pytest.mark.parametrize("path", ["../../etc/cron.d/evil", "/etc/passwd", "a/../../b", "~root/x", "a\x00b", ""])
async def test_object_paths_never_land_outside_the_model_cache(settings, tmp_path, path):
    """Real S3 accepts keys with `..` or a leading slash; the copy refuses them before writing a byte."""
    cache = tmp_path / "cache"
    request = TransferFileInput(bucket=settings.models_bucket, key="whatever", path=path, size=1, sha256=None,
                                model_id=uuid.uuid4())
    async with ObjectStore(settings) as store:
        with pytest.raises(ApplicationError, match="escapes the model folder") as refused:
            await attempt(1).run(TransferActivities(store, cache).transfer_model_file, request)
    assert refused.value.non_retryable
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
