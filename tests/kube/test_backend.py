"""KubernetesBackend against the local control plane (real API server and scheduler, kwok nodes) with the real Helm.

kwok only plays the kubelets: pods bound to a node become Running and Ready, but no container runs, so the model
copy and the runtime's probes never execute here. Scheduling, the Deployment controller and Helm are all real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from clusters.base import DeploymentFailed
from clusters.chart_values import ModelCache, S3Source
from clusters.helm import default_helm_binary
from clusters.kubernetes import KubernetesBackend
from control.payloads.autoscaling import AutoscalingSpec
from control.payloads.deployments import DeploymentSpec, Resources, RuntimeConfig
from core.settings import Settings
from devstack.kube import KubeCluster

H100 = "nvidia-h100-80gb"
H100_NODES = {"h100-0", "h100-1"}


class Beats:
    """Counts heartbeats, to show long calls report progress."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_details: object) -> None:
        self.count += 1


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
def namespace(api: k8s.ApiClient) -> Iterator[str]:
    """A namespace of its own per test; the backend creates it (helm --create-namespace)."""
    name = f"bud-t-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        k8s.CoreV1Api(api).delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def cache_class(api: k8s.ApiClient) -> Iterator[str]:
    """A storage class name with pre-made volumes: the test cluster has no provisioner, so model-cache claims bind
    to these (by the real PV controller). Each test gets its own class so claims never bind across tests."""
    core = k8s.CoreV1Api(api)
    storage_class = f"bud-test-{uuid.uuid4().hex[:8]}"
    names = [f"{storage_class}-{index}" for index in range(3)]
    for name in names:
        core.create_persistent_volume({
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "500Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": storage_class,
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{name}"},  # never mounted: kwok runs no containers
            },
        })
    yield storage_class
    for name in names:
        core.delete_persistent_volume(name)


@pytest.fixture
def backend(kube_cluster: KubeCluster, cache_class: str) -> KubernetesBackend:
    return KubernetesBackend(
        kube_cluster.kubeconfig,
        s3=S3Source(endpoint_url="http://s3.bud-system.svc:9000", access_key_id="bud", secret_access_key="secret"),
        model_cache=ModelCache(storage_class=cache_class, size="100Gi"),
        unschedulable_grace_s=3.0,
        poll_interval_s=0.3,
    )


def make_spec(namespace: str, *, replicas: int = 2, gpu_count: int = 2, gpu_type: str = H100) -> DeploymentSpec:
    endpoint_id = uuid.uuid4()
    return DeploymentSpec(
        endpoint_id=endpoint_id,
        release=f"ep-{endpoint_id.hex[:8]}",
        namespace=namespace,
        served_model_name="llama-3-8b",
        model_id=uuid.uuid4(),
        model_uri="s3://models/llama-3-8b/v1",
        model_sha256={"config.json": "0" * 64, "model.safetensors": "f" * 64},
        runtime="vllm",
        config=RuntimeConfig(tensor_parallel_size=gpu_count, max_model_len=8192, max_num_seqs=64),
        replicas=replicas,
        resources=Resources(gpu_type=gpu_type, gpu_count=gpu_count, cpu_cores=8, memory_gb=64),
        startup_timeout_s=600,
    )


def release_pods(api: k8s.ApiClient, spec: DeploymentSpec) -> list[k8s.V1Pod]:
    selector = f"app.kubernetes.io/instance={spec.release}"
    return k8s.CoreV1Api(api).list_namespaced_pod(spec.namespace, label_selector=selector).items


def helm_json(kube_cluster: KubeCluster, *args: str) -> dict:
    result = subprocess.run(
        [default_helm_binary(), *args, "--kubeconfig", str(kube_cluster.kubeconfig_path), "-o", "json"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout)


async def test_release_becomes_ready_on_h100_nodes_and_reapplying_changes_nothing(
    backend: KubernetesBackend, api: k8s.ApiClient, kube_cluster: KubeCluster, namespace: str
) -> None:
    spec = make_spec(namespace, replicas=2, gpu_count=2)
    beats = Beats()

    applied = await backend.apply(spec, beats)
    assert applied.exists and applied.desired_replicas == 2
    state = await backend.wait_ready(spec, timeout_s=90, heartbeat=beats)

    assert state.ready and state.ready_replicas == 2
    assert len(state.replicas) == 2
    assert {replica.node for replica in state.replicas} <= H100_NODES
    assert all(replica.ready and replica.phase == "Running" for replica in state.replicas)
    assert all(replica.url and replica.url.endswith(":8000") for replica in state.replicas)
    assert beats.count >= 2

    deployment = k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace)
    server = deployment.spec.template.spec.containers[0]
    assert server.resources.limits["nvidia.com/gpu"] == server.resources.requests["nvidia.com/gpu"] == "2"
    assert server.args[server.args.index("--tensor-parallel-size") + 1] == "2"
    assert deployment.spec.template.spec.node_selector == {"bud.ai/gpu-type": H100}
    assert deployment.metadata.labels["bud.ai/endpoint-id"] == str(spec.endpoint_id)

    service = k8s.CoreV1Api(api).read_namespaced_service(spec.release, namespace)
    assert [(port.name, port.port) for port in service.spec.ports] == [("http", 8000)]
    assert backend.service_url(spec) == f"http://{spec.release}.{namespace}.svc:8000"
    claim = k8s.CoreV1Api(api).read_namespaced_persistent_volume_claim(f"{spec.release}-model-cache", namespace)
    assert claim.status.phase == "Bound"

    # Applying the same spec again leaves the release, the Deployment and its pods exactly as they were.
    revision = helm_json(kube_cluster, "status", spec.release, "-n", namespace)["version"]
    pods_before = {pod.metadata.uid for pod in release_pods(api, spec)}
    again = await backend.apply(spec, beats)
    assert again.ready
    assert helm_json(kube_cluster, "status", spec.release, "-n", namespace)["version"] == revision
    after = k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace)
    assert after.metadata.generation == deployment.metadata.generation
    assert {pod.metadata.uid for pod in release_pods(api, spec)} == pods_before

    await backend.delete(spec, beats)



async def test_the_specs_autoscaling_block_becomes_an_hpa_and_dropping_it_gives_replicas_back(
    backend: KubernetesBackend, api: k8s.ApiClient, kube_cluster: KubeCluster, namespace: str
) -> None:
    """autoscaling enabled: the release carries the HPA and the Deployment leaves `replicas` to it; applied
    again without the block, the HPA goes and the Deployment gets the spec's count back. (No metrics server here:
    the HPA controller cannot compute CPU or queue depth, so it leaves a count inside min..max alone.)"""
    spec = make_spec(namespace, replicas=3, gpu_count=1)
    scaled = spec.model_copy(update={"autoscaling": AutoscalingSpec(min_replicas=2, max_replicas=4)})
    autoscaling = k8s.AutoscalingV2Api(api)

    await backend.apply(scaled, Beats())
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(spec.release, namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", spec.release)
    cpu, queue = hpa.spec.metrics
    assert (cpu.type, cpu.resource.name, cpu.resource.target.type) == ("Resource", "cpu", "Utilization")
    assert cpu.resource.target.average_utilization == 80
    assert (queue.type, queue.external.metric.name) == ("External", "inference_queue_depth")
    assert queue.external.metric.selector.match_labels == {"bud.ai/release": spec.release}
    assert (queue.external.target.type, queue.external.target.value) == ("Value", "100")
    deployed = await backend.helm.manifest(spec.release, namespace, kube_cluster.kubeconfig)
    deployment = next(doc for doc in yaml.safe_load_all(deployed) if doc and doc["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count

    await backend.apply(spec, Beats())  # the same release, autoscaling None
    with pytest.raises(ApiException) as missing:
        autoscaling.read_namespaced_horizontal_pod_autoscaler(spec.release, namespace)
    assert missing.value.status == 404
    assert autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items == []
    assert k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace).spec.replicas == 3
    assert helm_json(kube_cluster, "get", "values", spec.release, "-n", namespace)["autoscaling"] == {"enabled": False}
    await backend.delete(spec, Beats())


async def test_more_gpus_than_any_node_has_fails_with_the_schedulers_reason(
    backend: KubernetesBackend, api: k8s.ApiClient, namespace: str
) -> None:
    spec = make_spec(namespace, replicas=1, gpu_count=16)  # the biggest node has 8
    await backend.apply(spec, Beats())

    started = time.monotonic()
    with pytest.raises(DeploymentFailed) as failure:
        await backend.wait_ready(spec, timeout_s=120, heartbeat=Beats())

    assert "Insufficient nvidia.com/gpu" in str(failure.value)
    assert time.monotonic() - started < 60  # explained after the grace period, not at the timeout
    state = await backend.state(spec)
    assert [replica.phase for replica in state.replicas] == ["Pending"]
    assert any("Insufficient nvidia.com/gpu" in reason for reason in state.pending_reasons)
    await backend.delete(spec, Beats())


async def test_a_gpu_type_no_node_has_fails_with_no_matching_node(
    backend: KubernetesBackend, namespace: str
) -> None:
    spec = make_spec(namespace, replicas=1, gpu_count=1, gpu_type="nvidia-a100-80gb")
    await backend.apply(spec, Beats())

    with pytest.raises(DeploymentFailed) as failure:
        await backend.wait_ready(spec, timeout_s=120, heartbeat=Beats())

    assert "didn't match Pod's node affinity/selector" in str(failure.value)
    await backend.delete(spec, Beats())


async def test_scale_changes_the_replica_count_through_the_release_values(
    backend: KubernetesBackend, api: k8s.ApiClient, kube_cluster: KubeCluster, namespace: str
) -> None:
    spec = make_spec(namespace, replicas=2, gpu_count=2)
    await backend.apply(spec, Beats())
    await backend.wait_ready(spec, timeout_s=90, heartbeat=Beats())

    await backend.scale(spec, 3, Beats())
    state = await backend.wait_ready(spec.model_copy(update={"replicas": 3}), timeout_s=90, heartbeat=Beats())

    assert state.ready_replicas == 3 and state.desired_replicas == 3
    assert k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace).spec.replicas == 3
    assert len(release_pods(api, spec)) == 3
    values = helm_json(kube_cluster, "get", "values", spec.release, "-n", namespace)
    assert values["replicaCount"] == 3  # the Helm release stays the one source of truth

    await backend.scale(spec, 1, Beats())
    state = await backend.wait_ready(spec.model_copy(update={"replicas": 1}), timeout_s=90, heartbeat=Beats())
    assert state.desired_replicas == 1 and len(state.replicas) == 1
    await backend.delete(spec, Beats())


async def test_delete_removes_everything_and_a_second_delete_succeeds(
    backend: KubernetesBackend, api: k8s.ApiClient, kube_cluster: KubeCluster, namespace: str
) -> None:
    spec = make_spec(namespace, replicas=2, gpu_count=1)
    await backend.apply(spec, Beats())
    await backend.wait_ready(spec, timeout_s=90, heartbeat=Beats())
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    selector = f"app.kubernetes.io/instance={spec.release}"
    assert core.list_namespaced_secret(namespace, label_selector=selector).items  # the S3 credentials

    # keep_model_cache: everything goes but the claim holding the copied model.
    await backend.delete(spec, Beats(), keep_model_cache=True)
    assert apps.list_namespaced_deployment(namespace, label_selector=selector).items == []
    assert core.list_namespaced_service(namespace, label_selector=selector).items == []
    assert release_pods(api, spec) == []
    claims = core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector).items
    assert [claim.metadata.name for claim in claims] == [f"{spec.release}-model-cache"]

    await backend.delete(spec, Beats())  # deleting again succeeds, and now takes the claim too
    assert core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector).items == []
    for kind in ("secret", "config_map", "service"):
        listed = getattr(core, f"list_namespaced_{kind}")(namespace, label_selector=selector).items
        assert listed == [], kind
    state = await backend.state(spec)
    assert not state.exists and state.replicas == []
    await backend.delete(spec, Beats())


async def test_apply_recovers_a_release_left_pending_by_a_killed_helm(
    backend: KubernetesBackend, api: k8s.ApiClient, kube_cluster: KubeCluster, namespace: str, tmp_path
) -> None:
    """A worker killed during `helm upgrade` takes helm with it and leaves the release 'pending-upgrade', which
    blocks every later upgrade; the retried apply must finish the rollout anyway."""
    spec = make_spec(namespace, replicas=1, gpu_count=1)
    await backend.apply(spec, Beats())
    await backend.wait_ready(spec, timeout_s=90, heartbeat=Beats())

    # An upgrade that cannot finish (16 GPUs per pod), run with --wait and killed half-way.
    stuck = make_spec(namespace, replicas=1, gpu_count=16).model_copy(
        update={"release": spec.release, "endpoint_id": spec.endpoint_id, "model_id": spec.model_id}
    )
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(backend.values(stuck)))
    helm = subprocess.Popen(
        [default_helm_binary(), "upgrade", spec.release, str(backend.chart), "-n", namespace, "-f", str(values_file),
         "--wait", "--timeout", "5m", "--kubeconfig", str(kube_cluster.kubeconfig_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while helm_json(kube_cluster, "status", spec.release, "-n", namespace)["info"]["status"] != "pending-upgrade":
            assert time.monotonic() < deadline, "helm never started the upgrade"
            await asyncio.sleep(0.2)
    finally:
        os.kill(helm.pid, signal.SIGKILL)
        helm.wait()
    assert helm_json(kube_cluster, "status", spec.release, "-n", namespace)["info"]["status"] == "pending-upgrade"

    scaled = spec.model_copy(update={"replicas": 2})
    await backend.apply(scaled, Beats())
    state = await backend.wait_ready(scaled, timeout_s=90, heartbeat=Beats())

    assert state.ready_replicas == 2
    assert helm_json(kube_cluster, "status", spec.release, "-n", namespace)["info"]["status"] == "deployed"
    server = k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace).spec.template.spec.containers[0]
    assert server.resources.limits["nvidia.com/gpu"] == "1"
    await backend.delete(spec, Beats())


async def test_without_a_default_storage_class_each_pod_copies_into_its_own_empty_dir(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    """The worker's default backend (settings only) on a cluster with no StorageClass: a claim would never bind, so
    the model goes to an emptyDir per pod; the S3 source is the registry's store from the settings."""
    settings = Settings(s3_endpoint="http://10.0.0.5:9000", s3_access_key="ak", s3_secret_key="sk")
    backend = KubernetesBackend(settings=settings, unschedulable_grace_s=3.0, poll_interval_s=0.3)
    backend = backend.with_kubeconfig(kube_cluster.kubeconfig)
    spec = make_spec(namespace, replicas=1, gpu_count=4)

    await backend.apply(spec, Beats())
    state = await backend.wait_ready(spec, timeout_s=90, heartbeat=Beats())

    assert state.ready_replicas == 1
    assert {replica.node for replica in state.replicas} <= H100_NODES
    pod = k8s.AppsV1Api(api).read_namespaced_deployment(spec.release, namespace).spec.template.spec
    cache = next(volume for volume in pod.volumes if volume.name == "model-cache")
    assert cache.empty_dir is not None and cache.persistent_volume_claim is None
    env = {item.name: item for item in pod.init_containers[0].env}
    assert env["S3_ENDPOINT"].value == "http://10.0.0.5:9000"
    assert env["S3_BUCKET"].value == "models" and env["S3_PREFIX"].value == "llama-3-8b/v1"
    secret_name = env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.name
    secret = k8s.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
    assert set(secret.data) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert k8s.CoreV1Api(api).list_namespaced_persistent_volume_claim(namespace).items == []
    await backend.delete(spec, Beats())
    assert release_pods(api, spec) == []


async def test_pods_waiting_for_a_node_autoscaler_are_not_failed_early(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    """cluster-autoscaler announces a new node with a TriggeredScaleUp event: Pending is then expected to last, so
    only the overall timeout ends the wait (with the scheduler's reason)."""
    backend = KubernetesBackend(kube_cluster.kubeconfig, model_cache=ModelCache(enabled=False),
                                unschedulable_grace_s=1.0, poll_interval_s=0.2)
    spec = make_spec(namespace, replicas=1, gpu_count=16)
    await backend.apply(spec, Beats())
    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + 30
    while not (pods := release_pods(api, spec)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    pending = pods[0]
    core.create_namespaced_event(namespace, {  # what cluster-autoscaler writes
        "metadata": {"generateName": f"{pending.metadata.name}."},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pending.metadata.name,
                           "uid": pending.metadata.uid, "apiVersion": "v1"},
        "reason": "TriggeredScaleUp", "type": "Normal", "source": {"component": "cluster-autoscaler"},
        "message": "pod triggered scale-up: [{h100-pool 2->3 (max: 8)}]",
    })

    started = time.monotonic()
    with pytest.raises(DeploymentFailed) as failure:
        await backend.wait_ready(spec, timeout_s=3 * backend.unschedulable_grace_s, heartbeat=Beats())

    assert time.monotonic() - started >= 3 * backend.unschedulable_grace_s  # not failed after the 1 s grace
    assert str(failure.value).startswith("not ready after 3s: 0/1 replicas ready")
    assert "Insufficient nvidia.com/gpu" in str(failure.value)
    await backend.delete(spec, Beats())


async def test_a_model_cache_claim_that_never_binds_is_explained(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    backend = KubernetesBackend(
        kube_cluster.kubeconfig, model_cache=ModelCache(storage_class="no-such-class"),
        unschedulable_grace_s=1.0, volume_grace_s=3.0, poll_interval_s=0.3,
    )
    spec = make_spec(namespace, replicas=1, gpu_count=1)
    await backend.apply(spec, Beats())

    started = time.monotonic()
    with pytest.raises(DeploymentFailed) as failure:
        await backend.wait_ready(spec, timeout_s=60, heartbeat=Beats())

    assert "unbound immediate PersistentVolumeClaims" in str(failure.value)
    assert 3.0 <= time.monotonic() - started < 30  # the storage grace, not the scheduling one
    await backend.delete(spec, Beats())
