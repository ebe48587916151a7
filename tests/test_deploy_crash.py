"""A worker SIGKILLed during the model transfer and during the health checks: a new worker finishes the deploy,
the transfer resumes, and no replica is duplicated."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import PendingActivityState

from control.payloads.deployments import DeployEndpointInput
from tests.model_files import spec_for_total_bytes, write_tiny_llama
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    finish_with_a_new_worker,
    local_cluster_id,
    runtime_processes,
    wait_endpoint,
)
from tests.helpers import unique
from workflows.deploy_endpoint import DeployEndpoint
from workflows.ids import deploy_endpoint_workflow_id, transfer_workflow_id


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Big enough (~200 MB) that the transfer takes a moment to interrupt."""
    return write_tiny_llama(tmp_path_factory.mktemp("large") / "model", spec_for_total_bytes(200_000_000))


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, large):
    return await available_model(api, settings, large)


async def started_activity(client, workflow_id: str, activity_type: str, timeout: float = 60) -> None:
    handle = client.get_workflow_handle(workflow_id)
    async with asyncio.timeout(timeout):
        while True:
            try:
                pending = (await handle.describe()).raw_description.pending_activities
            except Exception:  # the child workflow may not exist yet
                pending = []
            if any(p.activity_type.name == activity_type and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                   for p in pending):
                return
            await asyncio.sleep(0.02)


async def deploy_on_own_queue(temporal_client, settings, endpoint_id: str):
    queue_settings = settings.model_copy(update={"control_queue": unique("deploy-crash")})
    handle = await temporal_client.start_workflow(
        DeployEndpoint.run, DeployEndpointInput(endpoint_id=endpoint_id),
        id=deploy_endpoint_workflow_id(endpoint_id), task_queue=queue_settings.control_queue)
    return queue_settings, handle


async def test_worker_killed_during_transfer_resumes_and_finishes(
    api, control_worker, optimizer_worker, settings, temporal_client, state_dir, start_worker, model
):
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    await configure_manual(api, endpoint["id"])
    queue_settings, handle = await deploy_on_own_queue(temporal_client, settings, endpoint["id"])
    first = start_worker(queue_settings)
    await started_activity(temporal_client, transfer_workflow_id(endpoint["id"]), "transfer_model_file")
    await asyncio.sleep(0.3)  # let some bytes land
    first.kill()
    cache = state_dir / "model-cache" / model["id"]

    running = await finish_with_a_new_worker(api, start_worker, queue_settings, handle, endpoint["id"])
    assert running["status"] == "RUNNING", running["error"]
    assert len(runtime_processes(endpoint["name"])) == 1
    assert not list(cache.glob("*.part"))  # every file completed and passed its checksum
    assert {f["path"]: f["size"] for f in model["files"]} == {
        p.name: p.stat().st_size for p in cache.iterdir() if not p.name.endswith(".bud-sha256")}
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)  # until it answers 404


async def test_worker_killed_during_health_checks_leaves_no_duplicate_replicas(
    api, control_worker, optimizer_worker, settings, temporal_client, state_dir, start_worker, model
):
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    await configure_manual(api, endpoint["id"], replicas=2)
    queue_settings, handle = await deploy_on_own_queue(temporal_client, settings, endpoint["id"])
    # Replicas this worker starts inherit a 100x slowdown: the test inference takes seconds, a window to kill in.
    first = start_worker(queue_settings, extra_env={"BUD_SIM_SLOWDOWN": "100"})
    await wait_endpoint(api, endpoint["id"], lambda e: e["step"] == "health checks", timeout=120)
    first.kill()
    assert len(runtime_processes(endpoint["name"])) == 2  # replicas outlive the worker that started them

    running = await finish_with_a_new_worker(api, start_worker, queue_settings, handle, endpoint["id"])
    assert running["status"] == "RUNNING", running["error"]
    assert len(runtime_processes(endpoint["name"])) == 2  # adopted, not started again
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    gone = await wait_endpoint(api, endpoint["id"], lambda e: False)
    assert gone["status"] == "GONE"
    assert runtime_processes(endpoint["name"]) == []
