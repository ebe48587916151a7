"""The local control plane schedules on GPU capacity like a real cluster: real scheduler, kwok kubelets."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from devstack.kube import GPU_RESOURCE, GPU_TYPE_LABEL, KubeCluster, NodePool

H100 = "nvidia-h100-80gb"


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
def namespace(api: k8s.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        30,
        "the namespace's default ServiceAccount",
    )
    yield name
    core.delete_namespace(name)


def gpu_container(gpus: int) -> dict:
    return {
        "name": "runtime",
        "image": "bud-runtime:test",  # kwok never pulls images
        "resources": {"limits": {GPU_RESOURCE: str(gpus)}, "requests": {GPU_RESOURCE: str(gpus)}},
    }


def test_nodes_are_ready_with_gpu_capacity_and_type_labels(api: k8s.ApiClient) -> None:
    nodes = {node.metadata.name: node for node in k8s.CoreV1Api(api).list_node().items}

    assert sorted(nodes) == ["h100-0", "h100-1", "l40s-0"]
    for node in nodes.values():
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], node.metadata.name
    gpus = {
        name: (node.metadata.labels[GPU_TYPE_LABEL], node.status.allocatable[GPU_RESOURCE])
        for name, node in nodes.items()
    }
    assert gpus == {"h100-0": (H100, "8"), "h100-1": (H100, "8"), "l40s-0": ("nvidia-l40s", "4")}
    assert nodes["h100-0"].metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert nodes["h100-0"].status.capacity[GPU_RESOURCE] == "8"


def test_server_reports_the_pinned_kubernetes_version(api: k8s.ApiClient) -> None:
    version = k8s.VersionApi(api).get_code()
    assert (version.major, version.minor) == ("1", "36")
    assert version.git_version.startswith("v1.36.")


def test_gpu_deployment_becomes_available_on_h100_nodes(api: k8s.ApiClient, namespace: str) -> None:
    deployment = {
        "metadata": {"name": "llm"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "llm"}},
            "template": {
                "metadata": {"labels": {"app": "llm"}},
                "spec": {"nodeSelector": {GPU_TYPE_LABEL: H100}, "containers": [gpu_container(2)]},
            },
        },
    }
    apps = k8s.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment)

    wait_for(
        lambda: (apps.read_namespaced_deployment_status("llm", namespace).status.available_replicas or 0) == 3,
        90,
        "3 available replicas",
    )
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=llm").items
    assert len(pods) == 3
    assert {pod.spec.node_name for pod in pods} <= {"h100-0", "h100-1"}
    for pod in pods:
        assert pod.status.phase == "Running"
        assert [c.status for c in pod.status.conditions if c.type == "Ready"] == ["True"]


def test_pod_asking_more_gpus_than_any_node_has_stays_pending(api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(api)
    manifest = {"metadata": {"name": "too-big"}, "spec": {"containers": [gpu_container(16)]}}
    core.create_namespaced_pod(namespace, manifest)

    def failed_scheduling_messages() -> list[str]:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=too-big").items
        return [event.message for event in events if event.reason == "FailedScheduling"]

    messages = wait_for(failed_scheduling_messages, 60, "a FailedScheduling event")
    assert any("Insufficient nvidia.com/gpu" in message for message in messages), messages
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (reads /proc; kills nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_stop_leaves_no_processes(tmp_path: Path, kube_bin_dir: Path) -> None:
    state_dir = tmp_path / "teardown"
    pool = NodePool(name="small", count=1, gpus_per_node=1, gpu_type="nvidia-l4")
    with KubeCluster(state_dir, kube_bin_dir, [pool]) as cluster:
        pids = [process.pid for process in cluster.processes]
        assert len(pids) == 5
        assert sorted(processes_mentioning(str(state_dir))) == sorted(pids)
        with cluster.api_client() as api:
            assert [n.metadata.name for n in k8s.CoreV1Api(api).list_node().items] == ["small-0"]

    assert processes_mentioning(str(state_dir)) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
