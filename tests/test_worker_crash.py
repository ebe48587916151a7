"""A worker killed with SIGKILL in the middle of a workflow; a new worker finishes it, and nothing is orphaned."""

from __future__ import annotations

import asyncio

import psutil
from temporalio.api.enums.v1 import PendingActivityState

from control.payloads.clusters import ClusterSpec
from control.store import clusters as cluster_store
from tests.helpers import unique
from workflows.starters import start_register_cluster


async def wait_for_started_activity(handle, activity_type: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            description = await handle.describe()
            for pending in description.raw_description.pending_activities:
                if pending.activity_type.name == activity_type and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    return
            await asyncio.sleep(0.05)


async def test_sigkilled_worker_is_replaced_and_the_workflow_finishes(
    settings, db_pool, temporal_client, state_dir, start_worker
):
    # A queue of its own, so only the worker processes of this test can pick the work up.
    queue_settings = settings.model_copy(update={"control_queue": unique("crash-queue")})
    spec = ClusterSpec(name=unique("crashy"), kind="local", gpus=[{"gpu_type": "nvidia-l40s", "count": 2}])
    async with db_pool.acquire() as conn:
        row = await cluster_store.insert_cluster(conn, None, spec)

    first = start_worker(queue_settings)
    handle = await start_register_cluster(temporal_client, queue_settings, row.id, spec)
    await wait_for_started_activity(handle, "probe_cluster")
    children_before = {child.pid for child in psutil.Process(first.pid).children(recursive=True)}
    first.kill()  # SIGKILL: no cleanup, no goodbye to the server

    assert (await handle.describe()).status.name == "RUNNING"
    # The probe's runtime process died with its worker instead of lingering as an orphan.
    await asyncio.sleep(0.5)
    assert not [pid for pid in children_before if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]

    second = start_worker(queue_settings)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        second.stop()
    assert result.status == "READY"
    async with db_pool.acquire() as conn:
        stored = await cluster_store.get_cluster(conn, row.id)
    assert stored.status == "READY"
    assert stored.facts["runtime_smoke_ms"] > 0
