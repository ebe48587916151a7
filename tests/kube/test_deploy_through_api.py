"""Endpoints on a real Kubernetes control plane through the API: DeployEndpoint renders charts/bud-runtime and runs
the real Helm; kwok nodes with nvidia.com/gpu capacity make the scheduled pods Running and Ready."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client as k8s

from tests.model_files import write_tiny_llama
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    finish_with_a_new_worker,
    settled,
    wait_endpoint,
)
from tests.helpers import unique
from workflows.deploy_endpoint import DeployEndpoint
from control.payloads.deployments import DeployEndpointInput
from workflows.ids import deploy_endpoint_workflow_id

NAMESPACE = "bud-endpoints"


@pytest.fixture(scope="module")
async def kube_cluster_id(api, control_worker, kube_cluster):
    response = await api.post("/api/clusters", json={
        "name": unique("kube"), "kind": "kubernetes", "kubeconfig": kube_cluster.kubeconfig,
        "gpus": [{"gpu_type": "nvidia-h100-80gb", "count": 16}, {"gpu_type": "nvidia-l40s", "count": 4}]})
    assert response.status_code == 202, response.text
    cluster_id = response.json()["id"]
    cluster = await wait_until(api, f"/api/clusters/{cluster_id}", lambda c: c["status"] != "REGISTERING")
    assert cluster["status"] == "READY", cluster["error"]
    assert cluster["facts"]["observed_gpus"] == {"nvidia-h100-80gb": 16, "nvidia-l40s": 4}
    return cluster_id


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("kube-model") / "m"))


async def wait_until(api, path: str, done, timeout: float = 120) -> dict:
    async with asyncio.timeout(timeout):
        while not done(body := (await api.get(path)).json()):
            await asyncio.sleep(0.3)
    return body


def apps(kube_cluster) -> k8s.AppsV1Api:
    return k8s.AppsV1Api(kube_cluster.api_client())


def core(kube_cluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(kube_cluster.api_client())


def release_of(endpoint: dict) -> str:
    return f"ep-{endpoint['id'][:8]}"


async def deploy(api, endpoint_id: str) -> dict:
    response = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert response.status_code == 202, response.text
    return await wait_endpoint(api, endpoint_id, settled, timeout=240)


async def held_gpus(db_pool, endpoint_id: str) -> int:
    return await db_pool.fetchval("SELECT COALESCE(sum(count), 0) FROM gpu_reservations WHERE endpoint_id = $1",
                                  endpoint_id)


async def test_deploy_scale_delete_on_kubernetes(api, control_worker, optimizer_worker, kube_cluster, kube_cluster_id,
                                                 model, db_pool):
    endpoint = await create_endpoint(api, model["id"], kube_cluster_id)
    await configure_manual(api, endpoint["id"], replicas=2, tensor_parallel_size=2)
    running = await deploy(api, endpoint["id"])
    assert running["status"] == "RUNNING", running["error"]
    assert "kwok" in running["health"]["note"]  # honest: fake nodes run no container, so no test inference
    release = release_of(endpoint)

    deployment = apps(kube_cluster).read_namespaced_deployment(release, NAMESPACE)
    assert deployment.status.ready_replicas == 2
    container = deployment.spec.template.spec.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == container.resources.requests["nvidia.com/gpu"] == "2"
    pods = core(kube_cluster).list_namespaced_pod(NAMESPACE, label_selector=f"bud.ai/release={release}").items
    nodes = {node.metadata.name: node.metadata.labels for node in core(kube_cluster).list_node().items}
    assert len(pods) == 2
    assert all(nodes[pod.spec.node_name]["bud.ai/gpu-type"] == "nvidia-h100-80gb" for pod in pods)
    service = core(kube_cluster).read_namespaced_service(release, NAMESPACE)
    assert service.spec.ports[0].port == 8000

    assert (await api.post(f"/api/endpoints/{endpoint['id']}/scale", json={"replicas": 3})).status_code == 202
    await wait_until(api, f"/api/endpoints/{endpoint['id']}", lambda e: e["deployment"]["replicas"] == 3
                     and e["step"] == "running", timeout=180)
    assert apps(kube_cluster).read_namespaced_deployment(release, NAMESPACE).spec.replicas == 3

    # The autoscaling block becomes a HorizontalPodAutoscaler; disabling it removes the HPA again.
    autoscaling = f"/api/endpoints/{endpoint['id']}/autoscaling"
    response = await api.put(autoscaling, json={"enabled": True, "min_replicas": 2, "max_replicas": 4})
    assert response.status_code == 202, response.text
    applied = await wait_until(api, f"/api/endpoints/{endpoint['id']}",
                               lambda e: (e["autoscaling_state"] or {}).get("message") == "HorizontalPodAutoscaler applied")
    assert applied["autoscaling"]["max_replicas"] == 4
    hpa = k8s.AutoscalingV2Api(kube_cluster.api_client()).read_namespaced_horizontal_pod_autoscaler(release, NAMESPACE)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    assert {m.type for m in hpa.spec.metrics} == {"Resource", "External"}
    assert await held_gpus(db_pool, endpoint["id"]) == 2 * 4  # TP2 x max_replicas: the HPA may add pods any time
    too_big = await api.put(autoscaling, json={"enabled": True, "min_replicas": 2, "max_replicas": 9})
    assert too_big.status_code == 409 and too_big.json()["error"]["details"]["field"] == "max_replicas"
    response = await api.put(autoscaling, json={"enabled": False, "min_replicas": 2, "max_replicas": 4})
    assert response.status_code == 202
    await wait_until(api, f"/api/endpoints/{endpoint['id']}",
                     lambda e: (e["autoscaling_state"] or {}).get("message") == "HorizontalPodAutoscaler removed")
    remaining = k8s.AutoscalingV2Api(kube_cluster.api_client()).list_namespaced_horizontal_pod_autoscaler(NAMESPACE)
    assert [h.metadata.name for h in remaining.items if h.metadata.name == release] == []
    assert await held_gpus(db_pool, endpoint["id"]) == 2 * 3  # back to the replicas it runs

    assert (await api.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 202
    await wait_endpoint(api, endpoint["id"], lambda e: False, timeout=180)  # until 404
    assert apps(kube_cluster).list_namespaced_deployment(NAMESPACE, label_selector=f"bud.ai/release={release}").items == []
    assert core(kube_cluster).list_namespaced_service(NAMESPACE, label_selector=f"bud.ai/release={release}").items == []


async def test_gpus_taken_by_someone_else_leave_pods_pending_and_the_deploy_failed(
    api, control_worker, optimizer_worker, kube_cluster, kube_cluster_id, model
):
    """Another tenant holds every H100: our reservation passes, but the scheduler cannot place the pod."""
    hogs = []
    for index, node in enumerate(n.metadata.name for n in core(kube_cluster).list_node(
            label_selector="bud.ai/gpu-type=nvidia-h100-80gb").items):
        pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=f"gpu-hog-{index}"), spec=k8s.V1PodSpec(
            node_name=node, tolerations=[k8s.V1Toleration(operator="Exists")],
            containers=[k8s.V1Container(name="hog", image="busybox", resources=k8s.V1ResourceRequirements(
                requests={"nvidia.com/gpu": "8"}, limits={"nvidia.com/gpu": "8"}))]))
        hogs.append(core(kube_cluster).create_namespaced_pod("default", pod).metadata.name)
    try:
        endpoint = await create_endpoint(api, model["id"], kube_cluster_id)
        await configure_manual(api, endpoint["id"])
        failed = await deploy(api, endpoint["id"])
        assert failed["status"] == "FAILED"
        assert failed["error"]["step"] == "waiting for replicas"
        assert "Insufficient nvidia.com/gpu" in failed["error"]["reason"]
        release = release_of(endpoint)
        assert apps(kube_cluster).list_namespaced_deployment(NAMESPACE, label_selector=f"bud.ai/release={release}").items == []
    finally:
        for name in hogs:
            core(kube_cluster).delete_namespaced_pod(name, "default", grace_period_seconds=0)


async def test_worker_killed_mid_rollout_is_replaced_and_the_rollout_finishes(
    api, control_worker, optimizer_worker, kube_cluster, kube_cluster_id, model, settings, temporal_client,
    state_dir, start_worker
):
    endpoint = await create_endpoint(api, model["id"], kube_cluster_id)
    await configure_manual(api, endpoint["id"], replicas=2)
    queue_settings = settings.model_copy(update={"control_queue": unique("kube-crash")})
    handle = await temporal_client.start_workflow(
        DeployEndpoint.run, DeployEndpointInput(endpoint_id=endpoint["id"]),
        id=deploy_endpoint_workflow_id(endpoint["id"]), task_queue=queue_settings.control_queue)
    first = start_worker(queue_settings)
    await wait_endpoint(api, endpoint["id"], lambda e: e["step"] in ("deploying runtime", "waiting for replicas"))
    first.kill()
    running = await finish_with_a_new_worker(api, start_worker, queue_settings, handle, endpoint["id"], timeout=240)
    assert running["status"] == "RUNNING", running["error"]
    assert apps(kube_cluster).read_namespaced_deployment(release_of(endpoint), NAMESPACE).status.ready_replicas == 2
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False, timeout=180)
