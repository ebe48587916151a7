"""Activities on a cluster backend: apply a release, wait for it, delete it (local processes or Kubernetes + Helm)."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clusters.base import ClusterBackend, ClusterUnreachable, DeploymentFailed
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from control.payloads.deployments import DeploymentState, ReleaseRequest
from core.settings import Settings
from control.store import clusters


class ReleaseActivities:
    def __init__(self, pool: asyncpg.Pool, local: LocalBackend, settings: Settings):
        self.pool = pool
        self.local = local
        self.settings = settings

    async def backend_for(self, cluster_id: UUID) -> ClusterBackend:
        async with self.pool.acquire() as conn:
            cluster = await clusters.get_cluster_with_kubeconfig(conn, cluster_id)
        if cluster is None:
            raise ApplicationError(f"cluster {cluster_id} no longer exists", non_retryable=True)
        if cluster["kind"] == "local":
            return self.local
        return KubernetesBackend(cluster["kubeconfig"], settings=self.settings)

    @activity.defn
    async def apply_release(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        try:
            return await backend.apply(request.spec, heartbeat=activity.heartbeat)
        except DeploymentFailed as error:
            raise ApplicationError(str(error), type="DeploymentFailed", non_retryable=True) from error

    @activity.defn
    async def wait_release_ready(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        try:
            await backend.wait_ready(request.spec, request.timeout_s, heartbeat=activity.heartbeat)
            return await backend.state(request.spec)
        except DeploymentFailed as error:
            raise ApplicationError(str(error), type="DeploymentFailed", non_retryable=True) from error
        except ClusterUnreachable:
            raise  # transient: retry

    @activity.defn
    async def release_state(self, request: ReleaseRequest) -> DeploymentState:
        backend = await self.backend_for(request.cluster_id)
        return await backend.state(request.spec)

    @activity.defn
    async def delete_release(self, request: ReleaseRequest) -> None:
        backend = await self.backend_for(request.cluster_id)
        await backend.delete(request.spec, heartbeat=activity.heartbeat)
