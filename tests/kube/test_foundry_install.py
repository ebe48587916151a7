"""`helm install` of charts/bud-foundry (the control plane's own chart) on the local Kubernetes control plane: a real
kube-apiserver admits every object, the real controllers act on them (Deployments, the Job, the HPAs scaling to
their minimum, the disruption budget, EndpointSlices behind the Services) and Helm waits for all of it.

What kwok limits: it plays the kubelets, so pods bound to a node become Running and Ready and Job pods complete,
but no container runs: the image is never pulled, the probes never execute, the migration never touches a database
(`python -m core.migrate` itself is tested against PostgreSQL in tests/test_foundry_chart.py), and no metrics
server runs, so an HPA only enforces its minimum. KEDA's CRDs come from tests/fixtures/keda-crds.yaml and no KEDA
operator runs: the ScaledObjects are accepted and stored, nothing scales on them.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from clusters.helm import default_helm_binary
from devstack.kube import KubeCluster

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "charts" / "bud-foundry"
KEDA_CRDS = ROOT / "tests" / "fixtures" / "keda-crds.yaml"


def helm(cluster: KubeCluster, *args: str) -> str:
    result = subprocess.run([default_helm_binary(), "--kubeconfig", str(cluster.kubeconfig_path), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {args[0]} failed: {result.stderr}"
    return result.stdout


def install(cluster: KubeCluster, namespace: str, values: str, *extra: str, verb: str = "install") -> None:
    helm(cluster, verb, "bud", str(CHART), "-n", namespace, "-f", str(CHART / "ci" / f"{values}-values.yaml"),
         "--wait", "--wait-for-jobs", "--timeout", "180s", *extra)


def eventually(check: Callable[[], Any], timeout_s: float = 90, what: str = "") -> Any:
    """check()'s first truthy answer; controllers act on their own schedule."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f}s: {what}"
        time.sleep(0.5)


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
def namespace(api: k8s.ApiClient) -> Iterator[str]:
    name = f"bud-cp-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    try:
        k8s.CoreV1Api(api).delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def keda_crds(api: k8s.ApiClient) -> Iterator[None]:
    """The cluster serves keda.sh/v1alpha1 ScaledObject and TriggerAuthentication, as one with KEDA installed."""
    extensions = k8s.ApiextensionsV1Api(api)
    crds = list(yaml.safe_load_all(KEDA_CRDS.read_text()))
    for crd in crds:
        extensions.create_custom_resource_definition(crd)

    def established() -> bool:
        for crd in crds:
            status = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status
            if not any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                return False
        return True

    eventually(established, 30, "KEDA's CRDs established")
    yield
    for crd in crds:
        extensions.delete_custom_resource_definition(crd["metadata"]["name"])


def available(api: k8s.ApiClient, namespace: str) -> dict[str, int]:
    deployments = k8s.AppsV1Api(api).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d.status.available_replicas or 0 for d in deployments}


def ready_endpoints(api: k8s.ApiClient, namespace: str, service: str) -> int:
    slices = k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    return sum(1 for piece in slices for endpoint in piece.endpoints or [] if endpoint.conditions.ready)


def manifest_kinds(cluster: KubeCluster, namespace: str) -> set[str]:
    return {doc["kind"] for doc in yaml.safe_load_all(helm(cluster, "get", "manifest", "bud", "-n", namespace)) if doc}


def job_succeeded(api: k8s.ApiClient, namespace: str, name: str) -> bool:
    job = k8s.BatchV1Api(api).read_namespaced_job(name, namespace)
    return (job.status.succeeded or 0) == 1


def test_with_keda_the_control_plane_installs_and_every_object_becomes_available(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str, keda_crds: None
) -> None:
    certificate = {key: base64.b64encode(b"PEM").decode() for key in ("ca.crt", "tls.crt", "tls.key")}
    k8s.CoreV1Api(api).create_namespaced_secret(namespace, {"metadata": {"name": "temporal-client-tls"},
                                                            "data": certificate})
    install(kube_cluster, namespace, "keda")  # returns once Deployments are ready and the Job has completed

    status = yaml.safe_load(helm(kube_cluster, "status", "bud", "-n", namespace, "-o", "yaml"))
    assert status["info"]["status"] == "deployed"
    assert job_succeeded(api, namespace, "bud-migrate-1")

    # The gateway's HPA (the real controller) brings it to its minimum of 2; the workers' ScaledObjects have no
    # KEDA operator here, so their Deployments keep the one replica a Deployment without `replicas` starts with.
    counts = eventually(lambda: (c := available(api, namespace))["bud-gateway"] == 2 and c, 90,
                        "the gateway's HPA scales it to minReplicas")
    assert counts == {"bud-api": 2, "bud-gateway": 2, "bud-worker-control": 1, "bud-worker-optimizer": 1}
    assert eventually(lambda: ready_endpoints(api, namespace, "bud-api") == 2, 60, "API endpoints")
    assert eventually(lambda: ready_endpoints(api, namespace, "bud-gateway") == 2, 60, "gateway endpoints")

    custom = k8s.CustomObjectsApi(api)
    scaled = custom.list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")["items"]
    by_name = {item["metadata"]["name"]: item["spec"] for item in scaled}
    assert set(by_name) == {"bud-worker-control", "bud-worker-optimizer"}
    control = by_name["bud-worker-control"]
    assert control["scaleTargetRef"] == {"name": "bud-worker-control"}
    assert (control["minReplicaCount"], control["maxReplicaCount"]) == (1, 20)
    assert control["triggers"][0]["metadata"]["taskQueue"] == "bud-control"
    assert control["triggers"][0]["authenticationRef"] == {"name": "bud-temporal"}
    auth = custom.get_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "triggerauthentications",
                                               "bud-temporal")
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"ca", "cert", "key"}
    hpas = k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace).items
    assert [hpa.metadata.name for hpa in hpas] == ["bud-gateway"]  # the workers are KEDA's
    # No Prometheus Operator on this cluster: the chart left its ServiceMonitors out rather than fail.
    assert "ServiceMonitor" not in manifest_kinds(kube_cluster, namespace)

    pdb = eventually(lambda: (p := k8s.PolicyV1Api(api).read_namespaced_pod_disruption_budget(
        "bud-gateway", namespace)).status.current_healthy == 2 and p, 60, "the disruption budget counts 2 healthy")
    assert pdb.status.disruptions_allowed == 1

    # Every pod carries the hardening the chart asks for, as the API server stored it.
    for pod in k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=bud").items:
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
        assert pod.spec.containers[0].security_context.read_only_root_filesystem is True
        assert pod.spec.containers[0].security_context.capabilities.drop == ["ALL"]
        assert pod.spec.node_name  # scheduled
    helm(kube_cluster, "uninstall", "bud", "-n", namespace, "--wait")


def test_without_keda_workers_get_cpu_autoscalers_and_an_upgrade_keeps_the_generated_key(
    kube_cluster: KubeCluster, api: k8s.ApiClient, namespace: str
) -> None:
    install(kube_cluster, namespace, "default", "--set", "workers.autoscaling.keda=never")
    assert job_succeeded(api, namespace, "bud-migrate-1")
    hpas = k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace).items
    assert {hpa.metadata.name for hpa in hpas} == {"bud-gateway", "bud-worker-control", "bud-worker-optimizer"}
    # The real HPA controller brings each Deployment to its minimum (no metrics server: no further scaling).
    counts = eventually(lambda: (c := available(api, namespace))["bud-worker-control"] == 2
                        and c["bud-gateway"] == 2 and c, 90, "the HPAs scale to minReplicas")
    assert counts == {"bud-api": 2, "bud-gateway": 2, "bud-worker-control": 2, "bud-worker-optimizer": 1}
    workers = k8s.AppsV1Api(api).read_namespaced_deployment("bud-worker-control", namespace).spec.template.spec
    assert workers.termination_grace_period_seconds == 30

    core = k8s.CoreV1Api(api)
    key = core.read_namespaced_secret("bud-secrets", namespace).data["BUD_SECRET_KEY"]

    # An upgrade: a new migration Job replaces the last revision's, the generated key stays, the API grows.
    install(kube_cluster, namespace, "default", "--set", "workers.autoscaling.keda=never",
            "--set", "api.replicaCount=3", verb="upgrade")
    assert job_succeeded(api, namespace, "bud-migrate-2")
    assert eventually(lambda: {job.metadata.name for job in k8s.BatchV1Api(api).list_namespaced_job(namespace).items}
                      == {"bud-migrate-2"}, 30, "the last revision's Job removed")
    assert core.read_namespaced_secret("bud-secrets", namespace).data["BUD_SECRET_KEY"] == key
    assert eventually(lambda: available(api, namespace)["bud-api"] == 3, 60, "three API replicas")

    # Uninstalled, the release leaves its Secret: it holds the key that seals the stored kubeconfigs.
    helm(kube_cluster, "uninstall", "bud", "-n", namespace, "--wait")
    assert k8s.AppsV1Api(api).list_namespaced_deployment(namespace).items == []
    assert core.read_namespaced_secret("bud-secrets", namespace).data["BUD_SECRET_KEY"] == key
