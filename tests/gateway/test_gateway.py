"""The gateway in front of real simulated runtimes: routing, weights, balancing, streaming, failures, reloads."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.processes import ManagedProcess, free_port, http_ok
from gateway.routes import Backend
from runtime.sse import DONE, parse_sse


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def runtime_metric(process: ManagedProcess, name: str) -> float:
    async with httpx.AsyncClient() as client:
        return metric((await client.get(f"{process.url}/metrics")).text, name)


def chat(model: str, max_tokens: int = 3, **extra) -> dict:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_routes_by_model_name(runtimes, gateway):
    await gateway.set_routes({
        "alpha": [Backend(endpoint_id="ep-alpha", replicas=[runtimes.alpha_1.url, runtimes.alpha_2.url])],
        "beta": [Backend(endpoint_id="ep-beta", replicas=[runtimes.beta.url])],
    })  # fmt: skip
    models = (await gateway.client.get("/v1/models")).json()
    assert sorted(m["id"] for m in models["data"]) == ["alpha", "beta"]

    beta_tokens = await runtime_metric(runtimes.beta, "vllm:generation_tokens_total")
    beta = await gateway.client.post("/v1/chat/completions", json=chat("beta", max_tokens=4))
    assert beta.status_code == 200 and beta.headers["x-bud-endpoint"] == "ep-beta"
    assert beta.json()["model"] == "beta" and beta.json()["usage"]["completion_tokens"] == 4
    assert await runtime_metric(runtimes.beta, "vllm:generation_tokens_total") == beta_tokens + 4

    alpha = await gateway.client.post("/v1/completions", json={"model": "alpha", "prompt": "x", "max_tokens": 2})
    assert alpha.status_code == 200 and alpha.headers["x-bud-endpoint"] == "ep-alpha"
    assert alpha.json()["object"] == "text_completion"


async def test_weights_hold_over_many_requests(runtimes, gateway):
    # One public name, two endpoints whose runtimes serve different names: the gateway rewrites "model".
    await gateway.set_routes({"public": [
        Backend(endpoint_id="blue", weight=90, replicas=[runtimes.alpha_1.url], served_model_name="alpha"),
        Backend(endpoint_id="green", weight=10, replicas=[runtimes.beta.url], served_model_name="beta"),
    ]})  # fmt: skip
    semaphore = asyncio.Semaphore(20)

    async def one() -> tuple[str, str]:
        async with semaphore:
            response = await gateway.client.post("/v1/chat/completions", json=chat("public", max_tokens=1))
            assert response.status_code == 200
            return response.headers["x-bud-endpoint"], response.json()["model"]

    results = await asyncio.gather(*(one() for _ in range(200)))
    by_endpoint = Counter(endpoint for endpoint, _ in results)
    assert abs(by_endpoint["blue"] / 200 - 0.9) <= 0.03, by_endpoint
    assert by_endpoint["blue"] + by_endpoint["green"] == 200
    assert all(model == {"blue": "alpha", "green": "beta"}[endpoint] for endpoint, model in results)


async def test_least_outstanding_sends_new_requests_to_the_idle_replica(runtimes, gateway):
    replicas = [runtimes.alpha_1, runtimes.alpha_2]
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep", replicas=[r.url for r in replicas])]})
    first_token = asyncio.Event()

    async def long_stream() -> None:  # ~4 s of tokens, read to the end (leaving early would hang up)
        async with gateway.client.stream("POST", "/v1/chat/completions", json=chat("alpha", 800, stream=True)) as s:
            async for line in s.aiter_lines():
                if line.startswith("data: {"):
                    first_token.set()

    streaming = asyncio.create_task(long_stream())
    try:
        await asyncio.wait_for(first_token.wait(), 10)
        running = [await runtime_metric(r, "vllm:num_requests_running") for r in replicas]
        assert sorted(running) == [0, 1]
        busy, idle = (replicas[0], replicas[1]) if running[0] == 1 else (replicas[1], replicas[0])
        before = {r.url: await runtime_metric(r, "vllm:request_success_total") for r in replicas}
        for _ in range(4):
            response = await gateway.client.post("/v1/chat/completions", json=chat("alpha", max_tokens=2))
            assert response.status_code == 200
        assert await runtime_metric(idle, "vllm:request_success_total") == before[idle.url] + 4
        assert await runtime_metric(busy, "vllm:request_success_total") == before[busy.url]
        assert not streaming.done()  # the busy replica was busy throughout
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)


async def test_streams_pass_through_unbuffered_and_unchanged(runtimes, gateway):
    await gateway.set_routes({"beta": [Backend(endpoint_id="ep-beta", replicas=[runtimes.beta.url])]})
    async with httpx.AsyncClient() as direct:
        await direct.post(f"{runtimes.beta.url}/sim/faults", json={"slowdown": 16})  # 80 ms per token
        try:
            request = chat("beta", max_tokens=6, stream=True, stream_options={"include_usage": True})
            arrivals, body = [], []
            started = time.perf_counter()
            async with gateway.client.stream("POST", "/v1/chat/completions", json=request) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for chunk in response.aiter_text():
                    arrivals.append(time.perf_counter() - started)
                    body.append(chunk)
            reference = await direct.post(f"{runtimes.beta.url}/v1/chat/completions", json=request)
        finally:
            await direct.post(f"{runtimes.beta.url}/sim/faults", json={"slowdown": 1})
    assert arrivals[-1] - arrivals[0] >= 0.3  # chunks arrived as the tokens were produced, not all at the end
    via_gateway, direct_events = parse_sse("".join(body)), parse_sse(reference.text)
    assert via_gateway[-1] == DONE and len(via_gateway) == len(direct_events) == 9  # role, 6 tokens, usage, DONE

    def strip_ids(events):
        return [{k: v for k, v in e.items() if k not in ("id", "created")} for e in events[:-1]]

    assert strip_ids(via_gateway) == strip_ids(direct_events)


async def test_unknown_model_bad_bodies_and_no_ready_replica(runtimes, gateway):
    await gateway.set_routes({"empty": [Backend(endpoint_id="ep-empty", replicas=[])]})
    unknown = await gateway.client.post("/v1/chat/completions", json=chat("nope"))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"message": "The model `nope` does not exist.", "type": "NotFoundError",
                                       "param": "model", "code": 404}  # fmt: skip
    assert (await gateway.client.get("/v1/models/nope")).status_code == 404
    assert (await gateway.client.get("/v1/models/empty")).json()["id"] == "empty"
    no_replica = await gateway.client.post("/v1/completions", json={"model": "empty", "prompt": "x"})
    assert no_replica.status_code == 503 and no_replica.json()["error"]["type"] == "ServiceUnavailableError"
    not_json = await gateway.client.post("/v1/completions", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    no_model = await gateway.client.post("/v1/completions", json={"prompt": "x"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert (await gateway.client.get("/nowhere")).status_code == 404


async def test_failover_when_a_replica_dies(runtimes, gateway):
    victim = await asyncio.to_thread(runtimes.start, "--sim-ttft-ms", "5", "--sim-tpot-ms", "5")
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep", replicas=[victim.url, runtimes.alpha_1.url])]})
    for _ in range(4):  # both replicas serve, so the gateway holds a pooled connection to the victim
        assert (await gateway.client.post("/v1/chat/completions", json=chat("alpha"))).status_code == 200
    victim.kill()

    statuses = []
    for index in range(10):
        request = chat("alpha", stream=index % 2 == 0)
        response = await gateway.client.post("/v1/chat/completions", json=request)
        statuses.append(response.status_code)
        if request["stream"]:
            assert parse_sse(response.text)[-1] == DONE
    assert statuses == [200] * 10  # every request was retried onto the live replica
    text = (await gateway.client.get("/metrics")).text
    refusals = metric(text, "bud_gateway_upstream_errors_total", endpoint="ep", kind="connect")
    assert 1 <= refusals <= 2  # marked down after refusing, not tried on every request
    assert metric(text, "bud_gateway_requests_total", model="alpha", endpoint="ep", status="200") == 14

    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep", replicas=[victim.url])]})
    only_dead = await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
    assert only_dead.status_code == 503


async def test_client_hanging_up_mid_stream_frees_the_runtime(runtimes, gateway):
    await gateway.set_routes({"beta": [Backend(endpoint_id="ep-beta", replicas=[runtimes.beta.url])]})
    async with gateway.client.stream(
        "POST", "/v1/completions", json={"model": "beta", "prompt": "x", "max_tokens": 2000, "stream": True}
    ) as s:
        async for line in s.aiter_lines():
            if line.startswith("data: {"):
                break
    deadline = time.monotonic() + 5
    while await runtime_metric(runtimes.beta, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "the runtime kept generating for a client that left"
        await asyncio.sleep(0.05)
    text = (await gateway.client.get("/metrics")).text
    assert metric(text, "bud_gateway_requests_in_flight", model="beta") == 0
    assert metric(text, "bud_gateway_requests_total", model="beta", status="aborted") == 1


async def test_metrics_count_requests_and_latency(runtimes, gateway):
    await gateway.set_routes({"alpha": [Backend(endpoint_id="ep-alpha", replicas=[runtimes.alpha_1.url])]})
    for _ in range(3):
        await gateway.client.post("/v1/chat/completions", json=chat("alpha"))
    await gateway.client.post("/v1/chat/completions", json=chat("missing"))
    text = (await gateway.client.get("/metrics")).text
    assert metric(text, "bud_gateway_requests_total", model="alpha", endpoint="ep-alpha", status="200") == 3
    assert metric(text, "bud_gateway_requests_total", model="_unknown", status="404") == 1
    assert metric(text, "bud_gateway_upstream_latency_seconds_count", model="alpha", endpoint="ep-alpha") == 3
    assert metric(text, "bud_gateway_request_duration_seconds_count", model="alpha") == 3
    assert metric(text, "bud_gateway_routes") == 1
    health = (await gateway.client.get("/healthz")).json()
    assert health == {"status": "ok", "routes": 1}


def write_routes(path, routes: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"routes": routes}))
    temporary.replace(path)


async def test_gateway_process_reloads_its_routes_file(runtimes, tmp_path):
    routes_file = tmp_path / "routes.json"
    alpha = {"alpha": [{"endpoint_id": "ep-alpha", "replicas": [runtimes.alpha_1.url]}]}
    write_routes(routes_file, alpha)
    port = free_port()
    process = ManagedProcess(
        "gateway",
        [sys.executable, "-m", "gateway", "--port", str(port), "--routes-file", str(routes_file),
         "--poll-interval-s", "0.2", "--auth", "none"],
        tmp_path / "gateway.log",
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
    )  # fmt: skip
    await asyncio.to_thread(process.start().wait_healthy)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.post("/v1/chat/completions", json=chat("alpha"))).status_code == 200
            assert (await client.post("/v1/chat/completions", json=chat("beta"))).status_code == 404

            write_routes(routes_file, {**alpha, "beta": [{"endpoint_id": "ep-beta", "replicas": [runtimes.beta.url]}]})
            deadline = time.monotonic() + 5
            while (await client.post("/v1/chat/completions", json=chat("beta"))).status_code != 200:
                assert time.monotonic() < deadline, "new route not picked up"
                await asyncio.sleep(0.1)

            routes_file.write_text("{ not json")  # a broken file keeps the last good table
            await asyncio.sleep(0.6)
            assert (await client.post("/v1/chat/completions", json=chat("beta"))).status_code == 200
            assert (await client.get("/healthz")).json()["routes"] == 2
    finally:
        process.stop()
    log = process.log_tail(100)
    assert "route source failed, keeping the last table" in log
    assert os.path.getsize(process.log_path) < 100_000  # no per-request logging
