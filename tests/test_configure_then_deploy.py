"""Configure and deploy back to back: a deploy accepted while the optimizer is still choosing waits for it and
deploys what it chose, or fails with its reason; a refused PUT /config leaves the endpoint exactly as it was."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from temporalio.worker import Worker

from control.store import endpoints as endpoint_store
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    local_cluster_id,
    runtime_processes,
    settled,
    wait_endpoint,
)
from tests.helpers import unique
from tests.model_files import write_tiny_llama
from worker.queues import optimizer_queue

REACHABLE = {"max_latency_ms": 2000, "min_throughput_tps": 100}
UNREACHABLE = {"max_ttft_ms": 0.001, "min_throughput_tps": 1e12}
WORKLOAD = {"input_tokens": 256, "output_tokens": 64, "concurrency": 8}


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("configure") / "m"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


@contextlib.asynccontextmanager
async def busy_optimizer(settings, temporal_client, worker_clients) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A machine whose optimizer is busy: searches started meanwhile wait on a queue no worker polls until the
    yielded `free()` starts one there."""
    queue, usual = unique("busy-optimizer"), settings.optimizer_queue
    settings.optimizer_queue = queue  # the API reads the same settings object
    async with contextlib.AsyncExitStack() as stack:

        async def free() -> None:
            setup = optimizer_queue(worker_clients)
            await stack.enter_async_context(Worker(temporal_client, task_queue=queue, workflows=setup.workflows,
                                                   activities=setup.activities))

        try:
            yield free
        finally:
            settings.optimizer_queue = usual


async def configure_then_deploy(api, endpoint_id: str, targets: dict) -> dict:
    configured = await api.put(f"/api/endpoints/{endpoint_id}/config", json={
        "runtime": "vllm", "optimization_method": "REGRESSOR", "performance_targets": targets, "workload": WORKLOAD})
    assert configured.status_code == 202, configured.text
    assert configured.json()["optimization_status"] == "RUNNING" and configured.json()["deployment"]["config"] is None
    deployed = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert deployed.status_code == 202, deployed.text
    return await wait_endpoint(api, endpoint_id, lambda e: e["step"] == "waiting for the optimizer")


async def test_deploy_while_the_optimizer_chooses_deploys_its_choice(
    api, control_worker, gateway, model, cluster_id, settings, temporal_client, worker_clients
):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    async with busy_optimizer(settings, temporal_client, worker_clients) as free:
        waiting = await configure_then_deploy(api, endpoint["id"], REACHABLE)
        assert waiting["status"] == "DEPLOYING" and waiting["optimization_status"] == "RUNNING"
        await free()
        running = await wait_endpoint(api, endpoint["id"], settled, timeout=180)
    assert running["status"] == "RUNNING", running["error"]
    assert running["optimization_status"] == "SUCCEEDED"
    chosen = running["recommendation"]["recommendation"]
    assert chosen["meets_targets"] is True
    deployed = running["deployment"]
    assert deployed["replicas"] == chosen["config"]["replicas"] == deployed["ready_replicas"]
    assert {k: deployed["config"][k] for k in ("tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs")} == \
        {k: chosen["config"][k] for k in ("tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs")}
    assert len(runtime_processes(endpoint["name"])) == chosen["config"]["replicas"]
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)


async def test_deploy_fails_with_the_optimizers_reason_when_no_config_meets_the_targets(
    api, control_worker, model, cluster_id, settings, temporal_client, worker_clients, db_pool
):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    async with busy_optimizer(settings, temporal_client, worker_clients) as free:
        await configure_then_deploy(api, endpoint["id"], UNREACHABLE)
        await free()
        failed = await wait_endpoint(api, endpoint["id"], settled, timeout=180)
    assert failed["status"] == "FAILED"
    assert failed["error"]["step"] == "waiting for the optimizer"
    assert "no config that meets the targets" in failed["error"]["reason"]
    assert "max_ttft_ms" in failed["error"]["reason"]  # the optimizer's own account of what the closest one misses
    assert runtime_processes(endpoint["name"]) == []
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0
        assert await conn.fetchval("SELECT count(*) FROM routes WHERE name = $1", endpoint["name"]) == 0
    await api.delete(f"/api/endpoints/{endpoint['id']}")


async def test_delete_while_waiting_for_the_optimizer_removes_the_endpoint(
    api, control_worker, model, cluster_id, settings, temporal_client, worker_clients
):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    async with busy_optimizer(settings, temporal_client, worker_clients):
        await configure_then_deploy(api, endpoint["id"], REACHABLE)
        deleted = await api.delete(f"/api/endpoints/{endpoint['id']}")
        assert deleted.status_code == 202
        assert (await wait_endpoint(api, endpoint["id"], lambda e: False, timeout=60))["status"] == "GONE"
    handle = temporal_client.get_workflow_handle(f"deploy-endpoint-{endpoint['id']}")
    assert (await handle.describe()).status.name == "CANCELED"


async def test_a_refused_config_changes_nothing(api, control_worker, optimizer_worker, model, db_pool):
    """409 (no free GPUs for the search) and 422 (a config or workload that cannot be served) write nothing: the
    endpoint keeps its previous config and optimization status."""
    cluster = await api.post("/api/clusters", json={"name": unique("two-gpus"), "kind": "local",
                                                    "gpus": [{"gpu_type": "nvidia-h100-80gb", "count": 2}]})
    assert cluster.status_code == 202, cluster.text
    endpoint = await create_endpoint(api, model["id"], cluster.json()["id"])
    assert (await configure_manual(api, endpoint["id"]))["optimization_status"] == "SUCCEEDED"
    before = (await api.get(f"/api/endpoints/{endpoint['id']}")).json()

    async def refused(body: dict, status: int, field: str) -> None:
        response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert (error["details"]["field"] if status == 409 else error["details"][0]["field"]) == field
        assert (await api.get(f"/api/endpoints/{endpoint['id']}")).json() == before

    await refused({"optimization_method": "MANUAL", "config": {"tensor_parallel_size": 3}}, 422, "config")
    await refused({"optimization_method": "REGRESSOR", "workload": {"input_tokens": 900_000, "output_tokens": 64}},
                  422, "workload")
    # Another endpoint holds both GPUs: nothing is free for a search.
    other = await create_endpoint(api, model["id"], cluster.json()["id"])
    async with db_pool.acquire() as conn:
        await endpoint_store.reserve_gpus(conn, cluster.json()["id"], other["id"], "nvidia-h100-80gb", 2)
    try:
        await refused({"optimization_method": "REGRESSOR", "performance_targets": REACHABLE}, 409, "cluster_id")
    finally:
        async with db_pool.acquire() as conn:
            await endpoint_store.release_gpus(conn, other["id"])
