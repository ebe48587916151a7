"""DeployEndpoint through the API on the local backend, with real Temporal, PostgreSQL, S3 and the gateway."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx
import pytest

from tests.model_files import write_eicar_file, write_tiny_llama
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    inference_key_headers,
    local_cluster_id,
    runtime_processes,
    settled,
    wait_endpoint,
)
from tests.registry_helpers import register_and_wait, upload


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("deploy") / "tiny-llama")


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tiny):
    return await available_model(api, settings, tiny)


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


async def deploy(api, endpoint_id: str, **body) -> dict:
    response = await api.post(f"/api/endpoints/{endpoint_id}/deploy", json=body or None)
    assert response.status_code == 202, response.text
    return await wait_endpoint(api, endpoint_id, settled)


async def delete(api, endpoint_id: str) -> dict:
    """DELETE, then wait until the endpoint is gone (a deleted endpoint answers 404)."""
    response = await api.delete(f"/api/endpoints/{endpoint_id}")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "DELETING"
    return await wait_endpoint(api, endpoint_id, lambda e: False)


async def test_happy_path_register_configure_deploy_serve_delete(
    api, control_worker, optimizer_worker, gateway, model, cluster_id, db_pool, state_dir
):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    assert endpoint["status"] == "PENDING"
    configured = await configure_manual(api, endpoint["id"], replicas=2)
    assert configured["optimization_status"] == "SUCCEEDED", configured
    assert configured["recommendation"]["recommendation"]["prediction"]["tpot_ms"] > 0

    running = await deploy(api, endpoint["id"])
    assert running["status"] == "RUNNING", running["error"]
    assert running["deployment"] == {**running["deployment"], "runtime": "vllm", "replicas": 2, "ready_replicas": 2}
    assert running["inference_url"] == gateway
    assert running["health"]["stream_chunks"] > 0
    assert len(runtime_processes(endpoint["name"])) == 2
    # What the health check measured is now a serving benchmark of the model, for this GPU type and config.
    measured = (await api.get(f"/api/models/{model['id']}")).json()["benchmarks"]
    assert {"ttft_ms", "e2e_latency_ms"} <= {b["name"] for b in measured if b["kind"] == "performance"
                                            and b["details"]["endpoint"] == endpoint["name"]}
    assert all(b["gpu_type"] == "nvidia-h100-80gb" for b in measured if b["kind"] == "performance")

    async with httpx.AsyncClient(timeout=30, headers=inference_key_headers(state_dir)) as client:
        async with asyncio.timeout(10):  # the gateway polls its routes
            while (await client.get(f"{gateway}/models")).json()["data"] == [] or endpoint["name"] not in [
                    m["id"] for m in (await client.get(f"{gateway}/models")).json()["data"]]:
                await asyncio.sleep(0.1)
        reply = await client.post(f"{gateway}/chat/completions", json={
            "model": endpoint["name"], "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]

    gone = await delete(api, endpoint["id"])
    assert gone["status"] == "GONE"
    assert runtime_processes(endpoint["name"]) == []
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0
        assert await conn.fetchval("SELECT count(*) FROM routes WHERE name = $1", endpoint["name"]) == 0


async def test_regressor_targets_choose_the_config(api, control_worker, optimizer_worker, model, cluster_id):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "REGRESSOR",
        "performance_targets": {"max_latency_ms": 2000, "min_throughput_tps": 100},
        "workload": {"input_tokens": 256, "output_tokens": 64, "concurrency": 8}})
    assert response.status_code == 202, response.text
    done = await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING", timeout=120)
    assert done["optimization_status"] == "SUCCEEDED"
    recommendation = done["recommendation"]["recommendation"]
    assert recommendation["meets_targets"] is True
    assert done["deployment"]["config"]["tensor_parallel_size"] == recommendation["config"]["tensor_parallel_size"]
    assert len(done["recommendation"]["pareto"]) >= 1
    running = await deploy(api, endpoint["id"])
    assert running["status"] == "RUNNING", running["error"]
    await delete(api, endpoint["id"])


async def test_quarantined_model_cannot_be_configured_or_deployed(api, control_worker, settings, tiny, cluster_id, tmp_path):
    infected = write_tiny_llama(tmp_path / "infected")
    write_eicar_file(infected.path / "payload.dat")
    bad = await register_and_wait(api, settings, await upload(settings, infected.path),
                                  parameter_count=infected.parameter_count)
    assert bad["status"] == "QUARANTINED"
    endpoint = await create_endpoint(api, bad["id"], cluster_id)
    configured = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={"optimization_method": "REGRESSOR"})
    assert configured.status_code == 409
    deployed = await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert deployed.status_code == 409
    assert "QUARANTINED" in deployed.json()["error"]["message"]


async def test_config_that_does_not_fit_is_422_with_the_reason(api, control_worker, model, cluster_id):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "optimization_method": "MANUAL", "config": {"tensor_parallel_size": 3}})
    assert response.status_code == 422, response.text
    assert "divide" in response.json()["error"]["message"]
    too_many = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "optimization_method": "MANUAL", "config": {"tensor_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 8},
        "replicas": 9})
    assert too_many.status_code == 422
    assert "GPU" in too_many.json()["error"]["message"]


async def test_not_enough_gpus_fails_with_the_reason(api, control_worker, optimizer_worker, model, cluster_id, db_pool):
    first = await create_endpoint(api, model["id"], cluster_id)
    second = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, first["id"], replicas=6)
    await configure_manual(api, second["id"], replicas=6)  # fits alone: 6 of 8 free
    assert (await deploy(api, first["id"]))["status"] == "RUNNING"
    failed = await deploy(api, second["id"])  # now only 2 are free
    assert failed["status"] == "FAILED"
    assert failed["error"]["step"] in ("validating", "reserving GPUs")
    assert "GPU" in failed["error"]["reason"]
    assert runtime_processes(second["name"]) == []
    await delete(api, first["id"])
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = ANY($1::uuid[])",
                                   [first["id"], second["id"]]) == 0


async def test_failing_health_fails_the_deploy_and_cleans_up(api, control_worker, optimizer_worker, model, cluster_id,
                                                            db_pool, settings):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"])
    settings.deploy_ready_timeout_s = 3  # the activities read the same settings object
    os.environ["BUD_SIM_FAIL_HEALTH"] = "1"  # replicas inherit it: /health answers 503
    try:
        failed = await deploy(api, endpoint["id"])
    finally:
        del os.environ["BUD_SIM_FAIL_HEALTH"]
        settings.deploy_ready_timeout_s = 60
    assert failed["status"] == "FAILED"
    assert failed["error"]["step"] == "waiting for replicas"
    assert "not ready" in failed["error"]["reason"]
    assert runtime_processes(endpoint["name"]) == []
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0


async def test_delete_while_deploying_cancels_cleanly(api, control_worker, optimizer_worker, model, cluster_id,
                                                     settings, db_pool, temporal_client):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"])
    settings.sim_load_delay_s = 30  # replicas take long to load: the deploy sits in "waiting for replicas"
    try:
        assert (await api.post(f"/api/endpoints/{endpoint['id']}/deploy")).status_code == 202
        await wait_endpoint(api, endpoint["id"], lambda e: e["step"] == "waiting for replicas")
    finally:
        settings.sim_load_delay_s = 0
    assert len(runtime_processes(endpoint["name"])) == 1
    deleted = await delete(api, endpoint["id"])
    assert deleted["status"] == "GONE"
    assert runtime_processes(endpoint["name"]) == []
    # The endpoint reads DELETED as soon as the deploy's own cleanup marks it; the run closes right after.
    handle = temporal_client.get_workflow_handle(f"deploy-endpoint-{endpoint['id']}")
    async with asyncio.timeout(30):
        while (deploy_run := await handle.describe()).status.name == "RUNNING":
            await asyncio.sleep(0.2)
    assert deploy_run.status.name == "CANCELED"
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0


async def test_scale_up_and_down_changes_replicas_and_gpus(api, control_worker, optimizer_worker, gateway, model,
                                                           cluster_id, db_pool):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"], replicas=1)
    assert (await deploy(api, endpoint["id"]))["status"] == "RUNNING"

    async def held() -> int:
        async with db_pool.acquire() as conn:
            return await conn.fetchval("SELECT COALESCE(sum(count), 0) FROM gpu_reservations WHERE endpoint_id = $1",
                                       endpoint["id"])

    response = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 3})
    assert response.status_code == 202, response.text
    scaled = await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 3 and e["step"] == "running")
    assert scaled["deployment"]["replicas"] == 3 and scaled["error"] is None
    assert len(runtime_processes(endpoint["name"])) == 3 and await held() == 3

    too_many = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 50})
    assert too_many.status_code == 409 and "not enough GPUs" in too_many.json()["error"]["message"]
    negative = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": -1})
    assert negative.status_code == 422 and negative.json()["error"]["details"][0]["field"] == "replicas"

    response = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 1})
    assert response.status_code == 202
    down = await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 1 and e["step"] == "running")
    assert down["deployment"]["replicas"] == 1
    assert len(runtime_processes(endpoint["name"])) == 1 and await held() == 1
    await delete(api, endpoint["id"])


async def test_crashed_replica_is_restarted_by_the_supervisor(api, control_worker, optimizer_worker, model, cluster_id,
                                                             db_pool):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"])
    assert (await deploy(api, endpoint["id"]))["status"] == "RUNNING"
    [replica] = runtime_processes(endpoint["name"])
    async with db_pool.acquire() as conn:
        url = await conn.fetchval("SELECT url FROM endpoint_replicas WHERE endpoint_id = $1", endpoint["id"])
    replica.kill()
    async with asyncio.timeout(30):
        while not [p for p in runtime_processes(endpoint["name"]) if p.pid != replica.pid]:
            await asyncio.sleep(0.2)
    assert len(runtime_processes(endpoint["name"])) == 1
    async with asyncio.timeout(30), httpx.AsyncClient() as client:  # same address: the gateway's route still works
        while True:
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    await delete(api, endpoint["id"])


async def test_a_replica_restarted_on_another_port_keeps_serving_through_the_gateway(
    api, control_worker, optimizer_worker, gateway, model, cluster_id, db_pool, worker_clients, state_dir
):
    """Its old port was taken while it was down: the supervisor starts it elsewhere and the route follows."""
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"])
    assert (await deploy(api, endpoint["id"]))["status"] == "RUNNING"
    [replica] = runtime_processes(endpoint["name"])
    async with db_pool.acquire() as conn:
        old_url = await conn.fetchval("SELECT url FROM endpoint_replicas WHERE endpoint_id = $1", endpoint["id"])
    squatter = socket.socket()
    # The killed replica's connections leave the port in TIME_WAIT; a listening squatter still takes it from the
    # runtime (SO_REUSEADDR allows a bind over TIME_WAIT, never beside a listener).
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        # Holding the release's lock keeps the supervisor away until the port is taken.
        with worker_clients.local_backend._locked(f"ep-{endpoint['id'][:8]}"):
            replica.kill()
            replica.wait(10)
            squatter.bind(("127.0.0.1", int(old_url.rsplit(":", 1)[1])))
            squatter.listen()
        async with asyncio.timeout(30):
            while (new_url := await db_pool.fetchval(
                    "SELECT url FROM endpoint_replicas WHERE endpoint_id = $1", endpoint["id"])) == old_url:
                await asyncio.sleep(0.2)
        assert new_url != old_url
        # Until the new replica is up and the gateway has re-read its routes (the squatter accepts connections and
        # never answers: a request still sent to the old address times out and is retried).
        async with httpx.AsyncClient(timeout=3, headers=inference_key_headers(state_dir)) as client, \
                asyncio.timeout(45):
            while True:
                try:
                    reply = await client.post(f"{gateway}/chat/completions", json={
                        "model": endpoint["name"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
                    if reply.status_code == 200:
                        break
                except httpx.TimeoutException:
                    pass
                await asyncio.sleep(0.3)
    finally:
        squatter.close()
        await delete(api, endpoint["id"])


async def test_model_load_failure_is_explained_and_kept_on_request(api, control_worker, optimizer_worker, model,
                                                                   cluster_id, db_pool):
    """A replica that cannot load the model: FAILED with an explanation a user can act on; keep_on_failure leaves it in place."""
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    await configure_manual(api, endpoint["id"])
    os.environ["BUD_SIM_LOAD_ERROR"] = "unsupported weight layout"  # replicas inherit it: loading fails
    try:
        failed = await deploy(api, endpoint["id"], keep_on_failure=True)
    finally:
        del os.environ["BUD_SIM_LOAD_ERROR"]
    assert failed["status"] == "FAILED"
    assert failed["error"]["step"] == "waiting for replicas"
    assert "model failed to load" in failed["error"]["reason"]
    assert "unsupported weight layout" in failed["error"]["reason"]
    async with db_pool.acquire() as conn:  # kept: the reservation (and the release's files) stay for inspection
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 1
    await delete(api, endpoint["id"])
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0


async def test_moving_a_replica_touches_only_its_own_endpoints_rows(api, control_worker, model, cluster_id, db_pool):
    """A freed port is soon another release's: only the moved replica's endpoint may follow it."""
    from control.store.endpoints import move_replica

    first = await create_endpoint(api, model["id"], cluster_id)
    second = await create_endpoint(api, model["id"], cluster_id)
    async with db_pool.acquire() as conn:
        for endpoint in (first, second):
            await conn.execute("INSERT INTO endpoint_replicas (endpoint_id, name, url, ready) VALUES ($1, 'r0', $2, true)",
                               endpoint["id"], "http://127.0.0.1:40001")
        assert await move_replica(conn, first["id"], "http://127.0.0.1:40001", "http://127.0.0.1:40002") == 1
        urls = {str(row["endpoint_id"]): row["url"] for row in await conn.fetch(
            "SELECT endpoint_id, url FROM endpoint_replicas WHERE endpoint_id = ANY($1::uuid[])",
            [first["id"], second["id"]])}
    assert urls == {first["id"]: "http://127.0.0.1:40002", second["id"]: "http://127.0.0.1:40001"}
