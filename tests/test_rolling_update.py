"""Rolling updates of a RUNNING endpoint, counted through the real gateway: GET shows the configuration the replicas
run with a pending one apart; POST /deploy replaces the replicas batch by batch (new ones warmed up and routed before
old ones drain) with no failed request under steady streaming load; a new generation that fails the warm-up gate is
rolled back while the old one keeps serving; revert goes back to the replaced generation; a plan that would leave
no replica serving is refused before anything changes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from control.errors import Conflict
from control.planning import plan_rollout
from control.store import endpoints as endpoint_store
from tests.deploy_helpers import (
    MANUAL_CONFIG,
    available_model,
    configure_manual,
    inference_key_headers,
    local_cluster_id,
    running_endpoint,
    runtime_processes,
    wait_endpoint,
    wait_for_route,
)
from tests.model_files import write_tiny_llama
from tests.test_drain import Tally, stream_loop


@pytest.fixture(scope="module")
async def model(api, control_worker, optimizer_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("rolling") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


def steps_of(plan) -> list[tuple[str, int, int]]:
    return [(step.action, step.new_replicas, step.old_replicas) for step in plan.steps]


# ---- the plan ---------------------------------------------------------------------------------------------------


def test_spare_gpus_make_a_surge_and_none_replace_in_place_one_at_a_time() -> None:
    surge = plan_rollout(old_replicas=2, old_gpus=1, new_replicas=2, new_gpus=1, available_gpus=8)
    assert surge.max_surge == 1 and "surge" in surge.summary
    assert steps_of(surge) == [("start", 1, 2), ("stop", 1, 1), ("start", 2, 1), ("stop", 2, 0)]
    in_place = plan_rollout(old_replicas=2, old_gpus=1, new_replicas=2, new_gpus=1, available_gpus=2)
    assert in_place.max_surge == 0 and "maxSurge 0" in in_place.summary
    assert steps_of(in_place) == [("stop", 0, 1), ("start", 1, 1), ("stop", 1, 0), ("start", 2, 0)]
    for plan in (surge, in_place):  # a replica serves after every step
        assert all(step.new_replicas + step.old_replicas >= 1 for step in plan.steps)


def test_a_plan_that_would_leave_no_replica_serving_is_refused_with_the_reason() -> None:
    with pytest.raises(Conflict, match="would leave no replica serving"):
        plan_rollout(old_replicas=1, old_gpus=1, new_replicas=1, new_gpus=1, available_gpus=1)
    with pytest.raises(Conflict, match="needs 6 GPUs for 3 replicas"):
        plan_rollout(old_replicas=1, old_gpus=1, new_replicas=3, new_gpus=2, available_gpus=4)


# ---- under load, through the gateway ----------------------------------------------------------------------------


async def streaming_load(gateway: str, name: str, headers: dict, clients: int = 10):
    stop, tally = asyncio.Event(), Tally()
    loops = [asyncio.create_task(stream_loop(gateway, name, headers, stop, tally, 20)) for _ in range(clients)]
    return stop, tally, loops


async def deploy(api, endpoint_id: str) -> dict:
    response = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert response.status_code == 202, response.text
    return response.json()


async def settled_update(api, endpoint_id: str, timeout: float = 180) -> dict:
    return await wait_endpoint(api, endpoint_id, lambda e: e["status"] == "RUNNING" and e["step"] == "running"
                               and (e["rollout"] or {}).get("status") not in (None, "PENDING", "RUNNING"),
                               timeout=timeout)


@pytest.mark.timeout(600)  # several rollouts, each draining under load, on a loaded machine
async def test_a_rolling_config_update_under_streaming_load_fails_no_request_then_reverts(
    api, control_worker, gateway, model, cluster_id, state_dir
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    endpoint_id, name, headers = endpoint["id"], endpoint["name"], inference_key_headers(state_dir)
    assert (await api.post(f"/api/endpoints/{endpoint_id}/revert")).status_code == 409  # nothing replaced yet
    await configure_manual(api, endpoint_id, replicas=2)  # old generation: 2 replicas
    await deploy(api, endpoint_id)
    await settled_update(api, endpoint_id)
    assert len(runtime_processes(name)) == 2
    await wait_for_route(gateway, name, headers)

    configured = await configure_manual(api, endpoint_id, replicas=2, max_num_seqs=16)
    assert configured["status"] == "RUNNING"
    assert configured["deployment"]["config"]["max_num_seqs"] == 8  # what the replicas run
    assert configured["pending_config"]["config"]["max_num_seqs"] == 16
    old_generation = configured["deployment"]["generation"]

    stop, tally, loops = await streaming_load(gateway, name, headers)
    await asyncio.sleep(1.0)
    accepted = await deploy(api, endpoint_id)
    assert accepted["status"] == "UPDATING" and "surge" in accepted["rollout"]["plan"], accepted
    conflict = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert conflict.status_code == 409 and "rolling update" in conflict.text
    done = await settled_update(api, endpoint_id)
    await asyncio.sleep(1.0)  # the new generation alone goes on serving
    stop.set()
    await asyncio.gather(*loops)

    print(f"rolling update under load: {tally.sent} streams, {len(tally.failures)} failed")
    assert tally.failures == [], tally.failures[:5]
    assert tally.ok > 20
    assert done["rollout"]["status"] == "COMPLETED" and done["error"] is None, done["rollout"]
    assert done["deployment"]["generation"] == old_generation + 1
    assert done["deployment"]["config"]["max_num_seqs"] == 16 and done["pending_config"] is None
    processes = runtime_processes(name)
    assert len(processes) == 2
    assert all(p.cmdline()[p.cmdline().index("--max-num-seqs") + 1] == "16" for p in processes)
    nothing = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert nothing.status_code == 409 and "nothing to deploy" in nothing.text

    # revert: back to the replaced generation's configuration, rolled out the same way
    reverting = await api.post(f"/api/endpoints/{endpoint_id}/revert")
    assert reverting.status_code == 202, reverting.text
    reverted = await settled_update(api, endpoint_id)
    assert reverted["rollout"]["status"] == "COMPLETED", reverted["rollout"]
    assert reverted["deployment"]["config"]["max_num_seqs"] == 8 and reverted["pending_config"] is None
    processes = runtime_processes(name)
    assert len(processes) == 2
    assert all(p.cmdline()[p.cmdline().index("--max-num-seqs") + 1] == "8" for p in processes)
    assert (await api.delete(f"/api/endpoints/{endpoint_id}")).status_code == 202
    await wait_endpoint(api, endpoint_id, lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)
    async with asyncio.timeout(30):
        while runtime_processes(name):
            await asyncio.sleep(0.2)


@pytest.mark.timeout(600)  # several rollouts, each draining under load, on a loaded machine
async def test_a_new_generation_that_fails_warm_up_is_rolled_back_and_the_old_keeps_serving(
    api, control_worker, gateway, model, cluster_id, state_dir
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    endpoint_id, name, headers = endpoint["id"], endpoint["name"], inference_key_headers(state_dir)
    await wait_for_route(gateway, name, headers)
    # No replica answers its first token within a microsecond: the warm-up gate holds this generation back.
    response = await api.put(f"/api/endpoints/{endpoint_id}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": {**MANUAL_CONFIG, "max_num_seqs": 4},
        "replicas": 1, "performance_targets": {"max_ttft_ms": 0.001}})
    assert response.status_code == 202, response.text
    await wait_endpoint(api, endpoint_id, lambda e: e["optimization_status"] != "RUNNING")

    stop, tally, loops = await streaming_load(gateway, name, headers, clients=6)
    await asyncio.sleep(1.0)
    await deploy(api, endpoint_id)
    done = await settled_update(api, endpoint_id)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*loops)

    print(f"failed warm-up under load: {tally.sent} streams, {len(tally.failures)} failed")
    assert tally.failures == [], tally.failures[:5]
    assert done["rollout"]["status"] == "ROLLED_BACK", done["rollout"]
    assert "warm-up" in done["error"]["reason"] and "rolled back" in done["error"]["reason"], done["error"]
    assert done["deployment"]["config"]["max_num_seqs"] == 8  # the old generation serves on
    assert done["pending_config"]["config"]["max_num_seqs"] == 4  # still pending, to fix and deploy again
    processes = runtime_processes(name)
    assert len(processes) == 1 and processes[0].cmdline()[processes[0].cmdline().index("--max-num-seqs") + 1] == "8"
    assert (await api.delete(f"/api/endpoints/{endpoint_id}")).status_code == 202
    await wait_endpoint(api, endpoint_id, lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)


async def hold_all_gpus_but(db_pool, cluster_id: str, holder_id: str, gpu_type: str, left_for_endpoint: int) -> None:
    """Reserve for the holder every GPU of the type that no other endpoint holds, but `left_for_endpoint`.

    Counted from the cluster rather than assumed: the cluster is shared with the session's other tests."""
    async with db_pool.acquire() as conn:
        total = sum(pool["count"] for pool in await conn.fetchval("SELECT gpus FROM clusters WHERE id = $1", cluster_id)
                    if pool["gpu_type"] == gpu_type)
        held_elsewhere = await conn.fetchval(
            "SELECT COALESCE(sum(count), 0) FROM gpu_reservations WHERE cluster_id = $1 AND gpu_type = $2 "
            "AND endpoint_id <> $3", cluster_id, gpu_type, holder_id)
        in_use_by_endpoint = 1  # the endpoint under test runs one replica of one GPU
        await endpoint_store.reserve_gpus(conn, cluster_id, holder_id, gpu_type,
                                          total - (held_elsewhere - in_use_by_endpoint) - left_for_endpoint)


@pytest.mark.timeout(600)  # several rollouts, each draining under load, on a loaded machine
async def test_without_a_spare_gpu_one_replica_is_refused_and_two_are_replaced_in_place(
    api, control_worker, gateway, model, cluster_id, state_dir, db_pool
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    endpoint_id, name, headers = endpoint["id"], endpoint["name"], inference_key_headers(state_dir)
    holder = await running_endpoint(api, model["id"], cluster_id)  # another tenant holding the other GPUs
    gpu_type = endpoint["deployment"]["resources"]["gpu_type"]
    await hold_all_gpus_but(db_pool, cluster_id, holder["id"], gpu_type, left_for_endpoint=1)
    try:
        await configure_manual(api, endpoint_id, replicas=1, max_num_seqs=16)
        refused = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
        assert refused.status_code == 409 and "would leave no replica serving" in refused.text, refused.text
        unchanged = (await api.get(f"/api/endpoints/{endpoint_id}")).json()
        assert unchanged["status"] == "RUNNING" and unchanged["deployment"]["config"]["max_num_seqs"] == 8

        # 2 GPUs for this endpoint, none spare
        await hold_all_gpus_but(db_pool, cluster_id, holder["id"], gpu_type, left_for_endpoint=2)
        response = await api.post(f"/api/endpoints/{endpoint_id}/scale", json={"replicas": 2})
        assert response.status_code == 202, response.text
        await wait_endpoint(api, endpoint_id, lambda e: e["step"] == "running" and e["deployment"]["ready_replicas"] == 2)
        await configure_manual(api, endpoint_id, replicas=2, max_num_seqs=16)
        await wait_for_route(gateway, name, headers)
        stop, tally, loops = await streaming_load(gateway, name, headers, clients=6)
        await asyncio.sleep(1.0)
        accepted = await deploy(api, endpoint_id)
        assert accepted["rollout"]["max_surge"] == 0 and "maxSurge 0" in accepted["rollout"]["plan"], accepted
        done = await settled_update(api, endpoint_id)
        stop.set()
        await asyncio.gather(*loops)
        print(f"replace in place under load: {tally.sent} streams, {len(tally.failures)} failed")
        assert tally.failures == [], tally.failures[:5]
        assert done["rollout"]["status"] == "COMPLETED" and done["deployment"]["config"]["max_num_seqs"] == 16
        assert len(runtime_processes(name)) == 2
    finally:
        for ep in (endpoint_id, holder["id"]):
            await api.delete(f"/api/endpoints/{ep}")
        for ep in (endpoint_id, holder["id"]):
            await wait_endpoint(api, ep, lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)


@pytest.mark.timeout(600)
async def test_revert_during_a_rolling_update_stops_it_and_goes_back_with_a_replica_serving(
    api, control_worker, gateway, model, cluster_id, state_dir
) -> None:
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    endpoint_id, name, headers = endpoint["id"], endpoint["name"], inference_key_headers(state_dir)
    await configure_manual(api, endpoint_id, replicas=1, max_num_seqs=16)
    await wait_for_route(gateway, name, headers)
    stop, tally, loops = await streaming_load(gateway, name, headers, clients=6)
    await asyncio.sleep(1.0)
    await deploy(api, endpoint_id)
    await wait_endpoint(api, endpoint_id, lambda e: "step 1/" in (e["step"] or ""))
    reverting = await api.post(f"/api/endpoints/{endpoint_id}/revert")
    assert reverting.status_code == 202, reverting.text
    assert reverting.json()["pending_config"] is None  # the serving configuration is the endpoint's again
    done = await settled_update(api, endpoint_id)
    stop.set()
    await asyncio.gather(*loops)
    print(f"revert during a rolling update under load: {tally.sent} streams, {len(tally.failures)} failed")
    assert tally.failures == [], tally.failures[:5]
    assert done["rollout"]["status"] == "REVERTED" and done["error"] is None, done["rollout"]
    assert done["deployment"]["generation"] == 1 and done["deployment"]["config"]["max_num_seqs"] == 8
    processes = runtime_processes(name)
    assert len(processes) == 1 and processes[0].cmdline()[processes[0].cmdline().index("--max-num-seqs") + 1] == "8"
    assert (await api.delete(f"/api/endpoints/{endpoint_id}")).status_code == 202
    await wait_endpoint(api, endpoint_id, lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)


async def test_a_gateway_stuck_behind_bounds_the_publish_wait_and_the_deploy_ends_running(
    api, control_worker, gateway, model, cluster_id, db_pool
) -> None:
    """A gateway that heartbeats but never reloads its table: the deploy waits for it a bounded number of times,
    then publishes anyway (RUNNING, the other gateways serve it) instead of waiting forever."""
    stuck = f"stuck-{uuid.uuid4().hex[:8]}"

    async def heartbeat() -> None:
        while True:
            await db_pool.execute("INSERT INTO gateway_instances (instance_id, url, route_table_version) "
                                  "VALUES ($1, 'http://10.0.0.7:8080', 0) ON CONFLICT (instance_id) "
                                  "DO UPDATE SET last_seen = now(), route_table_version = 0", stuck)
            await asyncio.sleep(0.5)

    beating = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        endpoint = await running_endpoint(api, model["id"], cluster_id)
        waited = asyncio.get_running_loop().time() - started
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await db_pool.execute("DELETE FROM gateway_instances WHERE instance_id = $1", stuck)
    print(f"deploy with a gateway stuck behind: RUNNING after {waited:.0f}s")
    assert endpoint["status"] == "RUNNING" and endpoint["error"] is None
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202
    await wait_endpoint(api, endpoint["id"], lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)


@pytest.mark.record_history
@pytest.mark.timeout(600)
async def test_record_rolling_update_histories(api, control_worker, gateway, model, cluster_id, temporal_client):
    """`pytest tests/test_rolling_update.py -k record --record-histories`: a completed and a rolled-back update."""
    from tests.test_replay import HISTORIES
    from workflows.ids import deploy_endpoint_workflow_id

    endpoint = await running_endpoint(api, model["id"], cluster_id)
    workflow_id = deploy_endpoint_workflow_id(endpoint["id"])
    await configure_manual(api, endpoint["id"], max_num_seqs=16)
    await deploy(api, endpoint["id"])
    assert (await settled_update(api, endpoint["id"]))["rollout"]["status"] == "COMPLETED"
    (HISTORIES / "rolling_update_completed.json").write_text(
        (await temporal_client.get_workflow_handle(workflow_id).fetch_history()).to_json())
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": MANUAL_CONFIG, "replicas": 1,
        "performance_targets": {"max_ttft_ms": 0.001}})
    assert response.status_code == 202, response.text
    await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING")
    await deploy(api, endpoint["id"])
    assert (await settled_update(api, endpoint["id"]))["rollout"]["status"] == "ROLLED_BACK"
    (HISTORIES / "rolling_update_rolled_back.json").write_text(
        (await temporal_client.get_workflow_handle(workflow_id).fetch_history()).to_json())
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202
    await wait_endpoint(api, endpoint["id"], lambda e: e["status"] in ("DELETED", "GONE"), timeout=90)
