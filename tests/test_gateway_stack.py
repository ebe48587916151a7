"""The gateway for real traffic on the whole stack: the API, the control worker, real gateway processes reading
PostgreSQL and Redis, and local simulated runtimes. Spillover while the primary is replaced, scaled to zero or
deleted loses no request; keys created and revoked through the API take effect on every gateway process; usage read
back through the API equals what the clients received, priced from the endpoint's GPU time; a second project sees
nothing of the first."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest

from control.store import usage as usage_store
from control.usage import catalog_price
from core.processes import free_port
from devstack import services
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    inference_key_headers,
    local_cluster_id,
    project_id,
    running_endpoint,
    runtime_processes,
    settled,
    wait_endpoint,
    wait_for_route,
)
from tests.helpers import unique
from tests.inference_helpers import bearer, new_project
from tests.model_files import write_tiny_llama

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("stack") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


@pytest.fixture(scope="module")
def key(state_dir) -> dict:
    return inference_key_headers(state_dir)


@pytest.fixture(scope="module")
async def fallback(api, control_worker, optimizer_worker, model, cluster_id):
    """A RUNNING endpoint the spillover routes fall back to."""
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    yield endpoint
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)


@pytest.fixture
async def spill_route(api, control_worker, optimizer_worker, gateway, key, model, cluster_id, fallback):
    """A route sending everything to a fresh primary endpoint, with `fallback` as its fallback."""
    primary = await running_endpoint(api, model["id"], cluster_id)
    name = unique("route")
    response = await api.put(f"/api/routes/{name}", json={
        "backends": [{"endpoint_id": primary["id"], "weight": 100}], "fallbacks": [{"endpoint_id": fallback["id"]}]})
    assert response.status_code == 200, response.text
    await wait_for_route(gateway, name, key)
    await asyncio.sleep(0.5)  # the gateway re-reads routes every 0.2 s: the fallback is in its table too
    yield name, primary
    if (await api.get(f"/api/endpoints/{primary['id']}")).status_code == 200:
        await api.delete(f"/api/endpoints/{primary['id']}")
        await wait_endpoint(api, primary["id"], lambda e: False)


@dataclass
class Load:
    """What the clients saw: every request's outcome and which backend served it, in order."""

    served: list[str] = field(default_factory=list)  # x-bud-backend of each complete answer
    failures: list[str] = field(default_factory=list)

    def by_backend(self) -> collections.Counter:
        return collections.Counter(self.served)


async def stream_until(gateway: str, route: str, stop: asyncio.Event, load: Load, headers: dict) -> None:
    """One client streaming chat completions back to back; a request counts as served only when it answered 200
    and its stream ended with [DONE]."""
    body = {"model": route, **CHAT, "stream": True}
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        while not stop.is_set():
            try:
                async with client.stream("POST", f"{gateway}/chat/completions", json=body) as reply:
                    text = (await reply.aread()).decode()
                    if reply.status_code == 200 and text.rstrip().endswith("data: [DONE]"):
                        load.served.append(reply.headers["x-bud-backend"])
                    else:
                        load.failures.append(f"{reply.status_code}: {text[-300:]}")
            except httpx.HTTPError as exc:
                load.failures.append(repr(exc))


async def under_load(gateway: str, route: str, headers: dict, change, clients: int = 4) -> Load:
    """Run `change()` while `clients` clients stream through the gateway, and a second after it."""
    load, stop = Load(), asyncio.Event()
    tasks = [asyncio.create_task(stream_until(gateway, route, stop, load, headers)) for _ in range(clients)]
    try:
        await asyncio.sleep(0.5)
        await change()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return load


async def test_redeploying_the_primary_loses_no_request(api, gateway, key, spill_route, fallback):
    name, primary = spill_route

    async def redeploy():
        # A RUNNING endpoint with a new config rolls it out: every replica process is replaced while the route
        # keeps serving (a new replica is routed before an old one drains; any gap goes to the fallback).
        before = {p.pid for p in runtime_processes(primary["name"])}
        await configure_manual(api, primary["id"], max_num_seqs=16)
        response = await api.post(f"/api/endpoints/{primary['id']}/deploy")
        assert response.status_code == 202, response.text
        done = await wait_endpoint(api, primary["id"], settled, timeout=180)
        assert done["status"] == "RUNNING" and done["deployment"]["ready_replicas"] == 1, done
        after = runtime_processes(primary["name"])
        assert before and len(after) == 1 and after[0].pid not in before
        assert "16" == after[0].cmdline()[after[0].cmdline().index("--max-num-seqs") + 1]
        await asyncio.sleep(0.5)  # the gateway's next poll sees the new replica

    load = await under_load(gateway, name, key, redeploy)
    assert load.failures == []
    served = load.by_backend()
    assert primary["id"] in served and set(served) <= {primary["id"], fallback["id"]}, served
    assert load.served[-1] == primary["id"]  # the new replica serves the route


async def test_scaling_the_primary_to_zero_then_deleting_it_loses_no_request(api, gateway, key, spill_route, fallback):
    name, primary = spill_route

    async def scale_to_zero():
        response = await api.post(f"/api/endpoints/{primary['id']}/scale", json={"replicas": 0})
        assert response.status_code == 202, response.text
        await wait_endpoint(api, primary["id"],
                            lambda e: e["step"] == "running" and e["deployment"]["ready_replicas"] == 0)

    scaled = await under_load(gateway, name, key, scale_to_zero)
    assert scaled.failures == []
    assert scaled.by_backend()[primary["id"]] > 0 and scaled.served[-1] == fallback["id"]

    response = await api.post(f"/api/endpoints/{primary['id']}/scale", json={"replicas": 1})
    assert response.status_code == 202, response.text
    await wait_endpoint(api, primary["id"],
                        lambda e: e["step"] == "running" and e["deployment"]["ready_replicas"] == 1)
    await asyncio.sleep(0.5)

    async def delete():
        response = await api.delete(f"/api/endpoints/{primary['id']}")
        assert response.status_code == 202, response.text
        assert (await wait_endpoint(api, primary["id"], lambda e: False))["status"] == "GONE"

    deleted = await under_load(gateway, name, key, delete)
    assert deleted.failures == []
    assert deleted.by_backend()[primary["id"]] > 0 and deleted.served[-1] == fallback["id"]
    route = (await api.get(f"/api/routes/{name}")).json()  # the route outlives its primary, on its fallback
    assert route["backends"] == [] and [b["endpoint_id"] for b in route["fallbacks"]] == [fallback["id"]]


async def test_an_endpoint_asleep_at_zero_wakes_while_the_fallback_serves(api, gateway, key, spill_route, fallback):
    """min_replicas 0: after its idle time the primary has no replica; the first requests are served by the
    fallback at once (no cold-start wait), and they wake the primary, which then takes the route back."""
    name, primary = spill_route
    response = await api.put(f"/api/endpoints/{primary['id']}/autoscaling", json={
        "enabled": True, "min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 4,
        "metrics": [{"type": "External", "external": {"metric": {"name": "inference_queue_depth"},
                                                      "target": {"type": "Value", "value": 4}}}]})
    assert response.status_code == 202, response.text
    await wait_endpoint(api, primary["id"], lambda e: e["deployment"]["replicas"] == 0
                        and e["deployment"]["ready_replicas"] == 0 and e["step"] == "running", timeout=60)
    async with asyncio.timeout(20):
        while runtime_processes(primary["name"]):
            await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the gateway's table has no primary replica now

    async with httpx.AsyncClient(timeout=30, headers=key) as client:
        started = time.monotonic()
        first = await client.post(f"{gateway}/chat/completions", json={"model": name, **CHAT})
        assert first.status_code == 200 and first.headers["x-bud-backend"] == fallback["id"]
        assert time.monotonic() - started < 2  # served by the fallback, not held for the primary's cold start

    async def woken():
        await wait_endpoint(api, primary["id"], lambda e: e["deployment"]["ready_replicas"] == 1
                            and e["step"] == "running", timeout=60)
        await asyncio.sleep(0.5)

    load = await under_load(gateway, name, key, woken, clients=2)
    assert load.failures == []
    assert load.served[0] == fallback["id"] and load.served[-1] == primary["id"], load.by_backend()


def second_gateway(settings, state_dir):
    """Another gateway process on the same PostgreSQL and Redis, started like the `gateway` fixture."""
    port = free_port()
    return services.python_service(
        f"gateway-{port}", ["gateway", "--port", str(port), "--route-source",
                            "gateway.postgres_source:from_environment", "--poll-interval-s", "0.2"],
        state_dir, {"BUD_DATABASE_URL": settings.database_url, "BUD_REDIS_URL": settings.redis_url,
                    "BUD_STATE_DIR": str(state_dir),
                    "BUD_PROVIDER_ALLOW_PRIVATE_URLS": str(settings.provider_allow_private_urls)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    ).start().wait_healthy(), f"http://127.0.0.1:{port}/v1"


async def wait_key_serves(gateway: str, route: str, headers: dict) -> None:
    """Until the gateway loaded a key just created (401 before its next key poll) and lists `route` for it."""
    async with httpx.AsyncClient(timeout=10, headers=headers) as client, asyncio.timeout(15):
        while True:
            reply = await client.get(f"{gateway}/models")
            if reply.status_code == 200 and route in [m["id"] for m in reply.json()["data"]]:
                return
            await asyncio.sleep(0.1)


async def status_of(client: httpx.AsyncClient, gateway: str, route: str) -> int:
    return (await client.post(f"{gateway}/chat/completions", json={"model": route, **CHAT})).status_code


async def test_a_key_revoked_through_the_api_is_refused_by_every_gateway_within_a_second(
        api, gateway, key, settings, state_dir, fallback):
    process, other = second_gateway(settings, state_dir)
    try:
        project = await project_id(api)
        created = await api.post(f"/api/projects/{project}/api-keys", json={"name": unique("app")})
        assert created.status_code == 201, created.text
        async with httpx.AsyncClient(timeout=30, headers=bearer(created.json()["key"])) as client:
            for url in (gateway, other):
                await wait_key_serves(url, fallback["name"], bearer(created.json()["key"]))
                assert await status_of(client, url, fallback["name"]) == 200
            revoked = await api.delete(f"/api/projects/{project}/api-keys/{created.json()['id']}")
            assert revoked.status_code == 204
            started = time.monotonic()
            flipped: dict[str, float] = {}
            # The requirement is "within a second"; the keys poll every 0.5 s, and each poll here is a full request,
            # so the bound asserted is 1.5 s with requests every 0.1 s.
            while len(flipped) < 2 and time.monotonic() - started < 1.5:
                for url in (gateway, other):
                    if url not in flipped and await status_of(client, url, fallback["name"]) == 401:
                        flipped[url] = time.monotonic() - started
                await asyncio.sleep(0.1)
            assert set(flipped) == {gateway, other}, flipped
            reply = await client.post(f"{other}/chat/completions", json={"model": fallback["name"], **CHAT})
            assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
        async with httpx.AsyncClient(timeout=30, headers=key) as client:  # the project's other key still works
            assert [await status_of(client, url, fallback["name"]) for url in (gateway, other)] == [200, 200]
    finally:
        process.stop()


async def test_usage_through_the_api_equals_what_the_clients_received_and_prices_gpu_time(
        api, gateway, fallback, db_pool):
    project = await project_id(api)
    created = (await api.post(f"/api/projects/{project}/api-keys", json={"name": unique("metered")})).json()
    headers = bearer(created["key"])
    await wait_key_serves(gateway, fallback["name"], headers)
    started = datetime.now(UTC)
    prompt = completion = 0
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        for max_tokens in (1, 3, 5):
            reply = await client.post(f"{gateway}/chat/completions", json={
                "model": fallback["name"], **CHAT, "max_tokens": max_tokens})
            assert reply.status_code == 200
            prompt += reply.json()["usage"]["prompt_tokens"]
            completion += reply.json()["usage"]["completion_tokens"]
        for max_tokens in (2, 4):
            async with client.stream("POST", f"{gateway}/chat/completions", json={
                    "model": fallback["name"], **CHAT, "max_tokens": max_tokens, "stream": True,
                    "stream_options": {"include_usage": True}}) as reply:
                assert reply.status_code == 200
                events = [line[6:] async for line in reply.aiter_lines() if line.startswith("data: {")]
            usage = [json.loads(e)["usage"] for e in events if json.loads(e).get("usage")]
            assert len(usage) == 1
            prompt += usage[0]["prompt_tokens"]
            completion += usage[0]["completion_tokens"]
        missing = await client.post(f"{gateway}/chat/completions", json={"model": unique("none"), **CHAT})
        assert missing.status_code == 404
    assert completion > 5 and prompt > 0

    # A window wholly in the past: its GPU time is fixed, so the cost is exact.
    window = {"from": (started - timedelta(seconds=1)).isoformat(), "to": datetime.now(UTC).isoformat()}
    async with asyncio.timeout(15):  # rows are written in batches, off the request path
        while True:
            groups = (await api.get("/api/usage", params={**window, "group_by": "key"})).json()["groups"]
            mine = next((g for g in groups if g["group"] == created["id"]), None)
            if mine is not None and mine["requests"] == 6:
                break
            await asyncio.sleep(0.2)
    assert (mine["prompt_tokens"], mine["completion_tokens"], mine["errors"]) == (prompt, completion, 1)
    assert mine["name"] == created["name"]

    by_backend = (await api.get("/api/usage", params={**window, "group_by": "backend"})).json()
    endpoint = next(g for g in by_backend["groups"] if g["group"] == f"endpoint:{fallback['id']}")
    assert endpoint["prompt_tokens"] >= prompt and endpoint["completion_tokens"] >= completion
    # The cost is the endpoint's GPU time inside the window x its GPUs x the GPU's price per hour.
    window_from, window_to = (datetime.fromisoformat(window[k]) for k in ("from", "to"))
    async with db_pool.acquire() as conn:
        lives = [life for life in await usage_store.lifetimes(conn, UUID(project), window_from, window_to)
                 if str(life.endpoint_id) == fallback["id"]]
    assert lives and all(life.stopped_at is None for life in lives)
    expected = sum(
        (window_to - max(window_from, life.started_at)).total_seconds() / 3600 * life.gpus
        * (life.price_per_hour if life.price_per_hour is not None else catalog_price(life.gpu_type))
        for life in lives)
    assert expected > 0
    assert endpoint["cost_usd"] == pytest.approx(expected, rel=1e-6)
    assert endpoint["realized_usd_per_mtok"] == pytest.approx(
        endpoint["cost_usd"] / (endpoint["prompt_tokens"] + endpoint["completion_tokens"]) * 1e6, rel=1e-6)


async def test_a_second_project_neither_reaches_the_first_projects_model_nor_sees_its_usage(
        api, anon_api, gateway, key, fallback):
    other, member = await new_project(api)
    created = await anon_api.post(f"/api/projects/{other}/api-keys", json={"name": "theirs"}, headers=bearer(member))
    assert created.status_code == 201, created.text
    theirs = bearer(created.json()["key"])
    async with httpx.AsyncClient(timeout=30) as client:
        async with asyncio.timeout(5):  # until the gateway loaded the new key: /v1/models answers 200
            while (await client.get(f"{gateway}/models", headers=theirs)).status_code != 200:
                await asyncio.sleep(0.1)
        assert (await client.get(f"{gateway}/models", headers=theirs)).json()["data"] == []
        refused = await client.post(f"{gateway}/chat/completions", headers=theirs,
                                    json={"model": fallback["name"], **CHAT})
        assert refused.status_code == 404
        assert refused.json()["error"]["message"] == f"The model `{fallback['name']}` does not exist."
        assert (await client.post(f"{gateway}/chat/completions", headers=key,
                                  json={"model": fallback["name"], **CHAT})).status_code == 200
    await asyncio.sleep(1.5)  # the usage rows are written in batches
    window = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "group_by": "backend"}
    seen = (await anon_api.get("/api/usage", params=window, headers=bearer(member))).json()
    # Their own refused request is theirs; nothing of the first project's endpoint or traffic is.
    assert [g["group"] for g in seen["groups"]] == ["none:"]
    assert seen["totals"]["requests"] == 1 and seen["totals"]["errors"] == 1
    assert seen["totals"]["prompt_tokens"] == seen["totals"]["completion_tokens"] == 0
    assert seen["totals"]["cost_usd"] == 0 and seen["unattributed_gpu_usd"] == 0
    mine = (await api.get("/api/usage", params=window)).json()
    assert f"endpoint:{fallback['id']}" in [g["group"] for g in mine["groups"]]
