"""The one place a worker gets a cluster backend from: built once per process (worker/clients.py), handed to the
activity classes, asked per call with the cluster's kind and its kubeconfig as stored (sealed).

    backends = BackendResolver(settings)
    backend = backends.for_cluster(cluster_id, "kubernetes", sealed_kubeconfig)  # the same object on later calls

Opening the kubeconfig here, and checking it again against the kubeconfig rules (core.kubeconfig) before any
client or helm sees it, means a row written around the API still cannot make a worker run a credential plugin.
"""

from __future__ import annotations

from uuid import UUID

from budsim.catalog import get_gpu
from clusters.base import ClusterBackend
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from core.gpu_types import CANONICAL_GPU_TYPES
from core.kubeconfig import KubeconfigRejected, parse_kubeconfig
from core.secrets import PREFIX as SEALED_PREFIX
from core.secrets import SecretUnreadable
from core.settings import Settings

KINDS = ("local", "kubernetes")


class UnknownClusterKind(Exception):
    """A cluster whose kind no backend serves (permanent: retrying cannot make one appear)."""


class MissingKubeconfig(Exception):
    """A Kubernetes cluster stored without a kubeconfig (permanent until the cluster is registered again)."""


class UnusableKubeconfig(Exception):
    """The stored kubeconfig cannot be opened with this worker's key, or breaks the kubeconfig rules (permanent)."""


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
        # cluster id -> (its kubeconfig as stored, the backend built from it): an unchanged stored value is not
        # decrypted and checked again on every activity call
        self._by_cluster: dict[UUID, tuple[str, KubernetesBackend]] = {}
        self._secrets = settings.secret_box()
        self._policy = settings.kubeconfig_policy

    def open_kubeconfig(self, cluster_id: UUID, stored: str) -> str:
        """The kubeconfig text from its stored form (sealed; plain only for rows from before sealing)."""
        try:
            text = self._secrets.open(stored) if stored.startswith(SEALED_PREFIX) else stored
            parse_kubeconfig(text, self._policy)
        except SecretUnreadable as error:
            raise UnusableKubeconfig(f"kubernetes cluster {cluster_id}: {error}") from None
        except KubeconfigRejected as error:
            raise UnusableKubeconfig(f"kubernetes cluster {cluster_id}: kubeconfig {error}") from None
        return text

    def for_cluster(self, cluster_id: UUID, kind: str, sealed_kubeconfig: str | None = None) -> ClusterBackend:
        if kind == "local":
            return self.local
        if kind == "kubernetes":
            if not sealed_kubeconfig:
                raise MissingKubeconfig(f"kubernetes cluster {cluster_id} has no kubeconfig")
            cached = self._by_cluster.get(cluster_id)
            if cached is not None and cached[0] == sealed_kubeconfig:
                return cached[1]
            backend = self._kubernetes.with_kubeconfig(self.open_kubeconfig(cluster_id, sealed_kubeconfig))
            self._by_cluster[cluster_id] = (sealed_kubeconfig, backend)
            return backend
        raise UnknownClusterKind(f"cluster {cluster_id} has kind {kind!r}; backends exist for {', '.join(KINDS)}")
