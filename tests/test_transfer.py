"""The transfer activity against the real S3 server: resume from a partial copy, verify, skip cached, refuse corrupt."""

from __future__ import annotations

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
