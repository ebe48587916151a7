"""A route's fallbacks are tried in the order they were given: PUT stores that order, GET shows it, and a gateway
reading the route table from PostgreSQL sends a request the primaries cannot take to the first fallback that can,
whatever the fallbacks' ids. A second PUT reorders them."""

from __future__ import annotations

import asyncio
import collections
import uuid

import pytest

from gateway.postgres_source import PostgresRouteSource
from runtime.launch import sim_runtime_process
from tests.gateway.conftest import FAST, keyed_gateway, new_key
from tests.helpers import unique
from tests.inference_helpers import bearer, create_provider, new_project, running_endpoint_row


async def two_fallbacks(db_pool, project: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two RUNNING endpoints (id, name) as (A, B) with A's id sorting before B's: the order ids alone would give."""
    first = await running_endpoint_row(db_pool, project)
    second = await running_endpoint_row(db_pool, project)
    a, b = sorted([first, second], key=lambda endpoint: uuid.UUID(endpoint[0]))
    return a, b


def fallback_ids(route: dict) -> list[str]:
    return [f["endpoint_id"] or f"{f['provider_id']}/{f['model']}" for f in route["fallbacks"]]


async def test_fallbacks_are_stored_and_shown_in_the_order_given(api, anon_api, db_pool):
    project, member = await new_project(api)
    primary_id, _ = await running_endpoint_row(db_pool, project)
    (a_id, _), (b_id, _) = await two_fallbacks(db_pool, project)
    hosted = await create_provider(anon_api, member)
    route = unique("ordered")
    provider = f"{hosted['id']}/model-b"
    body = {"backends": [{"endpoint_id": primary_id, "weight": 100}],
            "fallbacks": [{"endpoint_id": b_id}, {"provider_id": hosted["id"], "model": "model-b"},
                          {"endpoint_id": a_id}]}
    put = await anon_api.put(f"/api/routes/{route}", json=body, headers=bearer(member))
    assert put.status_code == 200, put.text
    assert fallback_ids(put.json()) == [b_id, provider, a_id]
    shown = await anon_api.get(f"/api/routes/{route}", headers=bearer(member))
    assert fallback_ids(shown.json()) == [b_id, provider, a_id]
    assert [b["endpoint_id"] for b in shown.json()["backends"]] == [primary_id]
    listed = await anon_api.get("/api/routes", headers=bearer(member))
    assert [fallback_ids(r) for r in listed.json()] == [[b_id, provider, a_id]]

    # The same body again changes nothing.
    again = await anon_api.put(f"/api/routes/{route}", json=body, headers=bearer(member))
    assert again.status_code == 200 and fallback_ids(again.json()) == [b_id, provider, a_id]

    # A body without fallbacks keeps them in their order; one that makes B a primary keeps the others' order.
    kept = await anon_api.put(f"/api/routes/{route}", headers=bearer(member),
                              json={"backends": [{"endpoint_id": primary_id, "weight": 100}]})
    assert kept.status_code == 200 and fallback_ids(kept.json()) == [b_id, provider, a_id]
    promoted = await anon_api.put(f"/api/routes/{route}", headers=bearer(member),
                                  json={"backends": [{"endpoint_id": b_id, "weight": 100}]})
    assert promoted.status_code == 200, promoted.text
    assert fallback_ids(promoted.json()) == [provider, a_id]
    assert [b["endpoint_id"] for b in promoted.json()["backends"]] == [b_id]

    # A second PUT with fallbacks reorders them.
    reordered = await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"endpoint_id": primary_id, "weight": 100}],
        "fallbacks": [{"endpoint_id": a_id}, {"endpoint_id": b_id}, {"provider_id": hosted["id"], "model": "model-b"}]})
    assert reordered.status_code == 200, reordered.text
    assert fallback_ids(reordered.json()) == [a_id, b_id, provider]
    shown = await anon_api.get(f"/api/routes/{route}", headers=bearer(member))
    assert fallback_ids(shown.json()) == [a_id, b_id, provider]

    # Another project sees none of it.
    _, stranger = await new_project(api)
    assert (await anon_api.get(f"/api/routes/{route}", headers=bearer(stranger))).status_code == 404
    assert (await anon_api.get("/api/routes", headers=bearer(stranger))).json() == []


@pytest.fixture
def start_runtime(tmp_path):
    started = []

    def start(served_name: str):
        process = sim_runtime_process("tiny", tmp_path, (*FAST, "--served-model-name", served_name))
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def served_by(client, route: str, key: str, requests: int = 6) -> collections.Counter:
    """Which endpoint answered each of `requests` chat completions (all must succeed)."""
    seen: collections.Counter = collections.Counter()
    for _ in range(requests):
        reply = await client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": route, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert reply.status_code == 200, reply.text
        seen[reply.headers["x-bud-backend"]] += 1
    return seen


async def settles_on(client, route: str, key: str, endpoint_id: str) -> collections.Counter:
    """Requests until the gateway's table has caught up with the last change (bounded), then a batch of them."""
    for _ in range(100):
        if set(await served_by(client, route, key, requests=1)) == {endpoint_id}:
            break
        await asyncio.sleep(0.1)
    return await served_by(client, route, key)


async def test_the_gateway_tries_the_fallbacks_in_the_order_given(api, anon_api, db_pool, postgres_url, redis_url,
                                                                  start_runtime):
    project, member = await new_project(api)
    primary_id, primary_name = await running_endpoint_row(db_pool, project)
    (a_id, a_name), (b_id, b_name) = await two_fallbacks(db_pool, project)
    processes = {endpoint_id: start_runtime(name) for endpoint_id, name in
                 ((primary_id, primary_name), (a_id, a_name), (b_id, b_name))}
    for endpoint_id, process in processes.items():
        await asyncio.to_thread(process.wait_healthy)
        await db_pool.execute("INSERT INTO endpoint_replicas (endpoint_id, name, url, ready) VALUES ($1, 'r0', $2, "
                              "true)", uuid.UUID(endpoint_id), process.url)
    key, _ = await new_key(db_pool, project)
    route = unique("ordered")

    async with keyed_gateway(postgres_url, redis_url, source=PostgresRouteSource(postgres_url)) as gateway:
        put = await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
            "backends": [{"endpoint_id": primary_id, "weight": 100}],
            "fallbacks": [{"endpoint_id": b_id}, {"endpoint_id": a_id}]})
        assert put.status_code == 200, put.text
        assert await settles_on(gateway.client, route, key, primary_id) == {primary_id: 6}

        # The primary goes down (its runtime stops): B, the first fallback given, takes everything.
        await asyncio.to_thread(processes[primary_id].stop)
        assert await served_by(gateway.client, route, key) == {b_id: 6}
        # B is down too (its replica no longer ready): A.
        await db_pool.execute("UPDATE endpoint_replicas SET ready = false WHERE endpoint_id = $1", uuid.UUID(b_id))
        assert await settles_on(gateway.client, route, key, a_id) == {a_id: 6}
        await db_pool.execute("UPDATE endpoint_replicas SET ready = true WHERE endpoint_id = $1", uuid.UUID(b_id))
        assert await settles_on(gateway.client, route, key, b_id) == {b_id: 6}

        # Reordered: A first now, with B still up.
        reordered = await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
            "backends": [{"endpoint_id": primary_id, "weight": 100}],
            "fallbacks": [{"endpoint_id": a_id}, {"endpoint_id": b_id}]})
        assert reordered.status_code == 200 and reordered.json()["propagated"], reordered.text
        assert await served_by(gateway.client, route, key) == {a_id: 6}
