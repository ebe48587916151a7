"""Several worker processes on one task queue share the work."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from control.payloads.clusters import ClusterSpec
from control.store import clusters as cluster_store
from tests.helpers import unique
from workflows.starters import start_register_cluster


WORK = 16  # RegisterCluster workflows: each probes its cluster once, on whichever worker takes the activity
# A worker imports the whole control plane (numpy, xgboost, scipy, kubernetes, ...) before it connects: about 8 s of
# CPU, which on a loaded 2-core machine with a second worker starting beside it can take minutes of wall time.
WORKER_START_S = 180
# From "worker started" to the server listing its activity poller: seconds when idle, past 30 s under a full suite.
POLLERS_LISTED_S = 120


async def pollers(client, queue: str) -> int:
    request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    response = await client.workflow_service.describe_task_queue(request)
    return len({poller.identity for poller in response.pollers})


async def started(worker) -> None:
    """Until the worker logs "worker started" (its pollers start right after); fails with its log if it exits."""
    while "worker started" not in worker.log_path.read_text(errors="replace"):
        assert worker.running(), f"{worker.name} exited before it started:\n{worker.log_tail()}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(WORKER_START_S + POLLERS_LISTED_S + 240)
async def test_two_workers_on_one_queue_both_take_work(settings, db_pool, temporal_client, start_worker):
    queue_settings = settings.model_copy(update={"control_queue": unique("shared-queue")})
    workers = [start_worker(queue_settings) for _ in range(2)]
    try:
        # Work sent before both poll could all go to the first one up: wait for each worker's own signal, however
        # long start-up takes here, then for the server to list both as pollers of the queue.
        async with asyncio.timeout(WORKER_START_S):
            await asyncio.gather(*(started(worker) for worker in workers))
        async with asyncio.timeout(POLLERS_LISTED_S):
            while await pollers(temporal_client, queue_settings.control_queue) < 2:
                await asyncio.sleep(0.2)
        handles = []
        for _ in range(WORK):
            spec = ClusterSpec(name=unique("pool"), kind="local", gpus=[{"gpu_type": "nvidia-l4", "count": 1}])
            async with db_pool.acquire() as conn:
                row = await cluster_store.insert_cluster(conn, None, spec)
            handles.append(await start_register_cluster(temporal_client, queue_settings, row.id, spec))
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    assert [r.status for r in results] == ["READY"] * WORK
    probes_per_worker = [worker.log_path.read_text().count("probing cluster") for worker in workers]
    assert all(count > 0 for count in probes_per_worker), probes_per_worker
    assert sum(probes_per_worker) >= WORK
