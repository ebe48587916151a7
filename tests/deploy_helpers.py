"""Helpers for deployment tests: an AVAILABLE model, the local cluster, and waiting on endpoints."""

from __future__ import annotations

import asyncio

import httpx
import psutil

from tests.helpers import unique
from tests.registry_helpers import register_and_wait, upload


async def available_model(api, settings, tiny) -> dict:
    prefix = await upload(settings, tiny.path)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count,
                                    context_length=tiny.spec.max_position_embeddings)
    assert model["status"] == "AVAILABLE", model
    return model


async def local_cluster_id(api) -> str:
    async with asyncio.timeout(60):
        while True:
            local = next(c for c in (await api.get("/api/clusters")).json() if c["name"] == "local")
            if local["status"] == "READY":
                return local["id"]
            await asyncio.sleep(0.2)


async def project_id(api) -> str:
    return (await api.get("/api/projects")).json()[0]["id"]


async def create_endpoint(api, model_id: str, cluster_id: str, name: str | None = None) -> dict:
    body = {"name": name or unique("ep"), "project_id": await project_id(api), "model_id": model_id,
            "cluster_id": cluster_id}
    response = await api.post("/api/endpoints", json=body)
    assert response.status_code == 201, response.text
    return response.json()


MANUAL_CONFIG = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 2048, "max_num_seqs": 8,
                 "gpu_memory_utilization": 0.9}


async def configure_manual(api, endpoint_id: str, replicas: int = 1, **config) -> dict:
    response = await api.put(f"/api/endpoints/{endpoint_id}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": {**MANUAL_CONFIG, **config}, "replicas": replicas})
    assert response.status_code == 202, response.text
    return await wait_endpoint(api, endpoint_id, lambda e: e["optimization_status"] != "RUNNING")


async def wait_endpoint(api, endpoint_id: str, done, timeout: float = 90) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            response = await api.get(f"/api/endpoints/{endpoint_id}")
            if response.status_code == 404:
                return {"status": "GONE"}
            endpoint = response.json()
            if done(endpoint):
                return endpoint
            await asyncio.sleep(0.2)


def settled(endpoint: dict) -> bool:
    return endpoint["status"] in ("RUNNING", "FAILED", "DELETED")


def runtime_processes(served_name: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if "runtime" in cmdline and served_name in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


async def finish_with_a_new_worker(api, start_worker, queue_settings, handle, endpoint_id: str,
                                   timeout: float = 180) -> dict:
    """After the first worker was killed: start another on the same queue, let the deploy finish, return the endpoint."""
    replacement = start_worker(queue_settings)
    try:
        await asyncio.wait_for(handle.result(), timeout=timeout)
    finally:
        replacement.stop()
    return await wait_endpoint(api, endpoint_id, settled)


async def running_endpoint(api, model_id: str, cluster_id: str) -> dict:
    """A new endpoint with the manual test config (1 replica), deployed and RUNNING."""
    endpoint = await create_endpoint(api, model_id, cluster_id)
    await configure_manual(api, endpoint["id"])
    response = await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert response.status_code == 202, response.text
    running = await wait_endpoint(api, endpoint["id"], settled)
    assert running["status"] == "RUNNING", running["error"]
    return running


async def wait_for_route(gateway: str, model_name: str, headers: dict | None = None) -> None:
    """Until the gateway (it polls its routes) serves `model_name` (`headers`: the inference key's)."""
    async with httpx.AsyncClient(timeout=10, headers=headers) as client, asyncio.timeout(15):
        while model_name not in [m["id"] for m in (await client.get(f"{gateway}/models")).json()["data"]]:
            await asyncio.sleep(0.1)


async def keep_busy(gateway: str, model_name: str, stop: asyncio.Event, max_tokens: int = 8, stream: bool = False,
                    headers: dict | None = None) -> int:
    """One client sending chat completions back to back through the gateway until `stop`; returns the successes."""
    done = 0
    body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": stream}
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        while not stop.is_set():
            async with client.stream("POST", f"{gateway}/chat/completions", json=body) as reply:
                async for _ in reply.aiter_bytes():
                    pass
                done += reply.status_code == 200
    return done


def inference_key_headers(state_dir) -> dict:
    """The default project's first inference key, which the API writes to <state_dir>/inference-key at startup."""
    return {"Authorization": f"Bearer {(state_dir / 'inference-key').read_text().strip()}"}
