"""RegisterCluster end to end: API → Temporal → worker → PostgreSQL, and the failure path with its reason."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from control.payloads.clusters import ClusterSpec, ClusterStatus, RegisterClusterInput
from control.store import clusters as cluster_store
from core.processes import free_port
from tests.helpers import unique
from worker.queues import setup_for
from workflows.register_cluster import RegisterCluster


async def wait_for_cluster_status(api, cluster_id: str, wanted: set[str], timeout: float = 60) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            body = (await api.get(f"/api/clusters/{cluster_id}")).json()
            if body["status"] in wanted:
                return body
            await asyncio.sleep(0.2)


def unreachable_kubeconfig() -> str:
    port = free_port()  # nothing listens here
    return f"""apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: nobody
  user: {{token: "x"}}
contexts:
- name: nowhere
  context: {{cluster: nowhere, user: nobody}}
current-context: nowhere
"""


async def test_register_local_cluster_through_the_api(api, control_worker, temporal_client):
    accepted = await api.post("/api/clusters", json={"name": unique("lab"), "kind": "local",
                                                    "gpus": [{"gpu_type": "h100_sxm", "count": 4}]})
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "REGISTERING"

    cluster = await wait_for_cluster_status(api, body["id"], {"READY", "FAILED"})
    assert cluster["status"] == "READY", cluster["error"]
    assert cluster["gpus"][0]["gpu_type"] == "nvidia-h100-80gb"  # alias normalised to the canonical name
    assert cluster["facts"]["simulated_gpus"] is True  # no GPU here: replicas run the simulated runtime
    assert cluster["facts"]["runtime_smoke_ms"] > 0  # a replica really started and answered /health

    # The run is in Temporal's history (what the Web UI shows) and its progress query answers.
    handle = temporal_client.get_workflow_handle(body["workflow_id"])
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    assert description.workflow_type == "RegisterCluster"
    assert await handle.query(RegisterCluster.progress) == "done"


async def test_local_cluster_is_registered_on_first_start(api, control_worker):
    listed = (await api.get("/api/clusters")).json()
    local = next(c for c in listed if c["name"] == "local" and c["project_id"] is None)
    ready = await wait_for_cluster_status(api, local["id"], {"READY", "FAILED"})
    assert ready["status"] == "READY", ready["error"]
    assert ready["gpus"] == [{"gpu_type": "nvidia-h100-80gb", "count": 8, "gpus_per_node": 8, "price_per_hour": None}]


async def test_unreachable_kubernetes_cluster_fails_with_reason(
    time_skipping_env: WorkflowEnvironment, settings, db_pool, worker_clients
):
    """Retries run out (time skipped) and the cluster is FAILED with the probe's message, not a stack trace."""
    spec = ClusterSpec(name=unique("remote"), kind="kubernetes", kubeconfig=unreachable_kubeconfig(),
                       gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    async with db_pool.acquire() as conn:
        row = await cluster_store.insert_cluster(conn, None, spec)
    queue = unique("ts-control")
    setup = setup_for(settings.control_queue, worker_clients)
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=setup.workflows, activities=setup.activities):
        try:
            await time_skipping_env.client.execute_workflow(
                RegisterCluster.run, RegisterClusterInput(cluster_id=row.id, spec=spec),
                id=f"register-cluster-{uuid.uuid4()}", task_queue=queue,
            )
            raise AssertionError("registration of an unreachable cluster must fail")
        except WorkflowFailureError as failure:
            assert "cannot list nodes" in str(failure.cause)
    async with db_pool.acquire() as conn:
        stored = await cluster_store.get_cluster(conn, row.id)
    assert stored.status == ClusterStatus.FAILED
    assert stored.error.startswith("cannot list nodes")
