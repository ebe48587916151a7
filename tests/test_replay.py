"""Every recorded history under tests/histories replays with the current workflow code (no non-determinism).

Record new histories with `pytest tests/test_replay.py --record-histories`: it runs each scenario against the
real Temporal dev server and writes its history as JSON next to the old ones. Commit them: a later change that breaks
replay of a recorded run (one that is in flight in production) then fails this test.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.worker import Replayer

from control.payloads.clusters import ClusterSpec
from control.store import clusters as cluster_store
from core.temporal import DATA_CONVERTER
from tests.helpers import unique
from tests.test_register_cluster import unreachable_kubeconfig
from worker.queues import ALL_WORKFLOWS
from workflows.starters import start_register_cluster

HISTORIES = Path(__file__).parent / "histories"


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded_for_every_workflow():
    recorded_types = set()
    for path in recorded_histories():
        events = json.loads(path.read_text())["events"]
        recorded_types.add(events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])
    assert {workflow.__name__ for workflow in ALL_WORKFLOWS} <= recorded_types


@pytest.mark.parametrize("history_file", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_history_replays(history_file: Path):
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{history_file.name} no longer replays: {result.replay_failure}"


@pytest.mark.record_history
async def test_record_register_cluster_histories(control_worker, temporal_client, settings, db_pool):
    local = ClusterSpec(name=unique("recorded"), kind="local", gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    unreachable = ClusterSpec(name=unique("recorded"), kind="kubernetes", kubeconfig=unreachable_kubeconfig(),
                              gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    for file_name, spec in (("register_cluster_local", local), ("register_cluster_unreachable", unreachable)):
        async with db_pool.acquire() as conn:
            row = await cluster_store.insert_cluster(conn, None, spec)
        handle = await start_register_cluster(temporal_client, settings, row.id, spec)
        try:
            await handle.result()
        except WorkflowFailureError:
            pass  # the failure path is worth recording too
        history = await handle.fetch_history()
        (HISTORIES / f"{file_name}.json").write_text(history.to_json())


@pytest.mark.record_history
async def test_record_register_model_histories(api, control_worker, temporal_client, settings, tmp_path):
    from tests.model_files import write_eicar_file, write_tiny_llama
    from tests.registry_helpers import register_and_wait, upload

    clean = write_tiny_llama(tmp_path / "clean")
    infected = write_tiny_llama(tmp_path / "infected")
    write_eicar_file(infected.path / "payload.dat")
    scenarios = {
        "register_model_available": await upload(settings, clean.path),
        "register_model_quarantined": await upload(settings, infected.path),
        "register_model_failed": unique("empty-prefix"),
    }
    for file_name, prefix in scenarios.items():
        model = await register_and_wait(api, settings, prefix, parameter_count=clean.parameter_count)
        history = await temporal_client.get_workflow_handle(model["workflow_id"]).fetch_history()
        (HISTORIES / f"{file_name}.json").write_text(history.to_json())


@pytest.mark.record_history
async def test_record_deployment_histories(api, control_worker, optimizer_worker, gateway, temporal_client, settings,
                                           tmp_path):
    """Deploy (with its TransferModel and HealthCheck children), optimize, scale, delete; a failed and a cancelled deploy."""
    from tests.model_files import write_tiny_llama
    from tests.deploy_helpers import (available_model, configure_manual, create_endpoint, local_cluster_id,
                                      settled, wait_endpoint)
    from workflows.ids import (delete_endpoint_workflow_id, deploy_endpoint_workflow_id, health_check_workflow_id,
                               scale_endpoint_workflow_id, transfer_workflow_id)

    async def save(workflow_id: str, file_name: str) -> None:
        history = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
        (HISTORIES / f"{file_name}.json").write_text(history.to_json())

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    cluster = await local_cluster_id(api)
    endpoint = await create_endpoint(api, model["id"], cluster)
    configured = await configure_manual(api, endpoint["id"])
    await save(configured["optimization_workflow_id"], "optimize_deployment_manual")
    await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "optimization_method": "REGRESSOR", "performance_targets": {"max_latency_ms": 2000},
        "workload": {"input_tokens": 256, "output_tokens": 64, "concurrency": 4}})
    regressor = await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING", timeout=120)
    await save(regressor["optimization_workflow_id"], "optimize_deployment_regressor")
    await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
    await save(deploy_endpoint_workflow_id(endpoint["id"]), "deploy_endpoint_running")
    await save(transfer_workflow_id(endpoint["id"]), "transfer_model")
    await save(health_check_workflow_id(endpoint["id"]), "health_check")
    await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 2})
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 2 and e["step"] == "running")
    await temporal_client.get_workflow_handle(scale_endpoint_workflow_id(endpoint["id"])).result()
    await save(scale_endpoint_workflow_id(endpoint["id"]), "scale_endpoint")
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await temporal_client.get_workflow_handle(delete_endpoint_workflow_id(endpoint["id"])).result()
    await save(delete_endpoint_workflow_id(endpoint["id"]), "delete_endpoint")

    failing = await create_endpoint(api, model["id"], cluster)
    await configure_manual(api, failing["id"])
    settings.deploy_ready_timeout_s = 3
    os.environ["BUD_SIM_FAIL_HEALTH"] = "1"  # replicas never turn healthy: FAILED at "waiting for replicas"
    try:
        await api.post(f"/api/endpoints/{failing['id']}/deploy")
        await wait_endpoint(api, failing["id"], settled)
    finally:
        del os.environ["BUD_SIM_FAIL_HEALTH"]
        settings.deploy_ready_timeout_s = 60
    await save(deploy_endpoint_workflow_id(failing["id"]), "deploy_endpoint_failed")

    cancelled = await create_endpoint(api, model["id"], cluster)
    await configure_manual(api, cancelled["id"])
    settings.sim_load_delay_s = 30
    try:
        await api.post(f"/api/endpoints/{cancelled['id']}/deploy")
        await wait_endpoint(api, cancelled["id"], lambda e: e["step"] == "waiting for replicas")
    finally:
        settings.sim_load_delay_s = 0
    await api.delete(f"/api/endpoints/{cancelled['id']}")
    await temporal_client.get_workflow_handle(delete_endpoint_workflow_id(cancelled["id"])).result()
    await save(deploy_endpoint_workflow_id(cancelled["id"]), "deploy_endpoint_cancelled")


@pytest.mark.record_history
async def test_record_autoscale_history(api, control_worker, optimizer_worker, gateway, temporal_client, settings,
                                        tmp_path):
    """The local autoscaler raising an endpoint to its floor, then continuing-as-new when the spec is disabled."""
    from tests.model_files import write_tiny_llama
    from tests.deploy_helpers import available_model, configure_manual, create_endpoint, local_cluster_id, settled, wait_endpoint
    from workflows.ids import autoscale_endpoint_workflow_id, delete_endpoint_workflow_id

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    await configure_manual(api, endpoint["id"])
    await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
    spec = {"min_replicas": 2, "max_replicas": 2, "metrics": [{"type": "External", "external": {
        "metric": {"name": "inference_queue_depth"}, "target": {"type": "Value", "value": 4}}}]}
    assert (await api.put(f"/api/endpoints/{endpoint['id']}/autoscaling", json=spec)).status_code == 202
    handle = temporal_client.get_workflow_handle(autoscale_endpoint_workflow_id(endpoint["id"]))
    first_run = (await handle.describe()).run_id
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 2 and e["step"] == "running")
    await api.put(f"/api/endpoints/{endpoint['id']}/autoscaling", json={**spec, "enabled": False})
    assert await handle.result() == "disabled"
    history = await temporal_client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
    (HISTORIES / "autoscale_endpoint.json").write_text(history.to_json())
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await temporal_client.get_workflow_handle(delete_endpoint_workflow_id(endpoint["id"])).result()


@pytest.mark.record_history
async def test_record_traffic_shift_histories(api, control_worker, optimizer_worker, gateway, temporal_client,
                                              settings, tmp_path):
    """A blue-green swap that completes, a gradual rollout rolled back by an abort signal, and one whose step waits
    for traffic and fails."""
    from tests.model_files import write_tiny_llama
    from tests.deploy_helpers import available_model, configure_manual, create_endpoint, local_cluster_id, settled, wait_endpoint
    from workflows.ids import traffic_shift_workflow_id

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    cluster = await local_cluster_id(api)
    endpoints = []
    for _ in range(2):
        endpoint = await create_endpoint(api, model["id"], cluster)
        await configure_manual(api, endpoint["id"])
        await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
        assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
        endpoints.append(endpoint)
    blue, green = endpoints
    for file_name, shift in (
        ("traffic_shift_blue_green", {"strategy": "blue-green", "drain_s": 0}),
        ("traffic_shift_aborted", {"steps": [10, 100], "step_interval_s": 600}),
        # nobody calls the route: the step's canary analysis waits for traffic, then the shift fails
        ("traffic_shift_no_traffic", {"steps": [20, 100], "step_interval_s": 0.5,
                                      "slo": {"min_requests": 5, "traffic_wait_s": 6}}),
    ):
        route = unique("route")
        await api.put(f"/api/routes/{route}", json={"backends": [{"endpoint_id": blue["id"], "weight": 100}]})
        assert (await api.post(f"/api/routes/{route}/shift", json={"to_endpoint_id": green["id"], **shift})).status_code == 202
        handle = temporal_client.get_workflow_handle(traffic_shift_workflow_id(route))
        if file_name.endswith("aborted"):
            while (await api.get(f"/api/routes/{route}")).json()["shift"].get("step", "").startswith("10 %") is False:
                await asyncio.sleep(0.2)
            await api.post(f"/api/routes/{route}/shift/abort", json={"reason": "recorded abort"})
        await handle.result()
        (HISTORIES / f"{file_name}.json").write_text((await handle.fetch_history()).to_json())
    for endpoint in endpoints:
        await api.delete(f"/api/endpoints/{endpoint['id']}")


@pytest.mark.record_history
async def test_record_reoptimize_history(api, control_worker, optimizer_worker, gateway, prometheus, temporal_client,
                                         settings, tmp_path):
    """Reoptimize for one endpoint under load: observation, alerts, and the calibrated search as a child."""
    import httpx

    from tests.model_files import write_tiny_llama
    from tests.deploy_helpers import (MANUAL_CONFIG, available_model, create_endpoint, inference_key_headers,
                                      local_cluster_id, settled, wait_endpoint)
    from workflows.ids import reoptimize_endpoint_workflow_id

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": MANUAL_CONFIG, "replicas": 1,
        "performance_targets": {"min_throughput_tps": 1_000_000}})
    await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING")
    await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
    async with httpx.AsyncClient(timeout=30, headers=inference_key_headers(settings.state_dir)) as client:
        loop = asyncio.get_running_loop()
        until = loop.time() + 8  # several 1 s scrapes under load
        while loop.time() < until:
            await client.post(f"{gateway}/chat/completions", json={
                "model": endpoint["name"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
    await api.post(f"/api/endpoints/{endpoint['id']}/metrics/refresh", params={"window_s": 30})
    handle = temporal_client.get_workflow_handle(reoptimize_endpoint_workflow_id(endpoint["id"]))
    summary = await handle.result()
    assert summary[endpoint["id"]]["recommendation"], summary
    (HISTORIES / "reoptimize.json").write_text((await handle.fetch_history()).to_json())
    await api.delete(f"/api/endpoints/{endpoint['id']}")


@pytest.mark.record_history
async def test_record_calibrated_optimization_history(api, control_worker, optimizer_worker, temporal_client,
                                                      settings, tmp_path):
    """OptimizeDeployment calibrated on imported measurements: the calibrate step, then the search."""
    from tests.deploy_helpers import available_model, local_cluster_id
    from tests.model_files import write_tiny_llama
    from tests.test_calibrated_optimize import WORKLOAD, _measured_rows

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    config = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_num_seqs": 16,
              "max_num_batched_tokens": 8192}
    assert (await api.post("/api/measurements", json=_measured_rows(model, config))).status_code == 201
    created = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": await local_cluster_id(api), "optimization_method": "HEURISTIC",
        "performance_targets": {"max_latency_ms": 20}, "workload": WORKLOAD})
    handle = temporal_client.get_workflow_handle(created.json()["workflow_id"])
    await handle.result()
    done = (await api.get(f"/api/optimizations/{created.json()['id']}")).json()
    assert done["result"]["calibration"] is not None, done
    (HISTORIES / "optimize_deployment_calibrated.json").write_text((await handle.fetch_history()).to_json())


@pytest.mark.record_history
async def test_record_deploy_waiting_for_the_optimizer_history(api, control_worker, gateway, temporal_client, settings,
                                                                worker_clients, tmp_path):
    """A deploy accepted while the optimizer was still choosing: it waits for the search, then deploys its choice."""
    from tests.deploy_helpers import available_model, create_endpoint, local_cluster_id, settled, wait_endpoint
    from tests.model_files import write_tiny_llama
    from tests.test_configure_then_deploy import REACHABLE, busy_optimizer, configure_then_deploy
    from workflows.ids import delete_endpoint_workflow_id, deploy_endpoint_workflow_id

    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    async with busy_optimizer(settings, temporal_client, worker_clients) as free:
        await configure_then_deploy(api, endpoint["id"], REACHABLE)
        await free()
        assert (await wait_endpoint(api, endpoint["id"], settled, timeout=180))["status"] == "RUNNING"
    history = await temporal_client.get_workflow_handle(deploy_endpoint_workflow_id(endpoint["id"])).fetch_history()
    (HISTORIES / "deploy_endpoint_waited_for_optimizer.json").write_text(history.to_json())
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await temporal_client.get_workflow_handle(delete_endpoint_workflow_id(endpoint["id"])).result()
