"""Routes and traffic shifts through the API, the TrafficShift workflow and the real gateway: weighted A/B splits,
blue-green swaps, gradual rollouts judged by canary analysis (exact per-request timings from the gateway's usage
rows) that complete, roll back when the canary is slower, or fail for want of traffic; aborts; overlapping shifts."""

from __future__ import annotations

import asyncio
import collections
import os

import httpx
import pytest

from tests.model_files import write_tiny_llama
from tests.deploy_helpers import (
    available_model,
    create_endpoint,
    inference_key_headers,
    keep_busy,
    local_cluster_id,
    running_endpoint,
    runtime_processes,
    wait_endpoint,
    wait_for_route,
)
from tests.helpers import unique


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("traffic") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


@pytest.fixture(scope="module")
def key(api, state_dir) -> dict:
    """The default project's inference key, as the gateway wants it."""
    return inference_key_headers(state_dir)


@pytest.fixture
async def blue_green(api, control_worker, optimizer_worker, gateway, model, cluster_id):
    """Two RUNNING endpoints and a route sending all traffic to the first."""
    blue = await running_endpoint(api, model["id"], cluster_id)
    green = await running_endpoint(api, model["id"], cluster_id)
    name = unique("route")
    response = await api.put(f"/api/routes/{name}", json={"backends": [
        {"endpoint_id": blue["id"], "weight": 100}, {"endpoint_id": green["id"], "weight": 0}]})
    assert response.status_code == 200, response.text
    yield name, blue, green
    for endpoint in (blue, green):
        await api.delete(f"/api/endpoints/{endpoint['id']}")
    for endpoint in (blue, green):
        await wait_endpoint(api, endpoint["id"], lambda e: False)


async def served_by(gateway: str, route: str, requests: int, key: dict) -> collections.Counter:
    """Which endpoint answered each of `requests` sequential completions sent to the route's name."""
    counts: collections.Counter = collections.Counter()
    async with httpx.AsyncClient(timeout=30, headers=key) as client:
        for _ in range(requests):
            reply = await client.post(f"{gateway}/chat/completions", json={
                "model": route, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            assert reply.status_code == 200, reply.text
            counts[reply.json()["model"]] += 1
    return counts


async def shift_done(api, route: str, timeout: float = 60) -> dict:
    async with asyncio.timeout(timeout):
        while (body := (await api.get(f"/api/routes/{route}")).json())["shift"]["status"] == "RUNNING":
            await asyncio.sleep(0.2)
    return body


async def shift_under_load(api, gateway: str, route: str, shift: dict, key: dict, stream: bool = False) -> dict:
    """Start a shift while four clients keep the route busy; the route once the shift has ended."""
    await wait_for_route(gateway, route, key)
    stop = asyncio.Event()
    load = [asyncio.create_task(keep_busy(gateway, route, stop, stream=stream, headers=key)) for _ in range(4)]
    try:
        response = await api.post(f"/api/routes/{route}/shift", json=shift)
        assert response.status_code == 202, response.text
        return await shift_done(api, route)
    finally:
        stop.set()
        await asyncio.gather(*load)


def weights(route: dict) -> dict[str, int]:
    return {b["endpoint_name"]: b["weight"] for b in route["backends"]}


async def test_weights_split_the_traffic_and_bad_routes_are_refused(api, gateway, key, blue_green, model, cluster_id):
    name, blue, green = blue_green
    response = await api.put(f"/api/routes/{name}", json={"backends": [
        {"endpoint_id": blue["id"], "weight": 80}, {"endpoint_id": green["id"], "weight": 20}]})
    assert response.status_code == 200 and weights(response.json()) == {blue["name"]: 80, green["name"]: 20}
    await wait_for_route(gateway, name, key)
    await asyncio.sleep(0.5)  # the gateway re-reads routes every 0.2 s
    assert await served_by(gateway, name, 50, key) == {blue["name"]: 40, green["name"]: 10}

    bad_sum = await api.put(f"/api/routes/{name}", json={"backends": [{"endpoint_id": blue["id"], "weight": 90}]})
    assert bad_sum.status_code == 422 and "add up to 100" in bad_sum.text
    unknown = await api.put(f"/api/routes/{name}", json={"backends": [
        {"endpoint_id": "00000000-0000-0000-0000-000000000000", "weight": 100}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["details"][0]["field"] == "backends.0.endpoint_id"
    pending = await create_endpoint(api, model["id"], cluster_id)
    not_running = await api.put(f"/api/routes/{name}", json={"backends": [{"endpoint_id": pending["id"], "weight": 100}]})
    assert not_running.status_code == 409 and "only RUNNING endpoints take traffic" in not_running.text
    no_route = await api.post(f"/api/routes/{unique('none')}/shift", json={"to_endpoint_id": green["id"]})
    assert no_route.status_code == 404
    bad_steps = await api.post(f"/api/routes/{name}/shift", json={"to_endpoint_id": green["id"], "steps": [50, 20]})
    assert bad_steps.status_code == 422
    assert weights((await api.get(f"/api/routes/{name}")).json()) == {blue["name"]: 80, green["name"]: 20}  # unchanged


async def test_blue_green_swaps_at_once_and_removes_the_old_endpoint(api, gateway, key, blue_green):
    name, blue, green = blue_green
    response = await api.post(f"/api/routes/{name}/shift", json={
        "to_endpoint_id": green["id"], "strategy": "blue-green", "drain_s": 0, "remove_old": True})
    assert response.status_code == 202, response.text
    done = await shift_done(api, name)
    assert done["shift"]["status"] == "COMPLETED", done["shift"]
    assert weights(done) == {green["name"]: 100}
    assert (await wait_endpoint(api, blue["id"], lambda e: False))["status"] == "GONE"
    assert runtime_processes(blue["name"]) == []
    await wait_for_route(gateway, name, key)
    await asyncio.sleep(0.5)
    assert await served_by(gateway, name, 5, key) == {green["name"]: 5}


async def test_gradual_rollout_holding_its_slo_completes(api, gateway, key, blue_green, temporal_client):
    name, blue, green = blue_green
    done = await shift_under_load(api, gateway, name, {
        "to_endpoint_id": green["id"], "steps": [50, 100], "step_interval_s": 1.5, "drain_s": 0,
        # the same runtime on both sides: a band wide enough for this shared test machine's scheduling noise
        "slo": {"max_ttft_p99_ms": 5000, "max_latency_p99_ms": 30000, "min_requests": 10, "tolerance": 1,
                "slack_ms": 200, "tpot_slack_ms": 20}}, key)
    shift = done["shift"]
    assert shift["status"] == "COMPLETED", shift
    assert [step["weight"] for step in shift["steps"]] == [50, 100]
    assert all(step["canary"]["requests"] >= 10 and step["verdict"] == "held" for step in shift["steps"]), shift
    half, full = shift["steps"]
    # at 50 % both versions served the step and were compared on it; at 100 % only the absolute floor applies
    assert half["stable"]["requests"] >= 10 and half["baseline_from"] == "this step"
    assert half["canary"]["ttft_p99_ms"] > 0 and half["canary"]["tpot_p50_ms"] > 0 and half["canary"]["errors"] == 0
    assert full["stable"]["requests"] < 10 and full["baseline_from"] is None
    assert weights(done) == {green["name"]: 100}
    result = await temporal_client.get_workflow_handle(shift["workflow_id"]).result()
    assert result["status"] == "COMPLETED" and result["steps"] == shift["steps"]  # the workflow history has them
    assert (await api.get(f"/api/endpoints/{blue['id']}")).json()["status"] == "RUNNING"  # kept: remove_old false


async def test_gradual_rollout_missing_its_slo_rolls_back(api, gateway, key, blue_green):
    name, blue, green = blue_green
    done = await shift_under_load(api, gateway, name, {
        "to_endpoint_id": green["id"], "steps": [50, 100], "step_interval_s": 1.5,
        "slo": {"max_ttft_p99_ms": 0.001}}, key)  # no real first token is that fast
    shift = done["shift"]
    assert shift["status"] == "ROLLED_BACK", shift
    assert shift["reason"].startswith("at 50 %: TTFT p99") and "(absolute SLO)" in shift["reason"]
    assert weights(done) == {blue["name"]: 100, green["name"]: 0}


@pytest.fixture
async def slow_canary(api, control_worker, optimizer_worker, gateway, model, cluster_id):
    """A RUNNING stable endpoint, a RUNNING canary whose replica is 50 times slower, and a route on the stable one."""
    stable = await running_endpoint(api, model["id"], cluster_id)
    os.environ["BUD_SIM_SLOWDOWN"] = "50"
    try:
        slow = await running_endpoint(api, model["id"], cluster_id)
    finally:
        del os.environ["BUD_SIM_SLOWDOWN"]
    name = unique("route")
    response = await api.put(f"/api/routes/{name}", json={"backends": [{"endpoint_id": stable["id"], "weight": 100}]})
    assert response.status_code == 200, response.text
    yield name, stable, slow
    for endpoint in (stable, slow):
        await api.delete(f"/api/endpoints/{endpoint['id']}")
    for endpoint in (stable, slow):
        await wait_endpoint(api, endpoint["id"], lambda e: False)


async def test_a_slower_canary_rolls_back_with_its_numbers(api, gateway, key, slow_canary, temporal_client):
    """The absolute SLO is generous; the canary loses to the stable version on the noise band."""
    name, stable, slow = slow_canary
    done = await shift_under_load(api, gateway, name, {
        "to_endpoint_id": slow["id"], "steps": [50, 100], "step_interval_s": 2,
        "slo": {"max_ttft_p99_ms": 60_000, "max_latency_p99_ms": 600_000, "min_requests": 10}}, key, stream=True)
    shift = done["shift"]
    assert shift["status"] == "ROLLED_BACK", shift
    [step] = shift["steps"]
    assert step["weight"] == 50 and step["verdict"] == "failed" and step["baseline_from"] == "this step"
    canary, stable_side = step["canary"], step["stable"]
    assert canary["requests"] >= 10 and stable_side["requests"] >= 10
    # streamed answers: the first token and every next one come later from the slowed replica
    assert canary["ttft_p99_ms"] > stable_side["ttft_p99_ms"] and canary["tpot_p50_ms"] > stable_side["tpot_p50_ms"]
    assert step["reasons"] and all("(stable (this step) " in reason for reason in step["reasons"]), step
    assert shift["reason"] == "at 50 %: " + "; ".join(step["reasons"])
    assert weights(done) == {stable["name"]: 100}  # as before the shift: the canary is off the route
    result = await temporal_client.get_workflow_handle(shift["workflow_id"]).result()
    assert result["status"] == "ROLLED_BACK" and result["steps"] == shift["steps"]


async def test_a_step_without_enough_traffic_fails_after_its_wait(api, blue_green):
    name, blue, green = blue_green
    response = await api.post(f"/api/routes/{name}/shift", json={
        "to_endpoint_id": green["id"], "steps": [20, 100], "step_interval_s": 0.5,
        "slo": {"min_requests": 5, "traffic_wait_s": 2}})  # nobody calls the route
    assert response.status_code == 202, response.text
    done = await shift_done(api, name)
    shift = done["shift"]
    assert shift["status"] == "FAILED", shift
    assert shift["reason"] == "at 20 %: only 0 requests reached the canary (at least 5 needed) within 2.5 s"
    assert shift["steps"][0]["verdict"] == "insufficient" and shift["steps"][0]["window_s"] >= 2.5
    assert weights(done) == {blue["name"]: 100, green["name"]: 0}


async def test_overlapping_shifts_and_targets_not_running_are_refused(api, blue_green, model, cluster_id):
    name, blue, green = blue_green
    response = await api.post(f"/api/routes/{name}/shift", json={
        "to_endpoint_id": green["id"], "steps": [10, 100], "step_interval_s": 600})
    assert response.status_code == 202, response.text
    other = unique("route")
    assert (await api.put(f"/api/routes/{other}", json={"backends": [
        {"endpoint_id": blue["id"], "weight": 100}]})).status_code == 200
    overlap = await api.post(f"/api/routes/{other}/shift", json={"to_endpoint_id": green["id"]})
    assert overlap.status_code == 409, overlap.text
    assert overlap.json()["error"]["details"]["field"] == "to_endpoint_id" and name in overlap.text
    pending = await create_endpoint(api, model["id"], cluster_id)
    not_running = await api.post(f"/api/routes/{other}/shift", json={"to_endpoint_id": pending["id"]})
    assert not_running.status_code == 409 and "not RUNNING" in not_running.text
    bad = await api.post(f"/api/routes/{other}/shift", json={"to_endpoint_id": green["id"],
                                                              "slo": {"tolerance": 100}})
    assert bad.status_code == 422 and "slo.tolerance" in bad.text
    untouched = (await api.get(f"/api/routes/{other}")).json()
    assert weights(untouched) == {blue["name"]: 100} and untouched["shift"] is None
    await api.post(f"/api/routes/{name}/shift/abort")
    assert (await shift_done(api, name))["shift"]["status"] == "ROLLED_BACK"
    # once that shift has ended, the endpoint may be another route's canary
    assert (await api.post(f"/api/routes/{other}/shift", json={
        "to_endpoint_id": green["id"], "strategy": "blue-green", "drain_s": 0})).status_code == 202
    assert (await shift_done(api, other))["shift"]["status"] == "COMPLETED"


async def test_abort_rolls_back_a_shift_in_flight(api, blue_green):
    name, blue, green = blue_green
    response = await api.post(f"/api/routes/{name}/shift", json={
        "to_endpoint_id": green["id"], "steps": [10, 100], "step_interval_s": 600})
    assert response.status_code == 202
    async with asyncio.timeout(30):
        while weights((await api.get(f"/api/routes/{name}")).json()) != {blue["name"]: 90, green["name"]: 10}:
            await asyncio.sleep(0.2)
    busy = await api.put(f"/api/routes/{name}", json={"backends": [{"endpoint_id": blue["id"], "weight": 100}]})
    assert busy.status_code == 409 and "abort it first" in busy.text
    again = await api.post(f"/api/routes/{name}/shift", json={"to_endpoint_id": green["id"]})
    assert again.status_code == 409
    aborted = await api.post(f"/api/routes/{name}/shift/abort", json={"reason": "bad answers in review"})
    assert aborted.status_code == 202
    done = await shift_done(api, name)
    assert done["shift"]["status"] == "ROLLED_BACK" and done["shift"]["reason"] == "bad answers in review"
    assert weights(done) == {blue["name"]: 100, green["name"]: 0}
    assert (await api.post(f"/api/routes/{name}/shift/abort", json={})).status_code == 409



async def test_abort_needs_no_body(api, blue_green):
    """The README's `curl -X POST .../shift/abort` sends no body: it is an abort with the default reason."""
    name, blue, green = blue_green
    response = await api.post(f"/api/routes/{name}/shift", json={
        "to_endpoint_id": green["id"], "steps": [10, 100], "step_interval_s": 600})
    assert response.status_code == 202
    async with asyncio.timeout(30):
        while weights((await api.get(f"/api/routes/{name}")).json()) != {blue["name"]: 90, green["name"]: 10}:
            await asyncio.sleep(0.2)
    aborted = await api.post(f"/api/routes/{name}/shift/abort")
    assert aborted.status_code == 202, aborted.text
    done = await shift_done(api, name)
    assert done["shift"]["status"] == "ROLLED_BACK" and done["shift"]["reason"] == "aborted by request"
    assert weights(done) == {blue["name"]: 100, green["name"]: 0}

async def test_a_model_name_belongs_to_one_project(api, anon_api, blue_green):
    _, blue, _ = blue_green
    team = {"Authorization": f"Bearer {(await api.post('/api/projects', json={'name': unique('team')})).json()['token']}"}
    taken = await anon_api.put(f"/api/routes/{blue['name']}", headers=team,
                               json={"backends": [{"endpoint_id": blue["id"], "weight": 100}]})
    assert taken.status_code == 409 and "belongs to another project" in taken.text
