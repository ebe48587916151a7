"""The registry under failure: clamd down mid-scan, activities run twice, uploads repeated, objects deleted while a
scan runs, prefixes over the limits, and steps slow enough to outlast a heartbeat timeout without the clock."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from contextlib import asynccontextmanager

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.heartbeats import heartbeating
from activities.object_store import UNEXPECTED_ERROR_ATTEMPTS, ObjectStoreActivities, fails_after_retries
from activities.model_records import ModelRecordActivities
from activities.scanning import ScanningActivities
from core.objectstore import ObjectStore
from control.payloads.models import (
    AnalyzeConfigInput,
    FileRef,
    ListObjectsInput,
    ModelRegistration,
    ModelStatus,
    QuarantineInput,
    RecordScanInput,
    RegisterModelInput,
    ScanReport,
)
from control.store import models as model_store
from control.store.projects import get_project_by_name
from devstack.clamd import clamd_process
from core.processes import free_port
from registry.clamd import ClamdClient
from registry.model_objects import MAX_OBJECTS_PER_MODEL, ModelObjectLimits
from tests.model_files import write_tiny_llama
from tests.helpers import unique
from tests.registry_helpers import register_and_wait, registration, upload, wait_settled
from worker.clients import build_clients
from worker.queues import control_queue, setup_for
from workflows.starters import start_register_model


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

    response = await api.post("/api/models", json=registration(settings, f"default/{unique('never-scanned')}"))
    model_id = response.json()["id"]
    records = ModelRecordActivities(db_pool)
    outcome = RecordScanInput(model_id=model_id, status=ModelStatus.AVAILABLE, report=ScanReport(status=ModelStatus.AVAILABLE))
    await env.run(records.record_model_scan, outcome)
    await env.run(records.record_model_scan, outcome)
    model = (await api.get(f"/api/models/{model_id}")).json()
    assert model["status"] in ("AVAILABLE", "FAILED")  # the real workflow may also have finished (no objects)


@asynccontextmanager
async def registry_queue(settings, temporal_client, worker_clients, *replacements):
    """Settings naming a queue of its own, served by a worker with the production workflows and activities except
    the activity methods in `replacements`, which take the place of those of the same name."""
    queue_settings = settings.model_copy(update={"control_queue": unique("registry")})
    replaced = {method.__name__ for method in replacements}
    production = control_queue(worker_clients)
    activities = [method for method in production.activities if method.__name__ not in replaced] + list(replacements)
    async with Worker(temporal_client, task_queue=queue_settings.control_queue, workflows=production.workflows,
                      activities=activities):
        yield queue_settings


async def register_on(queue_settings, temporal_client, db_pool, prefix: str, parameter_count: int):
    """Insert the model and run RegisterModel on the given queue; the model row once the workflow ended."""
    body = ModelRegistration(**registration(queue_settings, prefix, parameter_count=parameter_count))
    async with db_pool.acquire() as conn:
        project = await get_project_by_name(conn, "default")
        row = await model_store.insert_model(conn, project.id, body)
    handle = await start_register_model(temporal_client, queue_settings, RegisterModelInput(
        model_id=row.id, bucket=body.bucket, prefix=body.prefix,
        declared_parameter_count=body.parameter_count, declared_context_length=body.context_length))
    try:
        await asyncio.wait_for(handle.result(), timeout=90)
    except WorkflowFailureError:
        pass  # FAILED: the row says why
    async with db_pool.acquire() as conn:
        return await model_store.get_model(conn, row.id)


async def test_too_many_objects_and_a_file_too_large_fail_with_the_limit(settings, temporal_client, db_pool,
                                                                         worker_clients, tiny, tmp_path):
    """Limits scaled down to the tiny model (the defaults, 1,000 objects and 64 GB, work the same way)."""
    file_count = len(tiny.files)
    largest = max((tiny.path / name).stat().st_size for name in tiny.files)
    few_objects = ObjectStoreActivities(worker_clients.store, ModelObjectLimits(max_objects=file_count - 1))
    small_files = ObjectStoreActivities(worker_clients.store, ModelObjectLimits(max_file_bytes=largest - 1))
    prefix = await upload(settings, tiny.path)
    async with registry_queue(settings, temporal_client, worker_clients, few_objects.list_model_objects) as queue:
        crowded = await register_on(queue, temporal_client, db_pool, prefix, tiny.parameter_count)
    async with registry_queue(settings, temporal_client, worker_clients, small_files.list_model_objects) as queue:
        oversized = await register_on(queue, temporal_client, db_pool, prefix, tiny.parameter_count)
    assert crowded.status == ModelStatus.FAILED
    assert f"more than {file_count - 1:,} objects under s3://{settings.models_bucket}/{prefix}/" in crowded.error
    assert oversized.status == ModelStatus.FAILED
    assert "model.safetensors is" in oversized.error and "limit per file" in oversized.error


class DeletesAfterListing(ObjectStoreActivities):
    """Lists the prefix, then deletes the weights, as a user removing files while their registration runs."""

    @activity.defn(name="list_model_objects")
    async def list_model_objects(self, request: ListObjectsInput):
        listing = await super().list_model_objects(request)
        await self.store.delete(request.bucket, f"{request.prefix}/model.safetensors")
        return listing


async def test_an_object_deleted_after_listing_fails_the_model_naming_it(settings, temporal_client, db_pool,
                                                                         worker_clients, tiny):
    deleting = DeletesAfterListing(worker_clients.store)
    prefix = await upload(settings, tiny.path)
    async with registry_queue(settings, temporal_client, worker_clients, deleting.list_model_objects) as queue:
        model = await register_on(queue, temporal_client, db_pool, prefix, tiny.parameter_count)
    assert model.status == ModelStatus.FAILED
    assert "model.safetensors disappeared from the object store after it was listed" in model.error


async def test_every_scan_of_a_deleted_object_is_a_non_retryable_failure(settings, tiny):
    prefix = await upload(settings, tiny.path)
    env = ActivityEnvironment()
    async with ObjectStore(settings) as store:
        objects = ObjectStoreActivities(store)
        scanning = ScanningActivities(store, ClamdClient(settings.clamd_host, settings.clamd_port))
        listing = await env.run(objects.list_model_objects,
                                ListObjectsInput(bucket=settings.models_bucket, prefix=prefix))
        for obj in listing.objects:
            await store.delete(settings.models_bucket, obj.key)
        by_path = {obj.path: FileRef(bucket=settings.models_bucket, object=obj) for obj in listing.objects}
        calls = [
            (objects.checksum_object, by_path["model.safetensors"]),
            (scanning.clamav_scan_object, by_path["tokenizer.json"]),
            (scanning.pickle_scan_object, by_path["LICENSE"]),
            (scanning.safetensors_check_object, by_path["model.safetensors"]),
            (scanning.analyze_model_config, AnalyzeConfigInput(
                bucket=settings.models_bucket, objects=listing.objects, declared_parameter_count=1,
                declared_context_length=2048)),
        ]
        for method, argument in calls:
            with pytest.raises(ApplicationError) as failure:
                await env.run(method, argument)
            assert failure.value.non_retryable and failure.value.type == "ObjectMissing", method.__name__
            assert "disappeared from the object store" in failure.value.message


async def test_a_step_longer_than_the_heartbeat_timeout_keeps_heartbeating():
    """One await that takes a while (clamd judging a window, a server-side copy) still reports every 2 s."""
    beats: list[dict] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])

    async def slow_step() -> None:
        async with heartbeating({"path": "model.safetensors", "bytes": 0}, every_s=0.1) as progress:
            await asyncio.sleep(0.35)
            progress["bytes"] = 10
            await asyncio.sleep(0.35)

    await env.run(slow_step)
    assert len(beats) >= 5
    assert beats[0] == {"path": "model.safetensors", "bytes": 0} and beats[-1]["bytes"] == 10


async def test_an_unexpected_error_is_retried_twice_then_fails_the_registration_with_its_reason():
    def scan_that_breaks() -> None:
        with fails_after_retries("the pickle scan of model.bin"):
            raise KeyError("a scanner bug this file triggers")

    env = ActivityEnvironment()
    for attempt in range(1, UNEXPECTED_ERROR_ATTEMPTS):
        env.info = dataclasses.replace(env.info, attempt=attempt)
        with pytest.raises(KeyError):  # retryable: the worker may be at fault
            await env.run(scan_that_breaks)
    env.info = dataclasses.replace(env.info, attempt=UNEXPECTED_ERROR_ATTEMPTS)
    with pytest.raises(ApplicationError) as failure:
        await env.run(scan_that_breaks)
    assert failure.value.non_retryable
    assert failure.value.message == ("the pickle scan of model.bin failed 3 times: KeyError: "
                                     "'a scanner bug this file triggers'")

    def store_down() -> None:
        with fails_after_retries("the checksum of model.bin"):
            raise ConnectionError("object store unavailable")

    with pytest.raises(ConnectionError):  # infrastructure retries however many attempts it took
        await env.run(store_down)


async def test_a_model_of_1000_files_registers_and_one_more_file_fails(api, control_worker, settings, tiny, tmp_path):
    """The default limit at its real size: 1,000 objects stay inside Temporal's limits (pending activities, history,
    payload size) and register; the 1,001st makes the prefix FAILED before anything is read."""
    folder = tmp_path / "many-files"
    shutil.copytree(tiny.path, folder)
    extra = MAX_OBJECTS_PER_MODEL - len(tiny.files)
    for index in range(extra):
        path = folder / "eval" / f"sample-{index:04d}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f'{{"sample": {index}}}')
    prefix = await upload(settings, folder)
    response = await api.post("/api/models", json=registration(settings, prefix, parameter_count=tiny.parameter_count))
    model = await wait_settled(api, response.json()["id"], timeout=600)
    assert model["status"] == "AVAILABLE", model["error"] or model["scan_report"]["findings"][:3]
    assert len(model["files"]) == MAX_OBJECTS_PER_MODEL

    crowded_prefix = f"{prefix}-plus-one"  # the same files and one more, under a prefix of its own
    async with ObjectStore(settings) as store:
        for info in await store.list_objects(settings.models_bucket, prefix + "/"):
            await store.copy(settings.models_bucket, info.key, crowded_prefix + info.key[len(prefix):], info.size)
        await store.put_bytes(settings.models_bucket, f"{crowded_prefix}/eval/one-too-many.json", b"{}")
    crowded = await register_and_wait(api, settings, crowded_prefix, parameter_count=tiny.parameter_count)
    assert crowded["status"] == "FAILED"
    assert f"more than {MAX_OBJECTS_PER_MODEL:,} objects" in crowded["error"]
