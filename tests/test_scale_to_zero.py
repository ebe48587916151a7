"""Scale to zero on the local cluster: an endpoint with `min_replicas: 0` keeps its replica while it has traffic,
stops it after the idle period (RUNNING, 0 replicas, `idle_since` shown), and a request noted by the gateway's
demand recorder brings one back, which then serves. The recorder itself: batched writes, kept through an outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import httpx
import pytest

from control.payloads.clusters import ClusterSpec
from control.store import clusters as cluster_store
from core.processes import free_port
from gateway.demand import DemandRecorder
from tests.deploy_helpers import (
    available_model,
    create_endpoint,
    inference_key_headers,
    local_cluster_id,
    project_id,
    running_endpoint,
    runtime_processes,
    wait_endpoint,
)
from tests.helpers import unique
from tests.model_files import write_tiny_llama
from tests.test_register_cluster import unreachable_kubeconfig

QUEUE_METRIC = {"type": "External",
                "external": {"metric": {"name": "inference_queue_depth"}, "target": {"type": "Value", "value": 4}}}
IDLE_S = 4


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("scale-to-zero") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


async def chat(client: httpx.AsyncClient, gateway: str, name: str) -> int:
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return (await client.post(f"{gateway}/chat/completions", json=body)).status_code


async def wait_served(client: httpx.AsyncClient, gateway: str, name: str) -> None:
    async with asyncio.timeout(15):
        while name not in [m["id"] for m in (await client.get(f"{gateway}/models")).json()["data"]]:
            await asyncio.sleep(0.1)


async def note_demand(database_url: str, endpoint_id: str) -> None:
    """What the gateway does for each request of an endpoint: note it; the recorder writes it within its tick."""
    recorder = DemandRecorder(database_url, flush_interval_s=0.2)
    await recorder.start()
    recorder.note(endpoint_id)
    await asyncio.sleep(0.5)
    await recorder.stop()
    assert recorder.writes >= 1 and recorder.failed_writes == 0


async def test_an_idle_endpoint_scales_to_zero_and_a_request_wakes_it(
    api, anon_api, control_worker, optimizer_worker, gateway, model, cluster_id, state_dir, settings
):
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    name, url = endpoint["name"], f"/api/endpoints/{endpoint['id']}/autoscaling"
    body = {"enabled": True, "min_replicas": 0, "max_replicas": 2, "metrics": [QUEUE_METRIC],
            "scale_to_zero_after_s": IDLE_S, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}

    # Another project neither sees nor changes the autoscaler.
    stranger = (await api.post("/api/projects", json={"name": unique("tenant")})).json()["token"]
    theirs = await anon_api.put(url, json=body, headers={"Authorization": f"Bearer {stranger}"})
    assert theirs.status_code == 404
    response = await api.put(url, json=body)
    assert response.status_code == 202, response.text
    assert response.json()["autoscaling"]["min_replicas"] == 0
    assert response.json()["autoscaling"]["scale_to_zero_after_s"] == IDLE_S

    async with httpx.AsyncClient(timeout=120, headers=inference_key_headers(state_dir)) as client:
        await wait_served(client, gateway, name)
        # Requests for twice the idle period, a pause shorter than it between them: the replica stays.
        started, statuses = time.monotonic(), []
        while time.monotonic() - started < IDLE_S * 2:
            statuses.append(await chat(client, gateway, name))
            current = (await api.get(f"/api/endpoints/{endpoint['id']}")).json()
            assert current["deployment"]["replicas"] == 1, current["autoscaling_state"]
            await asyncio.sleep(IDLE_S / 4)
        assert statuses and statuses.count(200) == len(statuses), statuses

        # Idle: the last replica stops; the endpoint stays RUNNING with 0 replicas and says since when it is idle.
        asleep = await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["replicas"] == 0
                                     and e["deployment"]["ready_replicas"] == 0 and e["step"] == "running",
                                     timeout=60)
        assert asleep["status"] == "RUNNING"
        async with asyncio.timeout(20):
            while runtime_processes(name):
                await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # several sync periods without a request: still asleep
        still = (await api.get(f"/api/endpoints/{endpoint['id']}")).json()
        assert still["deployment"]["replicas"] == 0, still["autoscaling_state"]
        state = still["autoscaling_state"]
        assert state["scale_to_zero_after_s"] == IDLE_S
        idle_since = datetime.fromisoformat(state["idle_since"])
        assert (datetime.fromisoformat(state["at"]) - idle_since).total_seconds() >= IDLE_S
        assert datetime.fromisoformat(state["last_request_at"]) <= idle_since
        assert any("zero replicas" in reason for reason in state["reasons"])
        assert name in [m["id"] for m in (await client.get(f"{gateway}/models")).json()["data"]]  # still listed

        # The first requests wake it: the gateway holds them until a replica is ready (within its cold-start
        # wait), and none fails.
        statuses = await asyncio.gather(*(chat(client, gateway, name) for _ in range(4)))
        assert list(statuses) == [200] * 4
        awake = (await api.get(f"/api/endpoints/{endpoint['id']}")).json()
        assert awake["deployment"]["replicas"] == 1 and awake["deployment"]["ready_replicas"] == 1
        assert len(runtime_processes(name)) == 1
        assert [await chat(client, gateway, name) for _ in range(3)] == [200] * 3

    # Without further requests it sleeps again; a note through the recorder alone wakes it too.
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["replicas"] == 0 and e["step"] == "running",
                        timeout=60)
    await note_demand(settings.database_url, endpoint["id"])
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 1
                        and e["step"] == "running", timeout=60)
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202
    assert (await wait_endpoint(api, endpoint["id"], lambda e: False))["status"] == "GONE"
    assert runtime_processes(name) == []


async def test_scale_to_zero_bodies_are_bounded(api, control_worker, optimizer_worker, model, cluster_id):
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    url = f"/api/endpoints/{endpoint['id']}/autoscaling"
    for idle in (0, 86_401, "soon", -5):
        response = await api.put(url, json={"min_replicas": 0, "max_replicas": 2, "scale_to_zero_after_s": idle})
        assert response.status_code == 422, response.text
        assert "scale_to_zero_after_s" in response.text
    response = await api.put(url, json={"min_replicas": -1, "max_replicas": 2})
    assert response.status_code == 422 and "min_replicas" in response.text
    assert (await api.get(f"/api/endpoints/{endpoint['id']}")).json()["autoscaling"] is None  # nothing stored
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202


async def test_scale_to_zero_is_refused_on_kubernetes(api, db_pool, control_worker, model):
    """A HorizontalPodAutoscaler keeps at least one replica: min_replicas 0 is the local autoscaler's alone."""
    project = uuid.UUID(await project_id(api))
    spec = ClusterSpec(name=unique("kube"), kind="kubernetes", kubeconfig=unreachable_kubeconfig(),
                       gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    async with db_pool.acquire() as conn:
        cluster = await cluster_store.insert_cluster(conn, project, spec)
    endpoint = await create_endpoint(api, model["id"], str(cluster.id))
    response = await api.put(f"/api/endpoints/{endpoint['id']}/autoscaling",
                             json={"min_replicas": 0, "max_replicas": 2, "scale_to_zero_after_s": 600})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["details"]["field"] == "min_replicas"
    assert "HorizontalPodAutoscaler keeps at least one replica" in response.json()["error"]["message"]


async def test_the_recorder_writes_each_endpoint_at_most_once_a_tick(db_pool, api, model, cluster_id, settings):
    endpoint = await create_endpoint(api, model["id"], cluster_id)
    recorder = DemandRecorder(settings.database_url, flush_interval_s=1.0)
    await recorder.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < 2.5:
            for _ in range(200):
                recorder.note(endpoint["id"])
                recorder.note("not-a-uuid")  # a route file's name: dropped at the write
                recorder.note(str(uuid.uuid4()))  # no such endpoint: ignored
            last_noted = time.time()  # (before the sleep, which a loaded machine may stretch)
            await asyncio.sleep(0.01)
    finally:
        await recorder.stop()
    assert 1 <= recorder.writes <= 4  # one statement per tick (and one at stop), not one per request
    assert recorder.failed_writes == 0 and recorder.dropped_ids >= 1
    async with db_pool.acquire() as conn:
        rows = await conn.fetch("SELECT endpoint_id, last_request_at FROM endpoint_demand WHERE endpoint_id = $1",
                                uuid.UUID(endpoint["id"]))
    assert len(rows) == 1 and rows[0]["last_request_at"].timestamp() == pytest.approx(last_noted, abs=0.5)
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202


async def test_the_recorder_keeps_notes_while_the_database_is_down(db_pool, api, model, cluster_id, settings):
    endpoint = (await create_endpoint(api, model["id"], cluster_id))["id"]
    recorder = DemandRecorder(f"postgresql://bud@127.0.0.1:{free_port()}/bud", flush_interval_s=0.2)
    recorder.note(endpoint)
    assert await recorder.flush() == 0 and recorder.failed_writes == 1  # refused: kept for the next tick
    noted_at = time.time()
    recorder.note(endpoint)
    recorder.dsn = settings.database_url  # the database is back
    assert await recorder.flush() == 1
    await recorder.stop()
    async with db_pool.acquire() as conn:
        last = await conn.fetchval("SELECT last_request_at FROM endpoint_demand WHERE endpoint_id = $1",
                                   uuid.UUID(endpoint))
    assert last.timestamp() == pytest.approx(noted_at, abs=1)
