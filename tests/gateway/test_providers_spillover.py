"""External providers (a simulated runtime that wants its own API key, like vLLM's --api-key), fallback backends,
the one retry before the first byte, waiting for a replica of a route at zero, and x-bud-backend."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid

import httpx
import pytest

from core.processes import free_port
from gateway.postgres_source import PostgresRouteSource
from gateway.routes import Backend, ProviderTarget, RouteTable
from runtime.sse import DONE, parse_sse
from tests.gateway.conftest import FAST, bearer, keyed_gateway, new_key, new_project
from tests.gateway.test_gateway import chat, runtime_metric
from tests.helpers import unique

SECRET = "prov-" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def provider(runtimes):
    """A runtime serving `upstream-model` that answers 401 to any request without `Bearer SECRET`."""
    return runtimes.start("--api-key", SECRET, "--served-model-name", "upstream-model", *FAST, model="upstream")


def provider_backend(url: str, key: str = SECRET, name: str = "acme", **extra) -> Backend:
    provider_id = str(uuid.uuid4())
    return Backend(endpoint_id=f"{provider_id}/upstream-model", provider=ProviderTarget(
        provider_id=provider_id, name=name, base_url=f"{url}/v1", api_key=key, model="upstream-model"), **extra)  # fmt: skip


async def started_loading(runtimes):
    """A runtime still loading its model: it answers every /v1 call 503 (a 5xx before the first byte)."""
    process = await asyncio.to_thread(runtimes.start, *FAST, "--sim-load-delay-s", "3600", wait=False)
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{process.url}/health")).status_code == 503:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the loading runtime never answered")


def no_secret(reply: httpx.Response) -> None:
    assert SECRET not in reply.text and all(SECRET not in v for v in reply.headers.values())


async def test_a_provider_gets_its_own_key_and_model_and_streams_through(runtimes, provider, keyed, db_pool, caplog):
    caplog.set_level(logging.DEBUG)
    project = await new_project(db_pool)
    backend = provider_backend(provider.url)
    await keyed.set_routes({"public": (project, [backend])})
    key, key_id = await new_key(db_pool, project)
    await asyncio.sleep(1.0)

    reply = await keyed.client.post("/v1/chat/completions", json=chat("public", 4), headers=bearer(key))
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "upstream-model" and reply.headers["x-bud-backend"] == "acme/upstream-model"
    assert "x-bud-endpoint" not in reply.headers
    no_secret(reply)

    request = chat("public", 5, stream=True, stream_options={"include_usage": True})
    streamed = await keyed.client.post("/v1/chat/completions", json=request, headers=bearer(key))
    async with httpx.AsyncClient() as direct:
        reference = await direct.post(f"{provider.url}/v1/chat/completions", headers=bearer(SECRET),
                                      json={**request, "model": "upstream-model"})  # fmt: skip
    assert streamed.headers["x-bud-backend"] == "acme/upstream-model"
    strip = lambda events: [{k: v for k, v in e.items() if k not in ("id", "created")} for e in events[:-1]]  # noqa: E731
    assert strip(parse_sse(streamed.text)) == strip(parse_sse(reference.text))  # unchanged, usage chunk included
    no_secret(streamed)

    rows = []
    for _ in range(50):
        rows = await db_pool.fetch("SELECT * FROM usage_events WHERE key_id = $1", uuid.UUID(key_id))
        if len(rows) == 2:
            break
        await asyncio.sleep(0.1)
    assert {(r["backend_kind"], r["backend_id"], r["completion_tokens"]) for r in rows} == {
        ("provider", backend.endpoint_id, 4), ("provider", backend.endpoint_id, 5)}
    assert SECRET not in caplog.text
    assert SECRET not in repr(backend) and SECRET not in backend.model_dump_json()


async def test_provider_errors_name_the_provider_and_never_show_its_key(runtimes, provider, keyed, db_pool, caplog):
    caplog.set_level(logging.DEBUG)
    project = await new_project(db_pool)
    wrong = "wrong-" + SECRET
    await keyed.set_routes({
        "bad-key": (project, [provider_backend(provider.url, key=wrong, name="acme-bad")]),
        "down": (project, [provider_backend(f"http://127.0.0.1:{free_port()}", name="acme-down")]),
        # A provider echoing its key in an error: the key the runtime refuses is the word its refusal says.
        "echoes": (project, [provider_backend(provider.url, key="Unauthorized", name="acme-echo")]),
    })  # fmt: skip
    key, _ = await new_key(db_pool, project)
    await asyncio.sleep(1.0)

    refused = await keyed.client.post("/v1/chat/completions", json=chat("bad-key"), headers=bearer(key))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "provider `acme-bad` answered 401: Unauthorized"
    assert refused.headers["x-bud-backend"] == "acme-bad/upstream-model"
    echoed = await keyed.client.post("/v1/chat/completions", json=chat("echoes"), headers=bearer(key))
    assert echoed.status_code == 401 and echoed.json()["error"]["message"] == "provider `acme-echo` answered 401: ***"
    down = await keyed.client.post("/v1/chat/completions", json=chat("down", stream=True), headers=bearer(key))
    assert down.status_code == 503
    assert down.json()["error"]["message"] == "provider `acme-down` could not be reached"
    for reply in (refused, down):
        assert wrong not in reply.text and key not in reply.text
        no_secret(reply)
    assert wrong not in caplog.text and SECRET not in caplog.text and key not in caplog.text


async def test_the_route_source_opens_provider_keys_from_postgres(db_pool, postgres_url, settings, provider, keyed):
    project = await new_project(db_pool)
    box = settings.secret_box()
    provider_id = await db_pool.fetchval(
        "INSERT INTO providers (project_id, name, kind, base_url, api_key_sealed, models, price_input_per_mtok, "
        "price_output_per_mtok) VALUES ($1, 'acme', 'openai-compatible', $2, $3, '{upstream-model}', 1, 2) RETURNING id",
        uuid.UUID(project), f"{provider.url}/v1", box.seal(SECRET))  # fmt: skip
    route = unique("via-provider")
    await db_pool.execute("INSERT INTO routes (name, project_id, spill_queue_depth) VALUES ($1, $2, 3)", route,
                          uuid.UUID(project))  # fmt: skip
    await db_pool.execute("INSERT INTO route_provider_backends (route_name, provider_id, model, weight, fallback) "
                          "VALUES ($1, $2, 'upstream-model', 100, false)", route, provider_id)  # fmt: skip
    source = PostgresRouteSource(postgres_url, box)
    table = await source.load()
    (backend,) = table.routes[route]
    assert table.info[route].project_id == project and table.info[route].spill_queue_depth == 3
    assert backend.provider.api_key.get_secret_value() == SECRET and backend.label == "acme/upstream-model"
    assert SECRET not in repr(table) and SECRET not in table.model_dump_json()

    keyed.app.source = source  # the gateway serves it with the same table
    await keyed.app.refresh_routes()
    key, _ = await new_key(db_pool, project)
    await asyncio.sleep(1.0)
    reply = await keyed.client.post("/v1/chat/completions", json=chat(route), headers=bearer(key))
    assert reply.status_code == 200 and reply.headers["x-bud-backend"] == "acme/upstream-model"
    await db_pool.execute("DELETE FROM routes WHERE name = $1", route)


async def test_fallback_takes_over_when_the_primary_has_no_replica_refuses_or_answers_5xx(runtimes, gateway):
    spare = Backend(endpoint_id="ep-spare", replicas=[runtimes.beta.url], served_model_name="beta", fallback=True)
    loading = await started_loading(runtimes)
    primaries = {
        "no-replica": Backend(endpoint_id="ep-main", replicas=[]),
        "refuses": Backend(endpoint_id="ep-main", replicas=[f"http://127.0.0.1:{free_port()}"]),
        "answers-5xx": Backend(endpoint_id="ep-main", replicas=[loading.url]),
    }
    for case, primary in primaries.items():
        await gateway.set_routes({"alpha": [primary, spare]})
        started = time.monotonic()
        for stream in (False, True):
            reply = await gateway.client.post("/v1/chat/completions", json=chat("alpha", 3, stream=stream))
            assert reply.status_code == 200, (case, reply.text)
            assert reply.headers["x-bud-backend"] == "ep-spare", case
        assert parse_sse(reply.text)[-1] == DONE
        assert time.monotonic() - started < 2, case  # no waiting for a replica: the fallback could serve

    # With a healthy primary, the fallback gets nothing.
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-main", replicas=[runtimes.alpha_1.url]), spare]})
    assert {(await gateway.client.post("/v1/chat/completions", json=chat("alpha"))).headers["x-bud-backend"]
            for _ in range(5)} == {"ep-main"}  # fmt: skip


async def test_a_5xx_before_the_first_byte_is_retried_once_only(runtimes, gateway):
    first, second = await started_loading(runtimes), await started_loading(runtimes)
    spare = Backend(endpoint_id="ep-spare", replicas=[runtimes.beta.url], served_model_name="beta", fallback=True)
    # One primary replica failing: the retry goes to the other one.
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-main", replicas=[first.url, runtimes.alpha_1.url])]})
    for _ in range(4):
        reply = await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
        assert reply.status_code == 200 and reply.headers["x-bud-backend"] == "ep-main"

    # Both primary replicas failing: one retry, then the second 5xx goes to the client as it came; the fallback,
    # which a third try would have reached, gets nothing.
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-main", replicas=[first.url, second.url]), spare]})
    served_before = await runtime_metric(runtimes.beta, "vllm:request_success_total")
    reply = await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
    assert reply.status_code == 503 and reply.json()["error"]["message"] == "The model is still loading."
    assert reply.headers["x-bud-backend"] == "ep-main"
    assert await runtime_metric(runtimes.beta, "vllm:request_success_total") == served_before


async def test_spill_queue_depth_sends_the_overflow_to_the_fallback(runtimes, gateway):
    gateway.source.set(RouteTable.model_validate({"routes": {"alpha": {"spill_queue_depth": 0, "backends": [
        {"endpoint_id": "ep-main", "replicas": [runtimes.alpha_1.url]},
        {"endpoint_id": "ep-spare", "replicas": [runtimes.beta.url], "served_model_name": "beta", "fallback": True},
    ]}}}))  # fmt: skip
    await gateway.app.refresh_routes()
    first_token = asyncio.Event()

    async def long_stream() -> str:
        async with gateway.client.stream("POST", "/v1/chat/completions", json=chat("alpha", 200, stream=True)) as s:
            async for line in s.aiter_lines():
                if line.startswith("data: {"):
                    first_token.set()
            return s.headers["x-bud-backend"]

    streaming = asyncio.create_task(long_stream())
    await asyncio.wait_for(first_token.wait(), 10)
    overflow = await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
    assert overflow.status_code == 200 and overflow.headers["x-bud-backend"] == "ep-spare"
    assert await streaming == "ep-main"
    after = await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
    assert after.headers["x-bud-backend"] == "ep-main"  # the primary is idle again


async def test_a_route_at_zero_replicas_waits_for_one(runtimes, gateway):
    gateway.app.cold_start_wait_s = 10
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-cold", replicas=[])]})
    started = time.monotonic()
    waiting = asyncio.create_task(gateway.client.post("/v1/chat/completions", json=chat("alpha")))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-cold", replicas=[runtimes.alpha_1.url])]})
    reply = await waiting
    assert reply.status_code == 200 and reply.headers["x-bud-backend"] == "ep-cold"
    assert 0.5 <= time.monotonic() - started < 3


async def test_providers_on_private_addresses_are_refused_unless_allowed(provider, db_pool, postgres_url, redis_url,
                                                                          caplog):  # fmt: skip
    project = await new_project(db_pool)
    key, _ = await new_key(db_pool, project)
    port = provider.url.rsplit(":", 1)[1]
    async with keyed_gateway(postgres_url, redis_url, provider_allow_private=False) as guarded:
        await guarded.set_routes({
            "literal": (project, [provider_backend(provider.url, name="loopback-ip")]),
            "by-name": (project, [provider_backend(f"http://localhost:{port}", name="loopback-name")]),
        })  # fmt: skip
        await asyncio.sleep(1.0)
        for route, name in (("literal", "loopback-ip"), ("by-name", "loopback-name")):
            reply = await guarded.client.post("/v1/chat/completions", json=chat(route), headers=bearer(key))
            assert reply.status_code == 503, reply.text
        assert "provider loopback-ip left out: 127.0.0.1 is a loopback address" in caplog.text
        assert reply.json()["error"]["message"] == "provider `loopback-name` could not be reached"
    async with keyed_gateway(postgres_url, redis_url, provider_allow_private=True) as allowed:
        await allowed.set_routes({"by-name": (project, [provider_backend(f"http://localhost:{port}")])})
        await asyncio.sleep(1.0)
        assert (await allowed.client.post("/v1/chat/completions", json=chat("by-name"), headers=bearer(key))
                ).status_code == 200  # fmt: skip
