"""Several worker processes on one task queue share the work."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from control.payloads.clusters import ClusterSpec
from control.store import clusters as cluster_store
from tests.helpers import unique
from workflows.starters import start_register_cluster


async def pollers(client, queue: str) -> int:
    request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    response = await client.workflow_service.describe_task_queue(request)
    return len({poller.identity for poller in response.pollers})


async def test_two_workers_on_one_queue_both_take_work(settings, db_pool, temporal_client, start_worker):
    queue_settings = settings.model_copy(update={"control_queue": unique("shared-queue")})
    workers = [start_worker(queue_settings) for _ in range(2)]
    try:
        async with asyncio.timeout(60):  # both processes up and polling before any work arrives
            while await pollers(temporal_client, queue_settings.control_queue) < 2:
                await asyncio.sleep(0.2)
        handles = []
        for _ in range(12):
            spec = ClusterSpec(name=unique("pool"), kind="local", gpus=[{"gpu_type": "nvidia-l4", "count": 1}])
            async with db_pool.acquire() as conn:
                row = await cluster_store.insert_cluster(conn, None, spec)
            handles.append(await start_register_cluster(temporal_client, queue_settings, row["id"], spec))
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    assert [r.status for r in results] == ["READY"] * 12
    probes_per_worker = [worker.log_path.read_text().count("probing cluster") for worker in workers]
    assert all(count > 0 for count in probes_per_worker), probes_per_worker
    assert sum(probes_per_worker) >= 12
