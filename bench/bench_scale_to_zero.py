"""Scale to zero: how long the first request to an endpoint at zero replicas waits, and what noting demand costs.

1. An endpoint with `min_replicas: 0` (idle period 3 s, autoscaler sync 1 s) sleeps; one request through the real
   gateway wakes it. Measured: request sent -> 200, over several sleep/wake cycles (local backend, instant model load;
   target p50 < sync period + 5 s). Every request must succeed.
2. `DemandRecorder.note` on the request path: nanoseconds per call (target < 1 us).

    .venv/bin/python -m bench.bench_scale_to_zero [--cycles 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.harness import bench_stack, register_model
from core.processes import free_port
from devstack import services
from gateway.demand import DemandRecorder
from tests.model_files import write_tiny_llama

CONFIG = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 4}
SYNC_S, IDLE_S = 1.0, 3


async def wait(api, path: str, done, timeout: float = 300) -> dict:
    async with asyncio.timeout(timeout):
        while not done(body := (await api.get(path)).json()):
            await asyncio.sleep(0.05)
    return body


def note_cost_ns(calls: int = 1_000_000) -> float:
    recorder = DemandRecorder("postgresql://unused")  # enabled, never started: note() alone
    ids = [str(uuid.uuid4()) for _ in range(100)]
    started = time.perf_counter_ns()
    for i in range(calls):
        recorder.note(ids[i % 100])
    return (time.perf_counter_ns() - started) / calls


async def main(cycles: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_llama(Path(tmp) / "model")
        async with bench_stack(autoscale_sync_s=SYNC_S, scale_to_zero_min_s=1) as stack:
            api, settings = stack.api, stack.settings
            port = free_port()
            gateway = services.python_service(
                "gateway", ["gateway", "--port", str(port), "--route-source",
                            "gateway.postgres_source:from_environment", "--poll-interval-s", "0.2"],
                stack.state, {"BUD_DATABASE_URL": settings.database_url, "BUD_REDIS_URL": settings.redis_url},
                health_url=f"http://127.0.0.1:{port}/healthz").start().wait_healthy()
            try:
                model = await register_model(stack, model_dir)
                cluster = await wait(api, "/api/clusters", lambda cs: cs and cs[0]["status"] == "READY")
                project_id = (await api.get("/api/projects")).json()[0]["id"]
                endpoint = (await api.post("/api/endpoints", json={
                    "name": "sleepy", "project_id": project_id, "model_id": model["id"],
                    "cluster_id": cluster[0]["id"]})).json()
                path = f"/api/endpoints/{endpoint['id']}"
                await api.put(f"{path}/config", json={"optimization_method": "MANUAL", "config": CONFIG,
                                                      "workload": {"input_tokens": 128, "output_tokens": 32}})
                await wait(api, path, lambda e: e["optimization_status"] != "RUNNING")
                await api.post(f"{path}/deploy")
                await wait(api, path, lambda e: e["status"] == "RUNNING")
                response = await api.put(f"{path}/autoscaling", json={
                    "min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": IDLE_S,
                    "metrics": [{"type": "External", "external": {"metric": {"name": "inference_queue_depth"},
                                                                  "target": {"type": "Value", "value": 4}}}]})
                assert response.status_code == 202, response.text

                key = (stack.state / "inference-key").read_text().strip()
                body = {"model": "sleepy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
                cold, failures = [], 0
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=120,
                                             headers={"Authorization": f"Bearer {key}"}) as client:
                    for _ in range(cycles):
                        await wait(api, path, lambda e: e["deployment"]["replicas"] == 0 and e["step"] == "running")
                        await asyncio.sleep(SYNC_S * 2)  # settled at zero
                        started = time.perf_counter()
                        status = (await client.post("/chat/completions", json=body)).status_code
                        cold.append(time.perf_counter() - started)
                        failures += status != 200
            finally:
                gateway.stop()

    print(f"\nFirst request at zero replicas -> answer, {cycles} cycles (sync {SYNC_S:g} s, instant model load):")
    print(f"  p50 {statistics.median(cold):.2f} s   min {min(cold):.2f} s   max {max(cold):.2f} s   "
          f"failed requests {failures}")
    print(f"DemandRecorder.note: {note_cost_ns():.0f} ns per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=5)
    asyncio.run(main(parser.parse_args().cycles))
