"""Several worker processes on one task queue share the work."""

from __future__ import annotations

import asyncio

from core.payloads.clusters import ClusterSpec
from core.store import clusters as cluster_store
from tests.helpers import start_worker_process, unique
from workflows.starters import start_register_cluster


async def test_two_workers_on_one_queue_both_take_work(settings, db_pool, temporal_client, state_dir):
    queue_settings = settings.model_copy(update={"control_queue": unique("shared-queue")})
    workers = [start_worker_process(queue_settings, state_dir) for _ in range(2)]
    try:
        handles = []
        for _ in range(8):
            spec = ClusterSpec(name=unique("pool"), kind="local", gpus=[{"gpu_type": "nvidia-l4", "count": 1}])
            async with db_pool.acquire() as conn:
                row = await cluster_store.insert_cluster(conn, None, spec, "test")
            handles.append(await start_register_cluster(temporal_client, queue_settings, row["id"], spec))
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    assert [r.status for r in results] == ["READY"] * 8
    probes_per_worker = [worker.log_path.read_text().count("probing cluster") for worker in workers]
    assert all(count > 0 for count in probes_per_worker), probes_per_worker
    assert sum(probes_per_worker) >= 8
