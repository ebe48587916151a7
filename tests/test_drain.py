"""Drain before a replica stops: it leaves the route, the gateway stops sending it requests, its in-flight requests
(streams included) finish, bounded by the drain timeout, and only then is the process stopped. Counted through the
real gateway: no stream fails or is cut short while an endpoint scales 3 -> 1 under load, nor when a routed endpoint
with long streams in flight is deleted; a drain timeout that trips stops the replica anyway and the result says so."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.releases import ReleaseActivities
from clusters.drain import in_flight
from control.payloads.deployments import DeploymentSpec, ReleaseRequest
from core.processes import free_port
from tests.deploy_helpers import (
    available_model,
    inference_key_headers,
    local_cluster_id,
    running_endpoint,
    runtime_processes,
    wait_endpoint,
    wait_for_route,
)
from tests.helpers import unique
from tests.model_files import write_tiny_llama
from workflows.ids import scale_endpoint_workflow_id

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
async def model(api, control_worker, optimizer_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("drain") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


# ---- helpers ----------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)


async def stream_once(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, tally: Tally) -> None:
    """One streaming chat completion; it counts as failed unless it answers 200 and ends with `data: [DONE]`."""
    tally.sent += 1
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": True}
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as reply:
            lines = [line async for line in reply.aiter_lines() if line]
        if reply.status_code != 200:
            tally.failures.append(f"status {reply.status_code}: {' '.join(lines)[:200]}")
        elif not lines or lines[-1] != "data: [DONE]":
            tally.failures.append(f"truncated after {len(lines)} lines")
        else:
            tally.ok += 1
    except httpx.HTTPError as error:
        tally.failures.append(f"{type(error).__name__}: {error}")


async def stream_loop(url: str, model: str, headers: dict, stop: asyncio.Event, tally: Tally, max_tokens: int) -> None:
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        while not stop.is_set():
            await stream_once(client, url, model, max_tokens, tally)


def release_of(endpoint: dict) -> str:
    return f"ep-{endpoint['id'][:8]}"


def replica_urls(state_dir: Path, endpoint: dict) -> list[str]:
    directory = state_dir / "replicas" / release_of(endpoint)
    records = [json.loads(path.read_text()) for path in sorted(directory.glob("replica-*.json"))]
    return [f"http://127.0.0.1:{record['port']}" for record in records]


def tpot_ms(state_dir: Path, endpoint: dict) -> float:
    spec = json.loads((state_dir / "replicas" / release_of(endpoint) / "spec.json").read_text())
    return spec["timing"]["tpot_ms"]


async def slow_down(state_dir: Path, endpoint: dict, seconds_per_token: float) -> None:
    """Make every replica take about `seconds_per_token` per output token (the runtime's slowdown switch)."""
    factor = max(1.0, seconds_per_token * 1000 / max(tpot_ms(state_dir, endpoint), 0.01))
    async with httpx.AsyncClient(timeout=10) as client:
        for url in replica_urls(state_dir, endpoint):
            assert (await client.post(f"{url}/sim/faults", json={"slowdown": factor})).status_code == 200


async def scale(api, endpoint: dict, replicas: int, **extra) -> dict:
    response = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": replicas, **extra})
    assert response.status_code == 202, response.text
    done = await wait_endpoint(api, endpoint["id"], lambda e: e["step"] == "running", timeout=120)
    assert (done["deployment"]["replicas"], done["deployment"]["ready_replicas"]) == (replicas, replicas), done
    return done


async def activity_results(temporal_client, workflow_id: str) -> list:
    handle = temporal_client.get_workflow_handle(workflow_id)
    await handle.result()
    results = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_completed_event_attributes"):
            payloads = event.activity_task_completed_event_attributes.result.payloads
            results += [json.loads(p.data) for p in payloads if p.data]
    return results


# ---- the pieces -------------------------------------------------------------------------------------------------


def test_in_flight_is_running_plus_waiting_over_every_label_set() -> None:
    text = ("# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n"
            'vllm:num_requests_running{model_name="a"} 2.0\nvllm:num_requests_running{model_name="b"} 1.0\n'
            'vllm:num_requests_waiting{model_name="a"} 3.0\nvllm:num_requests_swapped{model_name="a"} 9.0\n'
            'vllm:num_requests_running_total{model_name="a"} 7.0\n')
    assert in_flight(text) == 6
    assert in_flight("") == 0


async def test_sigterm_finishes_the_streams_in_flight_and_refuses_new_connections() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "runtime", "serve", "m", "--port", str(port),
                                "--sim-tpot-ms", "40", "--sim-drain-timeout-s", "20"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await client.get(f"{url}/health")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream": True}
            lines, refused = [], None
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
                async for line in reply.aiter_lines():
                    if not line:
                        continue
                    lines.append(line)
                    if len(lines) == 3:
                        process.send_signal(signal.SIGTERM)
                        await asyncio.sleep(0.3)
                        try:
                            async with httpx.AsyncClient(timeout=2) as other:
                                await other.get(f"{url}/health")
                            refused = False
                        except httpx.ConnectError:
                            refused = True
        assert refused is True, "a draining runtime still accepted a new connection"
        assert lines[-1] == "data: [DONE]" and len(lines) >= 50, lines[-3:]
        process.wait(15)  # and then it exits on its own
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_drain_timeout_out_of_range_is_refused_naming_the_field(api, anon_api, model, cluster_id) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    url = f"/api/endpoints/{endpoint['id']}/scale"
    for bad in (0, 601, "30", -5):
        response = await api.post(url, json={"replicas": 1, "drain_timeout_s": bad})
        assert response.status_code == 422, response.text
        assert "drain_timeout_s" in response.text
    stranger = (await api.post("/api/projects", json={"name": unique("tenant")})).json()["token"]
    theirs = await anon_api.post(url, json={"replicas": 0, "drain_timeout_s": 5},
                                 headers={"Authorization": f"Bearer {stranger}"})
    assert theirs.status_code == 404
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code in (200, 202)


# ---- counted through the gateway --------------------------------------------------------------------------------


async def test_scaling_three_to_one_under_streaming_load_loses_no_stream(
    api, control_worker, gateway, model, cluster_id, state_dir, temporal_client
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    name, headers = endpoint["name"], inference_key_headers(state_dir)
    await scale(api, endpoint, 3)
    await slow_down(state_dir, endpoint, 0.02)  # 20 ms a token: a 40-token stream ~0.8 s, a 200-token one ~4 s
    await wait_for_route(gateway, name, headers)

    stop, steady, long = asyncio.Event(), Tally(), Tally()
    loops = [asyncio.create_task(stream_loop(gateway, name, headers, stop, steady, 40)) for _ in range(6)]
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        longs = [asyncio.create_task(stream_once(client, gateway, name, 200, long)) for _ in range(6)]
        await asyncio.sleep(1.0)  # every replica now serves long streams and steady ones
        started = time.monotonic()
        await scale(api, endpoint, 1, drain_timeout_s=60)
        took = time.monotonic() - started
        await asyncio.gather(*longs)
    await asyncio.sleep(1.0)  # the one replica left goes on serving
    stop.set()
    await asyncio.gather(*loops)

    print(f"scale 3->1 under load: {steady.sent} steady + {long.sent} long streams, "
          f"{len(steady.failures) + len(long.failures)} failed, scale took {took:.1f}s")
    assert steady.failures == [] and long.failures == []
    assert long.ok == 6 and steady.ok >= 6
    assert len(runtime_processes(name)) == 1
    notes = [n for r in await activity_results(temporal_client, scale_endpoint_workflow_id(endpoint["id"]))
             if isinstance(r, dict) for n in r.get("drain", [])]
    assert len(notes) == 2 and all("drained in" in note for note in notes), notes
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code in (200, 202)


async def test_deleting_a_routed_endpoint_lets_its_long_streams_finish(
    api, control_worker, gateway, model, cluster_id, state_dir
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    name, headers = endpoint["name"], inference_key_headers(state_dir)
    await slow_down(state_dir, endpoint, 0.02)
    await wait_for_route(gateway, name, headers)
    long = Tally()
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        streams = [asyncio.create_task(stream_once(client, gateway, name, 150, long)) for _ in range(3)]
        await asyncio.sleep(0.8)
        assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code in (200, 202)
        await asyncio.gather(*streams)
    assert long.failures == [] and long.ok == 3
    gone = await wait_endpoint(api, endpoint["id"], lambda e: e["status"] == "DELETED", timeout=60)
    assert gone["status"] in ("DELETED", "GONE")
    async with asyncio.timeout(15):
        while runtime_processes(name):
            await asyncio.sleep(0.2)


async def test_a_drain_timeout_that_trips_stops_the_replica_anyway_and_says_so(
    api, control_worker, model, cluster_id, state_dir, temporal_client
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    await scale(api, endpoint, 2)
    await slow_down(state_dir, endpoint, 0.05)
    leaving = replica_urls(state_dir, endpoint)[1]
    cut = Tally()
    async with httpx.AsyncClient(timeout=120) as client:  # straight at the replica that is going to stop
        stream = asyncio.create_task(stream_once(client, f"{leaving}/v1", endpoint["name"], 1000, cut))
        await asyncio.sleep(0.5)
        await scale(api, endpoint, 1, drain_timeout_s=1)
        await stream
    assert len(cut.failures) == 1  # the timeout tripped: this stream was cut, as promised
    notes = [n for r in await activity_results(temporal_client, scale_endpoint_workflow_id(endpoint["id"]))
             if isinstance(r, dict) for n in r.get("drain", [])]
    assert any("drain timeout 1s tripped with 1 request(s) in flight; stopped anyway" in n for n in notes), notes
    assert len(runtime_processes(endpoint["name"])) == 1
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code in (200, 202)


async def test_running_the_drain_twice_is_harmless(
    api, control_worker, model, cluster_id, state_dir, settings, db_pool, worker_clients
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    await scale(api, endpoint, 2)
    running = json.loads((state_dir / "replicas" / release_of(endpoint) / "spec.json").read_text())
    request = ReleaseRequest(cluster_id=cluster_id, spec=DeploymentSpec.model_validate({**running, "replicas": 1}))
    releases = ReleaseActivities(db_pool, worker_clients.backends, settings.drain_timeout_s)
    first = await ActivityEnvironment().run(releases.apply_release, request)
    second = await ActivityEnvironment().run(releases.apply_release, request)
    assert len(first.drain) == 1 and "drained in" in first.drain[0], first.drain
    assert second.drain == [] and second.desired_replicas == 1
    routed = await db_pool.fetch("SELECT url, ready FROM endpoint_replicas WHERE endpoint_id = $1", endpoint["id"])
    assert sum(row["ready"] for row in routed) == 1  # the stopped one left the route and stays out
    assert len(runtime_processes(endpoint["name"])) == 1
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code in (200, 202)
