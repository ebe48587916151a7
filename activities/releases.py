"""Activities on a cluster backend: apply a release, wait for it, delete it (local processes or Kubernetes + Helm)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clusters.base import ClusterBackend, DeploymentFailed
from clusters.kubernetes import InventoryMismatch
from clusters.resolver import BackendResolver, MissingKubeconfig, UnknownClusterKind, UnusableKubeconfig
from control.payloads.deployments import DeploymentState, ReleaseRequest
from control.store import clusters

# Backend errors no retry can fix; anything else (ClusterUnreachable, OSError, ...) is transient and retried.
PERMANENT_BACKEND_ERRORS = (DeploymentFailed, InventoryMismatch, UnknownClusterKind, MissingKubeconfig,
                            UnusableKubeconfig)


@contextmanager
def backend_errors() -> Iterator[None]:
    """Around a backend call that may fail for good: a permanent backend error becomes a non-retryable
    ApplicationError typed after it, so the workflow reads the reason at once instead of retrying."""
    try:
        yield
    except PERMANENT_BACKEND_ERRORS as error:
        raise ApplicationError(str(error), type=type(error).__name__, non_retryable=True) from error


class ReleaseActivities:
    def __init__(self, pool: asyncpg.Pool, backends: BackendResolver):
        self.pool = pool
        self.backends = backends

    async def backend_for(self, cluster_id: UUID) -> ClusterBackend:
        async with self.pool.acquire() as conn:
            cluster = await clusters.get_cluster_with_kubeconfig(conn, cluster_id)
        if cluster is None:
            raise ApplicationError(f"cluster {cluster_id} no longer exists", non_retryable=True)
        with backend_errors():
            return self.backends.for_cluster(cluster_id, cluster.kind, cluster.kubeconfig)

    @activity.defn
    async def apply_release(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        with backend_errors():
            return await backend.apply(request.spec, heartbeat=activity.heartbeat)

    @activity.defn
    async def wait_release_ready(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        with backend_errors():
            await backend.wait_ready(request.spec, request.timeout_s, heartbeat=activity.heartbeat)
            return await backend.state(request.spec)

    @activity.defn
    async def release_state(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        return await backend.state(request.spec)

    @activity.defn
    async def delete_release(self, request: ReleaseRequest) -> None:
        backend = await self.backend_for(request.cluster_id)
        await backend.delete(request.spec, heartbeat=activity.heartbeat)
