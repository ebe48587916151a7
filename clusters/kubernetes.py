"""The Kubernetes backend: talks to the API server with the cluster's kubeconfig (and, for deploys, Helm)."""

from __future__ import annotations

import asyncio
from collections import Counter

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from clusters.base import ClusterUnreachable
from core.gpu_types import canonical_gpu_type
from core.payloads.clusters import ClusterFacts, ClusterSpec

GPU_RESOURCE = "nvidia.com/gpu"
# Labels that name a node's GPU type: ours first, then the NVIDIA GPU feature discovery one.
GPU_TYPE_LABELS = ("bud.ai/gpu-type", "nvidia.com/gpu.product")


class InventoryMismatch(Exception):
    """The declared GPUs are not in the cluster (permanent until the user fixes the spec)."""


def api_client(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config_from_dict(yaml.safe_load(kubeconfig), client_configuration=configuration)
    configuration.retries = 0  # Temporal's retry policy decides when to try again, with backoff and a limit
    return k8s.ApiClient(configuration)


def node_gpu_type(labels: dict[str, str]) -> str | None:
    for label in GPU_TYPE_LABELS:
        value = labels.get(label)
        if value:
            try:
                return canonical_gpu_type(value)
            except ValueError:
                continue
    return None


def count_gpus(nodes: list) -> tuple[Counter, int]:
    observed: Counter = Counter()
    for node in nodes:
        allocatable = (node.status.allocatable or {}) if node.status else {}
        gpus = int(allocatable.get(GPU_RESOURCE, "0") or 0)
        gpu_type = node_gpu_type(node.metadata.labels or {})
        if gpus and gpu_type:
            observed[gpu_type] += gpus
    return observed, len(nodes)


def _root_cause(error: BaseException) -> str:
    """urllib3 nests the useful part ('Connection refused') several causes deep."""
    seen = error
    while getattr(seen, "reason", None) is not None and isinstance(seen.reason, BaseException):
        seen = seen.reason
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
    return f"{type(seen).__name__}: {seen}"


class KubernetesBackend:
    async def probe(self, spec: ClusterSpec, heartbeat) -> ClusterFacts:
        assert spec.kubeconfig, "kubernetes clusters carry a kubeconfig (validated by the API)"

        def list_nodes():
            with api_client(spec.kubeconfig) as api:
                return k8s.CoreV1Api(api).list_node(_request_timeout=10).items

        try:
            nodes = await asyncio.to_thread(list_nodes)
        except ApiException as error:
            raise ClusterUnreachable(f"cannot list nodes: HTTP {error.status} {error.reason}") from error
        except (Urllib3HTTPError, OSError) as error:
            raise ClusterUnreachable(f"cannot list nodes: {_root_cause(error)}") from error
        heartbeat()
        observed, node_count = count_gpus(nodes)
        short = [
            f"declared {pool.count} {pool.gpu_type} but the cluster's nodes offer {observed.get(pool.gpu_type, 0)}"
            for pool in spec.gpus
            if observed.get(pool.gpu_type, 0) < pool.count
        ]
        if short:
            raise InventoryMismatch("; ".join(short))
        return ClusterFacts(simulated_gpus=False, nodes=node_count, observed_gpus=dict(observed))
