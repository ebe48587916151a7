"""The one place a worker gets a cluster backend from: built once per process (worker/clients.py), handed to the
activity classes, asked per call with the cluster's kind and kubeconfig.

    backends = BackendResolver(settings)
    backend = backends.for_cluster(cluster_id, "kubernetes", kubeconfig)   # the same object on every later call
"""

from __future__ import annotations

from uuid import UUID

from budsim.catalog import get_gpu
from clusters.base import ClusterBackend
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from core.gpu_types import CANONICAL_GPU_TYPES
from core.settings import Settings

KINDS = ("local", "kubernetes")


class UnknownClusterKind(Exception):
    """A cluster whose kind no backend serves (permanent: retrying cannot make one appear)."""


class MissingKubeconfig(Exception):
    """A Kubernetes cluster stored without a kubeconfig (permanent until the cluster is registered again)."""


class BackendResolver:
    """The backend for each cluster, built from the settings on first use and kept for the worker's lifetime.

    The local cluster is platform-wide: every local cluster id gets the one LocalBackend (its replica records and
    supervisor live in the state directory). Each Kubernetes cluster gets its own KubernetesBackend with the
    settings' S3 address for its model-transfer init containers, cached by cluster id (and built again should the
    cluster's kubeconfig differ from the cached one's).
    """

    def __init__(self, settings: Settings):
        memory = {gpu_type: get_gpu(gpu_type).memory_gib for gpu_type in CANONICAL_GPU_TYPES}
        self.local = LocalBackend(settings.state_dir, gpu_memory_gb=memory)
        self._kubernetes = KubernetesBackend(settings=settings)  # no cluster: the settings every cluster shares
        self._by_cluster: dict[UUID, KubernetesBackend] = {}

    def for_cluster(self, cluster_id: UUID, kind: str, kubeconfig: str | None = None) -> ClusterBackend:
        if kind == "local":
            return self.local
        if kind == "kubernetes":
            if not kubeconfig:
                raise MissingKubeconfig(f"kubernetes cluster {cluster_id} has no kubeconfig")
            backend = self._by_cluster.get(cluster_id)
            if backend is None or backend.kubeconfig != kubeconfig:
                backend = self._by_cluster[cluster_id] = self._kubernetes.with_kubeconfig(kubeconfig)
            return backend
        raise UnknownClusterKind(f"cluster {cluster_id} has kind {kind!r}; backends exist for {', '.join(KINDS)}")
