"""Autoscaling on the local cluster: PUT /api/endpoints/{id}/autoscaling, the AutoscaleEndpoint
workflow scaling real simulated replicas under real load (through the gateway), and back down when it stops."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowExecutionStatus

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
from workflows.ids import autoscale_endpoint_workflow_id

QUEUE_METRIC = {"type": "External",
                "external": {"metric": {"name": "inference_queue_depth"}, "target": {"type": "Value", "value": 4}}}


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("autoscale") / "tiny"))


@pytest.fixture(scope="module")
async def cluster_id(api, control_worker):
    return await local_cluster_id(api)


async def test_local_autoscaler_follows_the_queue_up_and_back_down(
    api, control_worker, optimizer_worker, gateway, model, cluster_id, temporal_client, state_dir
):
    endpoint = await running_endpoint(api, model["id"], cluster_id)
    url = f"/api/endpoints/{endpoint['id']}/autoscaling"
    body = {"enabled": True, "min_replicas": 1, "max_replicas": 3, "metrics": [QUEUE_METRIC],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}}

    too_big = await api.put(url, json={**body, "max_replicas": 50})
    assert too_big.status_code == 409 and too_big.json()["error"]["details"]["field"] == "max_replicas"
    response = await api.put(url, json=body)
    assert response.status_code == 202, response.text
    assert response.json()["autoscaling"]["max_replicas"] == 3
    manual = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 2})
    assert manual.status_code == 409 and "autoscaler owns" in manual.json()["error"]["message"]

    key = inference_key_headers(state_dir)
    await wait_for_route(gateway, endpoint["name"], key)
    stop = asyncio.Event()
    clients = [asyncio.create_task(keep_busy(gateway, endpoint["name"], stop, max_tokens=200, stream=True,
                                             headers=key)) for _ in range(12)]
    try:
        up = await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 3, timeout=90)
    finally:
        stop.set()
        served = await asyncio.gather(*clients)
    assert up["deployment"]["replicas"] == 3 and len(runtime_processes(endpoint["name"])) == 3
    assert sum(served) > 0
    state = up["autoscaling_state"]
    assert any(reason.startswith("inference_queue_depth") for reason in state["reasons"]), state

    # Idle: after the 3 s scale-down window the autoscaler returns to min_replicas.
    down = await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["replicas"] == 1
                               and e["deployment"]["ready_replicas"] == 1 and e["step"] == "running", timeout=60)
    assert down["autoscaling_state"]["queue_depth"] == 0
    async with asyncio.timeout(20):
        while len(runtime_processes(endpoint["name"])) != 1:
            await asyncio.sleep(0.2)

    # Disabled: the workflow ends and the user owns the replica count again.
    handle = temporal_client.get_workflow_handle(autoscale_endpoint_workflow_id(endpoint["id"]))
    response = await api.put(url, json={**body, "enabled": False})
    assert response.status_code == 202 and response.json()["autoscaling"]["enabled"] is False
    assert await handle.result() == "disabled"
    manual = await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 2})
    assert manual.status_code == 202, manual.text
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 2 and e["step"] == "running")

    # Enabled again with a floor of 3: it scales up without load; DELETE then stops it with the endpoint.
    response = await api.put(url, json={**body, "min_replicas": 3})
    assert response.status_code == 202
    await wait_endpoint(api, endpoint["id"], lambda e: e["deployment"]["ready_replicas"] == 3 and e["step"] == "running")
    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202
    assert (await wait_endpoint(api, endpoint["id"], lambda e: False))["status"] == "GONE"
    assert (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
    assert runtime_processes(endpoint["name"]) == []


async def test_autoscaling_answers_bad_requests_clearly(api, control_worker, model, cluster_id):
    pending = await create_endpoint(api, model["id"], cluster_id)
    url = f"/api/endpoints/{pending['id']}/autoscaling"
    response = await api.put(url, json={"min_replicas": 4, "max_replicas": 2})
    assert response.status_code == 422
    assert "max_replicas must be at least min_replicas" in response.text
    response = await api.put(url, json={"metrics": [{"type": "External", "external": {
        "metric": {"name": "gpu_temperature"}, "target": {"type": "Value", "value": 1}}}]})
    assert response.status_code == 422 and "name" in response.text
    response = await api.put(url, json={"min_replicas": 1, "max_replicas": 2})
    assert response.status_code == 409 and "only RUNNING endpoints autoscale" in response.json()["error"]["message"]
    assert (await api.get(f"/api/endpoints/{pending['id']}")).json()["autoscaling"] is None  # nothing stored
