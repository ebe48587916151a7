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
    await asyncio.wait_for(handle.result(), timeout=30)  # READY is recorded one step before the workflow returns
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


async def test_a_kubeconfig_that_would_run_a_command_is_refused_and_nothing_runs(api, tmp_path):
    marker = tmp_path / "pwned"
    plugin = unreachable_kubeconfig().replace(
        'user: {token: "x"}',
        f'user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, "touch {marker}"]}}}}')
    name = unique("evil")
    refused = await api.post("/api/clusters", json={"name": name, "kind": "kubernetes", "kubeconfig": plugin,
                                                   "gpus": [{"gpu_type": "h100_sxm", "count": 8}]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["field"] == "kubeconfig" and "users[0].user.exec" in error["message"]
    local_file = unreachable_kubeconfig().replace('user: {token: "x"}', 'user: {tokenFile: /etc/shadow}')
    refused = await api.post("/api/clusters", json={"name": name, "kind": "kubernetes", "kubeconfig": local_file,
                                                   "gpus": [{"gpu_type": "h100_sxm", "count": 8}]})
    assert refused.status_code == 422 and "tokenFile" in refused.json()["error"]["message"]
    assert name not in [c["name"] for c in (await api.get("/api/clusters")).json()]
    assert not marker.exists()


async def test_a_kubeconfig_is_sealed_at_rest_and_never_in_the_workflow_history(api, control_worker, db_pool,
                                                                                temporal_client):
    secret = f"token-{uuid.uuid4().hex}"
    kubeconfig = unreachable_kubeconfig().replace('token: "x"', f'token: "{secret}"')
    accepted = await api.post("/api/clusters", json={"name": unique("remote"), "kind": "kubernetes",
                                                    "kubeconfig": kubeconfig,
                                                    "gpus": [{"gpu_type": "h100_sxm", "count": 8}]})
    assert accepted.status_code == 202, accepted.text
    body = await wait_for_cluster_status(api, accepted.json()["id"], {"READY", "FAILED"}, timeout=120)
    assert body["status"] == "FAILED" and body["error"].startswith("cannot list nodes")  # the probe used it
    async with db_pool.acquire() as conn:
        stored = await cluster_store.get_cluster_with_kubeconfig(conn, uuid.UUID(body["id"]))
    assert stored.kubeconfig.startswith("fernet:") and secret not in stored.kubeconfig
    history = await temporal_client.get_workflow_handle(body["workflow_id"]).fetch_history()
    assert secret not in history.to_json()
    assert secret not in str(body)


async def test_kubeconfigs_stored_before_sealing_are_sealed_at_start(settings, db_pool):
    from api.bootstrap import seal_stored_secrets

    spec = ClusterSpec(name=unique("legacy"), kind="kubernetes", kubeconfig=unreachable_kubeconfig(),
                       gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    async with db_pool.acquire() as conn:
        row = await cluster_store.insert_cluster(conn, None, spec)  # written the old way: plain text
    await seal_stored_secrets(db_pool, settings)
    async with db_pool.acquire() as conn:
        stored = await cluster_store.get_cluster_with_kubeconfig(conn, row.id)
    assert stored.kubeconfig.startswith("fernet:")
    assert settings.secret_box().open(stored.kubeconfig) == spec.kubeconfig
