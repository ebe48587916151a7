"""Keys, limits and metering against the session's real PostgreSQL and Redis, in front of real simulated runtimes."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from core.db import apply_migrations, create_pool
from core.processes import ManagedProcess, free_port, http_ok
from devstack import services
from gateway.routes import Backend
from gateway.usage import UsageRecorder
from runtime.sse import DONE, parse_sse
from tests.gateway.conftest import bearer, keyed_gateway, new_key, new_project
from tests.gateway.test_gateway import chat, metric
from tests.helpers import server_state_dir

AUTH_ERROR = {"message": "Invalid or missing API key. Send `Authorization: Bearer <inference key>`.",
              "type": "authentication_error", "param": None, "code": 401}  # fmt: skip


async def usage_rows(db_pool, key_id: str, count: int, timeout_s: float = 10.0) -> list:
    """The key's usage rows once there are `count` of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await db_pool.fetch("SELECT * FROM usage_events WHERE key_id = $1 ORDER BY at", uuid.UUID(key_id))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_missing_unknown_revoked_and_expired_keys_get_the_same_401(runtimes, keyed, db_pool):
    project = await new_project(db_pool)
    await keyed.set_routes({"alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])])})
    key, key_id = await new_key(db_pool, project)
    expiring, _ = await new_key(db_pool, project, expires_at=datetime.now(UTC) + timedelta(seconds=1.5))
    for headers in ({}, bearer("bud-sk-nothing-" + secrets.token_urlsafe(32)), {"Authorization": key},
                    {"Authorization": "Basic " + key}, bearer("x" * 5000), {"Authorization": "Bearer ключ".encode()}):  # fmt: skip
        reply = await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=headers)
        assert reply.status_code == 401 and reply.json()["error"] == AUTH_ERROR
        assert (await keyed.client.get("/v1/models", headers=headers)).status_code == 401
    await asyncio.sleep(1.0)  # new keys are in force within a poll (0.5 s)
    assert (await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))).status_code == 200
    reply = await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(expiring))
    deadline = time.monotonic() + 3
    while reply.status_code == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        reply = await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(expiring))
    assert reply.status_code == 401 and reply.json()["error"] == AUTH_ERROR  # expired: checked per request

    await db_pool.execute("UPDATE inference_keys SET revoked_at = now(), updated_at = now() WHERE id = $1",
                          uuid.UUID(key_id))  # fmt: skip
    revoked_at = time.monotonic()
    while (await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))).status_code != 401:
        assert time.monotonic() - revoked_at < 1.0, "a revoked key still worked after a second"
        await asyncio.sleep(0.05)
    assert (await keyed.client.get("/metrics")).status_code == 200  # /metrics and /healthz stay open
    assert (await keyed.client.get("/healthz")).json()["routes"] == 1


async def test_a_key_sees_only_its_projects_routes_and_the_ones_it_names(runtimes, keyed, db_pool):
    mine, theirs = await new_project(db_pool), await new_project(db_pool)
    await keyed.set_routes({
        "alpha": (mine, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])]),
        "beta": (mine, [Backend(endpoint_id="ep-b", replicas=[runtimes.beta.url])]),
        "theirs": (theirs, [Backend(endpoint_id="ep-t", replicas=[runtimes.alpha_2.url], served_model_name="alpha")]),
    })  # fmt: skip
    every, _ = await new_key(db_pool, mine)
    only_alpha, _ = await new_key(db_pool, mine, routes=["alpha"])
    other, _ = await new_key(db_pool, theirs)
    await asyncio.sleep(1.0)

    async def models(key: str) -> list[str]:
        return sorted(m["id"] for m in (await keyed.client.get("/v1/models", headers=bearer(key))).json()["data"])

    assert await models(every) == ["alpha", "beta"]
    assert await models(only_alpha) == ["alpha"]
    assert await models(other) == ["theirs"]
    for key, name, status in ((every, "theirs", 404), (other, "alpha", 404), (only_alpha, "beta", 404),
                              (only_alpha, "alpha", 200), (other, "theirs", 200), (every, "beta", 200)):  # fmt: skip
        reply = await keyed.client.post("/v1/chat/completions", json=chat(name), headers=bearer(key))
        assert reply.status_code == status, (name, reply.text)
        if status == 404:
            assert reply.json()["error"]["message"] == f"The model `{name}` does not exist."
        card = await keyed.client.get(f"/v1/models/{name}", headers=bearer(key))
        assert card.status_code == status and (status == 404 or card.json()["id"] == name)


async def test_over_rpm_gets_429_with_retry_after_and_two_gateways_share_the_limit(
    runtimes, keyed, db_pool, postgres_url, redis_url
):
    project = await new_project(db_pool)
    routes = {"alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])])}
    await keyed.set_routes(routes)
    key, _ = await new_key(db_pool, project, rpm=4)
    async with keyed_gateway(postgres_url, redis_url) as second:
        await second.set_routes(routes)
        await asyncio.sleep(1.0)  # the first gateway loads the new key at its next poll
        while time.time() % 60 > 55:  # the four requests and the refusal fall into one minute window
            await asyncio.sleep(0.5)
        statuses = []
        for client in (keyed.client, second.client, keyed.client, second.client, keyed.client, second.client):
            reply = await client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))
            statuses.append(reply.status_code)
        assert statuses == [200, 200, 200, 200, 429, 429]
        assert reply.json()["error"]["type"] == "rate_limit_error" and reply.json()["error"]["code"] == 429
        assert 1 <= int(reply.headers["retry-after"]) <= 60
        text = (await second.client.get("/metrics")).text
        assert metric(text, "bud_gateway_rate_limited_total", limit="rpm") == 1


async def test_over_tpm_and_over_the_monthly_quota(runtimes, keyed, db_pool):
    project, capped = await new_project(db_pool), await new_project(db_pool, quota=30)
    await keyed.set_routes({
        "alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])]),
        "beta": (capped, [Backend(endpoint_id="ep-b", replicas=[runtimes.beta.url])]),
    })  # fmt: skip
    tpm_key, _ = await new_key(db_pool, project, tpm=20)
    quota_key, _ = await new_key(db_pool, capped)
    await asyncio.sleep(1.0)  # the quota is read with the keys
    while time.time() % 60 > 55:
        await asyncio.sleep(0.5)
    first = await keyed.client.post("/v1/chat/completions", json=chat("alpha", 25), headers=bearer(tpm_key))
    assert first.status_code == 200 and first.json()["usage"]["completion_tokens"] == 25
    await asyncio.sleep(0.3)  # tokens are counted when the answer completes (sent to Redis in the background)
    over = await keyed.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(tpm_key))
    assert over.status_code == 429 and over.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(over.headers["retry-after"]) <= 60

    # A stream without include_usage: the gateway counts its tokens all the same and the client sees no usage.
    async with keyed.client.stream("POST", "/v1/chat/completions", json=chat("beta", 40, stream=True),
                                   headers=bearer(quota_key)) as stream:  # fmt: skip
        text = "".join([chunk async for chunk in stream.aiter_text()])
    events = parse_sse(text)
    assert events[-1] == DONE and all("usage" not in e or e["usage"] is None for e in events[:-1])
    assert len(events) == 42  # role, 40 tokens, [DONE]
    await asyncio.sleep(0.3)
    refused = await keyed.client.post("/v1/chat/completions", json=chat("beta"), headers=bearer(quota_key))
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "insufficient_quota"
    now = datetime.now(UTC)
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    assert abs(int(refused.headers["retry-after"]) - (next_month - now).total_seconds()) < 5

    await db_pool.execute("UPDATE projects SET monthly_token_quota = NULL, updated_at = now() WHERE id = $1",
                          uuid.UUID(capped))  # fmt: skip
    await asyncio.sleep(1.0)  # a lifted quota is in force within a second
    assert (await keyed.client.post("/v1/chat/completions", json=chat("beta"), headers=bearer(quota_key))).status_code == 200


async def test_usage_rows_hold_what_the_clients_received(runtimes, keyed, db_pool):
    project = await new_project(db_pool)
    await keyed.set_routes({"alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])])})
    key, key_id = await new_key(db_pool, project, rpm=1000, tpm=100_000)
    await asyncio.sleep(0.6)
    received = []
    plain = await keyed.client.post("/v1/chat/completions", json=chat("alpha", 7), headers=bearer(key))
    received.append(plain.json()["usage"])
    completion = await keyed.client.post("/v1/completions", json={"model": "alpha", "prompt": "a b c d", "max_tokens": 3},
                                         headers=bearer(key))  # fmt: skip
    received.append(completion.json()["usage"])
    asked = await keyed.client.post("/v1/chat/completions", headers=bearer(key),
                                    json=chat("alpha", 5, stream=True, stream_options={"include_usage": True}))
    streamed = parse_sse(asked.text)
    assert streamed[-1] == DONE and streamed[-2]["usage"]["completion_tokens"] == 5  # asked for: passed through
    received.append(streamed[-2]["usage"])
    not_asked = await keyed.client.post("/v1/chat/completions", json=chat("alpha", 6, stream=True), headers=bearer(key))
    assert all("usage" not in e for e in parse_sse(not_asked.text)[:-1])
    received.append({"prompt_tokens": received[0]["prompt_tokens"], "completion_tokens": 6})  # same prompt as the first
    missing = await keyed.client.post("/v1/chat/completions", json=chat("nope"), headers=bearer(key))
    assert missing.status_code == 404

    rows = await usage_rows(db_pool, key_id, 5)
    assert len(rows) == 5
    served = [r for r in rows if r["status"] == 200]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in served] == [
        (u["prompt_tokens"], u["completion_tokens"]) for u in received]
    assert all(r["backend_kind"] == "endpoint" and r["backend_id"] == "ep-a" and r["route"] == "alpha"
               and str(r["project_id"]) == project and r["latency_ms"] > 0 for r in served)  # fmt: skip
    assert all(r["ttft_ms"] is not None and r["ttft_ms"] <= r["latency_ms"] for r in served)
    (lost,) = [r for r in rows if r["status"] == 404]
    assert lost["route"] == "nope" and lost["backend_kind"] == "none" and lost["prompt_tokens"] == 0
    text = (await keyed.client.get("/metrics")).text
    labels = {"project": project, "route": "alpha", "backend": "ep-a"}
    assert metric(text, "bud_gateway_completion_tokens_total", **labels) == 7 + 3 + 5 + 6
    assert metric(text, "bud_gateway_prompt_tokens_total", **labels) == sum(u["prompt_tokens"] for u in received)
    assert metric(text, "bud_gateway_project_requests_total", status="200", **labels) == 4

    deadline = time.monotonic() + 5  # last_used_at is written in the background, not on the request path
    while await db_pool.fetchval("SELECT last_used_at FROM inference_keys WHERE id = $1", uuid.UUID(key_id)) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)

    await keyed.client.post("/v1/chat/completions", json=chat("alpha"))  # no key: a row under no project
    deadline = time.monotonic() + 5
    while not await db_pool.fetchval("SELECT count(*) FROM usage_events WHERE status = 401 AND key_id IS NULL "
                                     "AND project_id = '00000000-0000-0000-0000-000000000000'"):  # fmt: skip
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_redis_down_fails_open_and_counts_it(runtimes, db_pool, postgres_url):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with keyed_gateway(postgres_url, dead_redis) as gateway:
        project = await new_project(db_pool)
        await gateway.set_routes({"alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])])})
        key, _ = await new_key(db_pool, project, rpm=1)
        await asyncio.sleep(1.0)
        for _ in range(3):  # rpm 1, but the limit store is down: admitted, never a 500
            reply = await gateway.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))
            assert reply.status_code == 200
        text = (await gateway.client.get("/metrics")).text
        assert metric(text, "bud_gateway_limit_store_errors_total") >= 1


async def test_usage_rows_wait_out_a_database_outage(runtimes, redis_url):
    with server_state_dir("bud-gw-outage-") as state:
        port, password = free_port(), secrets.token_urlsafe(24)
        database = services.postgres_server(state, port, password, fast_unsafe=True)
        await asyncio.to_thread(lambda: database.start().wait_healthy())
        try:
            await asyncio.to_thread(services.ensure_database, port, password)
            url = f"postgresql://bud:{password}@127.0.0.1:{port}/bud"
            pool = await create_pool(url)
            await apply_migrations(pool)
            project = await new_project(pool)
            key, key_id = await new_key(pool, project)
            await pool.close()
            async with keyed_gateway(url, redis_url) as gateway:
                await gateway.set_routes(
                    {"alpha": (project, [Backend(endpoint_id="ep-a", replicas=[runtimes.alpha_1.url])])})
                assert (await gateway.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))
                        ).status_code == 200  # fmt: skip
                await asyncio.to_thread(database.stop)
                for _ in range(5):  # the last key set stays in force while the database is down
                    reply = await gateway.client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))
                    assert reply.status_code == 200
                await asyncio.sleep(1.5)  # flushes fail meanwhile; the rows stay buffered
                assert gateway.app.usage.pending >= 5
                await asyncio.to_thread(lambda: database.start().wait_healthy())
                pool = await create_pool(url)
                try:
                    rows = await usage_rows(pool, key_id, 6, timeout_s=15)
                finally:
                    await pool.close()
                assert len(rows) == 6 and all(r["status"] == 200 for r in rows)
        finally:
            await asyncio.to_thread(database.stop)


async def test_sigterm_writes_the_buffered_rows_before_exit(runtimes, db_pool, settings, tmp_path):
    project = await new_project(db_pool)
    key, key_id = await new_key(db_pool, project)
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(
        '{"routes": {"alpha": {"project_id": "%s", "backends": [{"endpoint_id": "ep-a", "replicas": ["%s"]}]}}}'
        % (project, runtimes.alpha_1.url)
    )
    port = free_port()
    process = ManagedProcess(
        "gateway-flush",
        [sys.executable, "-m", "gateway", "--port", str(port), "--routes-file", str(routes_file),
         "--usage-flush-interval-s", "3600"],
        tmp_path / "gateway.log",
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        env={**settings.as_environment()},
    )  # fmt: skip
    await asyncio.to_thread(process.start().wait_healthy)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(7):
                reply = await client.post("/v1/chat/completions", json=chat("alpha"), headers=bearer(key))
                assert reply.status_code == 200, reply.text
        assert await db_pool.fetchval("SELECT count(*) FROM usage_events WHERE key_id = $1", uuid.UUID(key_id)) == 0
    finally:
        await asyncio.to_thread(process.stop)  # SIGTERM: uvicorn's lifespan shutdown flushes
    rows = await usage_rows(db_pool, key_id, 7, timeout_s=1)
    assert len(rows) == 7, process.log_tail(50)


async def test_the_usage_buffer_is_bounded_while_the_database_is_unreachable():
    dropped = []
    recorder = UsageRecorder(f"postgresql://bud:x@127.0.0.1:{free_port()}/bud", flush_interval_s=0.05, max_rows=5,
                             on_dropped=dropped.append)  # fmt: skip
    await recorder.start()
    try:
        for index in range(8):
            recorder.record(None, None, f"r{index}", "none", "", 0, 0, 401, None, 1.0)
        await asyncio.sleep(0.3)  # failed flushes meanwhile keep the newest rows
        assert recorder.pending == 5 and recorder.dropped == 3 and sum(dropped) == 3
        assert [row[4] for row in recorder._rows] == ["r3", "r4", "r5", "r6", "r7"]
    finally:
        await recorder.stop(timeout_s=0.5)
