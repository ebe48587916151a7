"""RUNNING means routable: route changes are pushed to every gateway (LISTEN/NOTIFY on a route-table version), and
a publish (PUT /api/routes/{name}, a deploy marking its endpoint RUNNING) answers only once every running gateway
serves it. Real gateway processes against PostgreSQL; one of them polls only once a minute, so what it serves on
time came through the push."""

from __future__ import annotations

import asyncio
import collections
import uuid

import httpx
import pytest

from core.processes import free_port
from devstack import services
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    inference_key_headers,
    keep_busy,
    local_cluster_id,
    running_endpoint,
    wait_endpoint,
)
from tests.helpers import unique
from tests.model_files import write_tiny_llama

# the version row was last written by the transaction asking
WRITTEN_BY_US = ("SELECT xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text "
                 "FROM route_table_version")
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("propagation") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


@pytest.fixture(scope="module")
def key(api, state_dir) -> dict:
    return inference_key_headers(state_dir)


@pytest.fixture(scope="module")
def pushed_gateway(settings, db_pool, state_dir, api):
    """A second real gateway that polls once a minute: it serves a change at once only if the push reached it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = services.python_service(
        "gateway-pushed", ["gateway", "--port", str(port), "--route-source",
                           "gateway.postgres_source:from_environment", "--poll-interval-s", "60"],
        state_dir, {"BUD_DATABASE_URL": settings.database_url, "BUD_REDIS_URL": settings.redis_url,
                    "BUD_STATE_DIR": str(state_dir), "BUD_GATEWAY_ADVERTISE_URL": url},
        health_url=f"{url}/healthz",
    ).start().wait_healthy()
    yield url
    process.stop()


@pytest.fixture(scope="module")
async def endpoint(api, control_worker, optimizer_worker, gateway, pushed_gateway, model, cluster_id):
    return await running_endpoint(api, model["id"], cluster_id)


async def instance_of(db_pool, url: str) -> dict:
    async with asyncio.timeout(10):
        while (row := await db_pool.fetchrow("SELECT * FROM gateway_instances WHERE url = $1", url)) is None:
            await asyncio.sleep(0.1)
    return dict(row)


async def chat(client: httpx.AsyncClient, base: str, model_name: str, key: dict) -> int:
    reply = await client.post(f"{base}/v1/chat/completions", json={"model": model_name, **BODY}, headers=key)
    return reply.status_code


async def test_healthz_and_the_heartbeat_show_the_version_served(db_pool, pushed_gateway, endpoint):
    version = await db_pool.fetchval("SELECT version FROM route_table_version")
    async with httpx.AsyncClient(timeout=10) as client, asyncio.timeout(10):
        while (health := (await client.get(f"{pushed_gateway}/healthz")).json())["route_table_version"] < version:
            await asyncio.sleep(0.05)
    assert isinstance(health["route_table_version"], int) and health["routes"] >= 1
    await asyncio.sleep(1.5)  # a heartbeat or more later
    row = await instance_of(db_pool, pushed_gateway)
    assert row["route_table_version"] >= version
    assert await db_pool.fetchval("SELECT now() - last_seen < interval '3 seconds' FROM gateway_instances "
                                  "WHERE instance_id = $1", row["instance_id"])


async def test_a_route_put_is_served_by_every_gateway_when_the_put_returns(api, db_pool, gateway, pushed_gateway,
                                                                            endpoint, key):
    stop = asyncio.Event()
    busy = [asyncio.create_task(keep_busy(gateway, endpoint["name"], stop, headers=key)) for _ in range(4)]
    statuses: collections.Counter = collections.Counter()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(8):
                name = unique("pushed")
                before = await db_pool.fetchval("SELECT version FROM route_table_version")
                response = await api.put(f"/api/routes/{name}",
                                         json={"backends": [{"endpoint_id": endpoint["id"], "weight": 100}]})
                assert response.status_code == 200, response.text
                published = response.json()
                assert published["propagated"] is True and published["lagging_gateways"] == []
                assert published["route_table_version"] > before
                # at once, through both gateways, the one polling every minute included
                for base in (pushed_gateway, gateway.removesuffix("/v1")):
                    statuses[await chat(client, base, name, key)] += 1
    finally:
        stop.set()
        served = await asyncio.gather(*busy)
    assert statuses == {200: 16}, statuses
    assert sum(served) > 0  # the steady load kept being served meanwhile


async def test_an_endpoint_shown_running_answers_through_the_gateway_at_once(api, control_worker, optimizer_worker,
                                                                            gateway, pushed_gateway, model,
                                                                            cluster_id, key):
    failures = collections.Counter()
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(2):
            created = await create_endpoint(api, model["id"], cluster_id)
            await configure_manual(api, created["id"])
            assert (await api.post(f"/api/endpoints/{created['id']}/deploy")).status_code == 202
            shown = await wait_endpoint(api, created["id"], lambda e: e["status"] in ("RUNNING", "FAILED"))
            assert shown["status"] == "RUNNING", shown["error"]
            for _ in range(5):  # back to back from the moment it shows RUNNING, through both gateways
                for base in (pushed_gateway, gateway.removesuffix("/v1")):
                    failures[await chat(client, base, created["name"], key)] += 1
    assert failures == {200: 20}, failures


async def test_one_commit_is_one_version_announced_and_unrelated_writes_are_not(db_pool, endpoint):
    """However many route rows a transaction changes, the version moves by one (taken at commit) and the notice
    carries it; a write the route table does not read (a route's shift record) moves nothing."""
    heard: list[str] = []

    def notice(_connection, _pid, _channel, payload: str) -> None:
        heard.append(payload)

    name = unique("bumps")
    async with db_pool.acquire() as listener:
        await listener.add_listener("bud_routes", notice)
        try:
            async with db_pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("INSERT INTO routes (name, project_id) VALUES ($1, $2)", name,
                                       uuid.UUID(endpoint["project_id"]))
                    await conn.execute("INSERT INTO route_backends (route_name, endpoint_id, weight) "
                                       "VALUES ($1, $2, 100)", name, uuid.UUID(endpoint["id"]))
                    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what the commit does: bump
                    ours = await conn.fetchval("SELECT version FROM route_table_version")
                    assert await conn.fetchval(WRITTEN_BY_US)
                    await conn.execute("UPDATE route_backends SET weight = 100 WHERE route_name = $1", name)
                    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                    assert await conn.fetchval("SELECT version FROM route_table_version") == ours  # not twice
                async with conn.transaction():
                    await conn.execute("UPDATE routes SET shift = '{}'::jsonb WHERE name = $1", name)
                    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                    assert not await conn.fetchval(WRITTEN_BY_US)
            async with asyncio.timeout(5):
                while str(ours) not in heard:
                    await asyncio.sleep(0.02)
        finally:
            await listener.remove_listener("bud_routes", notice)
            await db_pool.execute("DELETE FROM routes WHERE name = $1", name)


async def test_a_gateway_whose_listen_connection_dies_reconnects_and_converges(api, db_pool, pushed_gateway,
                                                                               endpoint, key):
    instance = await instance_of(db_pool, pushed_gateway)
    application = await db_pool.fetchval("SELECT left('bud-gateway-listen ' || $1::text, 63)",
                                         instance["instance_id"])

    async def listener_pid() -> int:
        async with asyncio.timeout(15):
            while (pid := await db_pool.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application)) is None:
                await asyncio.sleep(0.05)
        return pid

    old = await listener_pid()
    assert await db_pool.fetchval("SELECT pg_terminate_backend($1)", old)
    name = unique("relisten")
    response = await api.put(f"/api/routes/{name}", json={"backends": [{"endpoint_id": endpoint["id"], "weight": 100}]})
    assert response.status_code == 200, response.text
    assert response.json()["propagated"] is True, response.json()
    async with httpx.AsyncClient(timeout=30) as client:
        assert await chat(client, pushed_gateway, name, key) == 200
    assert await listener_pid() != old  # listening again on a new connection
    # and later changes are pushed over it (the gateway polls only once a minute)
    second = unique("relisten")
    response = await api.put(f"/api/routes/{second}",
                             json={"backends": [{"endpoint_id": endpoint["id"], "weight": 100}]})
    assert response.json()["propagated"] is True, response.json()
    async with httpx.AsyncClient(timeout=30) as client:
        assert await chat(client, pushed_gateway, second, key) == 200


async def test_a_lagging_gateway_bounds_the_put_and_is_named(api, db_pool, pushed_gateway, endpoint):
    """A running gateway that never catches up: PUT answers after its bounded wait with propagated false naming
    it; a gateway that stopped heartbeating long ago is not waited for."""
    stuck, gone = unique("stuck-gw"), unique("gone-gw")
    await db_pool.execute("INSERT INTO gateway_instances (instance_id, url, route_table_version, last_seen) "
                          "VALUES ($1, 'http://10.0.0.9:8080', 0, now() - interval '1 minute')", gone)

    async def heartbeat() -> None:
        while True:
            await db_pool.execute("INSERT INTO gateway_instances (instance_id, url, route_table_version) "
                                  "VALUES ($1, 'http://10.0.0.8:8080', 1) ON CONFLICT (instance_id) "
                                  "DO UPDATE SET last_seen = now()", stuck)
            await asyncio.sleep(0.5)

    beating = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        response = await api.put(f"/api/routes/{unique('lagged')}",
                                 json={"backends": [{"endpoint_id": endpoint["id"], "weight": 100}]})
        waited = asyncio.get_running_loop().time() - started
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await db_pool.execute("DELETE FROM gateway_instances WHERE instance_id = ANY($1::text[])", [stuck, gone])
    assert response.status_code == 200, response.text
    published = response.json()
    assert published["propagated"] is False
    assert published["lagging_gateways"] == [
        {"instance_id": stuck, "url": "http://10.0.0.8:8080", "route_table_version": 1}]
    assert 9 < waited < 20
