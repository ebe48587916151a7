"""Orchestration overhead on the local backend with instant model load.

1. POST /deploy -> RUNNING, one at a time (p50/p95; target p50 < 3 s).
2. 50 deployments at once on one control worker: all RUNNING, no errors.

    .venv/bin/python -m bench.bench_deploy [--sequential 10] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import bench_stack, register_model
from tests.model_files import write_tiny_llama

CONFIG = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 4}


async def wait(api, path: str, done, timeout: float = 600) -> dict:
    async with asyncio.timeout(timeout):
        while not done(body := (await api.get(path)).json()):
            await asyncio.sleep(0.05)
    return body


async def prepared_endpoint(api, project_id: str, model_id: str, cluster_id: str, name: str) -> str:
    endpoint = (await api.post("/api/endpoints", json={"name": name, "project_id": project_id, "model_id": model_id,
                                                       "cluster_id": cluster_id})).json()
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "optimization_method": "MANUAL", "config": CONFIG, "workload": {"input_tokens": 128, "output_tokens": 32}})
    assert response.status_code == 202, response.text
    await wait(api, f"/api/endpoints/{endpoint['id']}", lambda e: e["optimization_status"] != "RUNNING")
    return endpoint["id"]


async def deploy_and_time(api, endpoint_id: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert response.status_code == 202, response.text
    final = await wait(api, f"/api/endpoints/{endpoint_id}", lambda e: e["status"] in ("RUNNING", "FAILED"))
    return time.perf_counter() - started, final["status"] if final["status"] == "RUNNING" else str(final["error"])


async def main(sequential: int, concurrent: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_llama(Path(tmp) / "model")
        async with bench_stack(local_gpus=max(sequential, concurrent) + 8) as stack:
            api, settings = stack.api, stack.settings
            model = await register_model(stack, model_dir)
            cluster = await wait(api, "/api/clusters", lambda cs: cs and cs[0]["status"] == "READY")
            cluster_id, project_id = cluster[0]["id"], (await api.get("/api/projects")).json()[0]["id"]

            sequential_ids = [await prepared_endpoint(api, project_id, model["id"], cluster_id, f"seq-{i}")
                              for i in range(sequential)]
            timings = []
            for endpoint_id in sequential_ids:
                seconds, outcome = await deploy_and_time(api, endpoint_id)
                assert outcome == "RUNNING", outcome
                timings.append(seconds)
                await api.delete(f"/api/endpoints/{endpoint_id}")
            await asyncio.sleep(2)

            concurrent_ids = await asyncio.gather(*(
                prepared_endpoint(api, project_id, model["id"], cluster_id, f"par-{i}") for i in range(concurrent)))
            started = time.perf_counter()
            results = await asyncio.gather(*(deploy_and_time(api, endpoint_id) for endpoint_id in concurrent_ids))
            wall = time.perf_counter() - started
            errors = [outcome for _, outcome in results if outcome != "RUNNING"]
            for endpoint_id in concurrent_ids:
                await api.delete(f"/api/endpoints/{endpoint_id}")
            await asyncio.sleep(5)

    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"\nPOST deploy -> RUNNING, local backend, instant load, {sequential} sequential deploys:")
    print(f"  p50 {statistics.median(timings):.2f} s   p95 {p95:.2f} s   min {ordered[0]:.2f} s   max {ordered[-1]:.2f} s")
    print(f"{concurrent} concurrent deployments on one control worker: {concurrent - len(errors)} RUNNING, "
          f"{len(errors)} errors, {wall:.1f} s wall")
    for error in errors[:5]:
        print("  error:", error)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.sequential, args.concurrent))
