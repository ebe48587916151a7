"""Changes under traffic, counted: a steady load of streaming clients through the real gateway while, in turn, an
endpoint scales 3 -> 1, takes a rolling config update, takes one whose new generation fails the warm-up gate (rolled
back), a route swaps blue-green, shifts gradually (passing its canary analysis) and shifts to a canary that fails
it (rolled back). Each scenario prints requests sent, failed, and the client-side TTFT p99 during the change; the
goal is zero failed requests in every one (local backend, simulated runtime).

    .venv/bin/python -m bench.bench_rollout [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import bench_stack, register_model
from core.processes import free_port
from devstack import services
from tests.model_files import write_tiny_llama

CONFIG = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 8}


@dataclass
class Load:
    sent: int = 0
    failed: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def p99(self) -> float:
        if len(self.ttft_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.ttft_ms, n=100)[98]


async def stream(client: httpx.AsyncClient, model: str, load: Load) -> None:
    load.sent += 1
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True}
    started, first, last = time.perf_counter(), None, ""
    try:
        async with client.stream("POST", "/chat/completions", json=body) as reply:
            async for line in reply.aiter_lines():
                if line:
                    first = first or time.perf_counter()
                    last = line
        if reply.status_code != 200 or last != "data: [DONE]":
            load.failed += 1
            load.reasons.append(f"status {reply.status_code}, last line {last[:80]!r}")
        else:
            load.ttft_ms.append((first - started) * 1000)
    except httpx.HTTPError as error:
        load.failed += 1
        load.reasons.append(f"{type(error).__name__}: {error}")


async def under_load(gateway: str, key: str, model: str, clients: int,
                     change: Callable[[], Awaitable[None]]) -> Load:
    """`clients` streaming back to back from a second before the change until a second after it is done."""
    load, stop = Load(), asyncio.Event()

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=f"{gateway}/v1", timeout=120,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            while not stop.is_set():
                await stream(client, model, load)

    loops = [asyncio.create_task(client_loop()) for _ in range(clients)]
    await asyncio.sleep(1.0)
    await change()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*loops)
    return load


async def wait(api, path: str, done, timeout: float = 600) -> dict:
    async with asyncio.timeout(timeout):
        while not done(body := (await api.get(path)).json()):
            await asyncio.sleep(0.1)
    return body


def rolled(endpoint: dict) -> bool:
    return (endpoint["status"] == "RUNNING" and endpoint["step"] == "running"
            and (endpoint["rollout"] or {}).get("status") not in (None, "PENDING", "RUNNING"))


async def main(clients: int) -> None:
    results: list[tuple[str, Load, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_llama(Path(tmp) / "model")
        async with bench_stack() as stack:
            api, settings = stack.api, stack.settings
            port = free_port()
            gateway_process = services.python_service(
                "gateway", ["gateway", "--port", str(port), "--route-source",
                            "gateway.postgres_source:from_environment", "--poll-interval-s", "0.2"],
                stack.state, {"BUD_DATABASE_URL": settings.database_url, "BUD_REDIS_URL": settings.redis_url},
                health_url=f"http://127.0.0.1:{port}/healthz").start().wait_healthy()
            gateway = f"http://127.0.0.1:{port}"
            try:
                model = await register_model(stack, model_dir)
                cluster = await wait(api, "/api/clusters", lambda cs: cs and cs[0]["status"] == "READY")
                project_id = (await api.get("/api/projects")).json()[0]["id"]
                key = (stack.state / "inference-key").read_text().strip()

                async def configure(path: str, replicas: int = 1, targets: dict | None = None, **config) -> None:
                    response = await api.put(f"{path}/config", json={
                        "optimization_method": "MANUAL", "config": {**CONFIG, **config}, "replicas": replicas,
                        "performance_targets": targets or {}, "workload": {"input_tokens": 128, "output_tokens": 32}})
                    assert response.status_code == 202, response.text
                    await wait(api, path, lambda e: e["optimization_status"] != "RUNNING")

                paths = {}
                for name in ("roll-a", "roll-b"):
                    endpoint = (await api.post("/api/endpoints", json={
                        "name": name, "project_id": project_id, "model_id": model["id"],
                        "cluster_id": cluster[0]["id"]})).json()
                    paths[name] = f"/api/endpoints/{endpoint['id']}"
                    await configure(paths[name])
                    await api.post(f"{paths[name]}/deploy")
                    await wait(api, paths[name], lambda e: e["status"] == "RUNNING")
                a, b = paths["roll-a"], paths["roll-b"]
                a_id, b_id = a.rsplit("/", 1)[1], b.rsplit("/", 1)[1]
                await api.post(f"{a}/scale", json={"replicas": 3})
                await wait(api, a, lambda e: e["step"] == "running" and e["deployment"]["ready_replicas"] == 3)

                async def scale_down() -> None:
                    assert (await api.post(f"{a}/scale", json={"replicas": 1})).status_code == 202
                    await wait(api, a, lambda e: e["step"] == "running" and e["deployment"]["replicas"] == 1)

                async def rolling_update(targets: dict | None = None, **config) -> Callable[[], Awaitable[None]]:
                    await configure(a, 1, targets, **config)

                    async def change() -> None:
                        response = await api.post(f"{a}/deploy")
                        assert response.status_code == 202, response.text
                        await wait(api, a, rolled)
                    return change

                async def shift(to: str, **body) -> Callable[[], Awaitable[None]]:
                    async def change() -> None:
                        response = await api.post("/api/routes/bench/shift", json={"to_endpoint_id": to, **body})
                        assert response.status_code == 202, response.text
                        await wait(api, "/api/routes/bench", lambda r: (r["shift"] or {}).get("status") != "RUNNING")
                    return change

                async def outcome(path: str, key_name: str) -> str:
                    body = (await api.get(path)).json()
                    return str((body.get(key_name) or {}).get("status"))

                load = await under_load(gateway, key, "roll-a", clients, scale_down)
                results.append(("scale 3 -> 1", load, "done"))
                load = await under_load(gateway, key, "roll-a", clients, await rolling_update(max_num_seqs=16))
                results.append(("rolling config update", load, await outcome(a, "rollout")))
                load = await under_load(gateway, key, "roll-a", clients,
                                        await rolling_update({"max_ttft_ms": 0.001}, max_num_seqs=4))
                results.append(("rolling update, warm-up fails", load, await outcome(a, "rollout")))

                route = await api.put("/api/routes/bench", json={"backends": [{"endpoint_id": a_id, "weight": 100}]})
                assert route.status_code in (200, 201), route.text
                load = await under_load(gateway, key, "bench", clients,
                                        await shift(b_id, strategy="blue-green", drain_s=2))
                results.append(("blue-green swap", load, await outcome("/api/routes/bench", "shift")))
                load = await under_load(gateway, key, "bench", clients,
                                        await shift(a_id, strategy="gradual", steps=[50, 100], step_interval_s=3,
                                                    drain_s=2))
                results.append(("gradual shift, passes", load, await outcome("/api/routes/bench", "shift")))
                load = await under_load(gateway, key, "bench", clients, await shift(
                    b_id, strategy="gradual", steps=[50, 100], step_interval_s=3, drain_s=2,
                    slo={"max_ttft_p99_ms": 0.001}))
                results.append(("gradual shift, rolls back", load, await outcome("/api/routes/bench", "shift")))
            finally:
                gateway_process.stop()

    print(f"\nChanges under {clients} streaming clients through the gateway (20 tokens each, local backend):")
    print(f"  {'scenario':32} {'outcome':12} {'sent':>6} {'failed':>7} {'TTFT p99 ms':>12}")
    for name, load, result in results:
        print(f"  {name:32} {result:12} {load.sent:6} {load.failed:7} {load.p99():12.1f}")
        for reason in load.reasons[:3]:
            print(f"      failed: {reason}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    asyncio.run(main(parser.parse_args().clients))
