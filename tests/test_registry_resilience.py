"""The registry under failure: clamd down mid-scan, activities run twice, uploads repeated."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.object_store import ObjectStoreActivities
from activities.model_records import ModelRecordActivities
from cli.upload import upload_folder
from core.objectstore import ObjectStore
from control.payloads.models import ListObjectsInput, ModelStatus, QuarantineInput, RecordScanInput, ScanReport
from devstack.clamd import clamd_process
from core.processes import free_port
from tests.model_files import write_tiny_llama
from tests.helpers import unique
from tests.registry_helpers import registration, upload
from worker.clients import build_clients
from worker.queues import setup_for


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


async def pending_activity(handle, activity_type: str):
    for pending in (await handle.describe()).raw_description.pending_activities:
        if pending.activity_type.name == activity_type:
            return pending
    return None


async def test_clamd_down_during_a_scan_waits_then_completes(api, settings, db_pool, temporal_client, tiny, state_dir):
    """With clamd gone the scan retries (the model stays SCANNING, never AVAILABLE); once clamd is back it finishes."""
    port = free_port()
    clamd_state = state_dir / unique("clamd-flaky")
    clamd = clamd_process(clamd_state, port).start().wait_healthy()
    queue_settings = settings.model_copy(update={"control_queue": unique("flaky-clamd"), "clamd_port": port})
    async with build_clients(queue_settings, temporal_client, pool=db_pool) as clients:
        setup = setup_for(queue_settings.control_queue, clients)
        async with Worker(temporal_client, task_queue=queue_settings.control_queue, workflows=setup.workflows,
                          activities=setup.activities):
            prefix = await upload(settings, tiny.path)
            clamd.stop()  # clamd dies before the scan reaches it
            # The API starts the workflow on its own queue; start this one on the flaky queue instead.
            from control.payloads.models import ModelRegistration, RegisterModelInput
            from control.store import models as model_store
            from control.store.projects import get_project_by_name
            from workflows.starters import start_register_model

            body = ModelRegistration(**registration(settings, prefix, parameter_count=tiny.parameter_count))
            async with db_pool.acquire() as conn:
                project = await get_project_by_name(conn, "default")
                row = await model_store.insert_model(conn, project.id, body)
            handle = await start_register_model(temporal_client, queue_settings, RegisterModelInput(
                model_id=row.id, bucket=body.bucket, prefix=body.prefix,
                declared_parameter_count=body.parameter_count, declared_context_length=body.context_length))

            async with asyncio.timeout(60):
                while True:
                    pending = await pending_activity(handle, "clamav_scan_object")
                    if pending is not None and pending.attempt >= 2:
                        break
                    await asyncio.sleep(0.2)
            assert "clamd" in pending.last_failure.message.lower()
            async with db_pool.acquire() as conn:
                assert (await model_store.get_model(conn, row.id)).status == "SCANNING"

            clamd = clamd_process(clamd_state, port).start().wait_healthy()  # back on the same port
            try:
                result = await asyncio.wait_for(handle.result(), timeout=90)
            finally:
                clamd.stop()
    assert result.status == ModelStatus.AVAILABLE


async def test_quarantine_and_record_activities_are_idempotent(settings, db_pool, tiny, api):
    prefix = await upload(settings, tiny.path)
    async with ObjectStore(settings) as store:
        objects = ObjectStoreActivities(store)
        env = ActivityEnvironment()
        listing = await env.run(objects.list_model_objects, ListObjectsInput(bucket=settings.models_bucket, prefix=prefix))
        request = QuarantineInput(bucket=settings.models_bucket, objects=listing.objects,
                                  quarantine_prefix=f"quarantine/{unique('twice')}")
        first = await env.run(objects.quarantine_objects, request)
        second = await env.run(objects.quarantine_objects, request)  # a retry after the first run finished
        assert first == second
        moved = await store.list_objects(settings.models_bucket, request.quarantine_prefix + "/")
        assert sorted(o.key for o in moved) == sorted(first)
        assert await store.list_objects(settings.models_bucket, prefix + "/") == []

    response = await api.post("/api/models", json=registration(settings, unique("never-scanned")))
    model_id = response.json()["id"]
    records = ModelRecordActivities(db_pool)
    outcome = RecordScanInput(model_id=model_id, status=ModelStatus.AVAILABLE, report=ScanReport(status=ModelStatus.AVAILABLE))
    await env.run(records.record_model_scan, outcome)
    await env.run(records.record_model_scan, outcome)
    model = (await api.get(f"/api/models/{model_id}")).json()
    assert model["status"] in ("AVAILABLE", "FAILED")  # the real workflow may also have finished (no objects)


async def test_second_upload_skips_unchanged_files(settings, tiny, tmp_path):
    prefix = unique("reupload")
    first = await asyncio.to_thread(upload_folder, settings, tiny.path, settings.models_bucket, prefix)
    assert sorted(first.uploaded) == sorted(tiny.files) and first.skipped == []
    second = await asyncio.to_thread(upload_folder, settings, tiny.path, settings.models_bucket, prefix)
    assert second.uploaded == [] and sorted(second.skipped) == sorted(tiny.files)
    (tiny.path / "tokenizer_config.json").write_text('{"changed": true}')
    try:
        third = await asyncio.to_thread(upload_folder, settings, tiny.path, settings.models_bucket, prefix)
        assert third.uploaded == ["tokenizer_config.json"]
    finally:
        write_tiny_llama(tiny.path)
