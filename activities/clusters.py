"""Activities of RegisterCluster: probe through the cluster backend, record the status in PostgreSQL."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clusters.kubernetes import InventoryMismatch, KubernetesBackend
from clusters.local import LocalBackend
from core.logging import get_logger
from control.payloads.clusters import ClusterFacts, ClusterStatusUpdate, ProbeClusterInput
from control.store import clusters

log = get_logger(__name__)


class ClusterActivities:
    def __init__(self, pool: asyncpg.Pool, local_backend: LocalBackend, kubernetes_backend: KubernetesBackend):
        self.pool = pool
        self.backends = {"local": local_backend, "kubernetes": kubernetes_backend}

    @activity.defn
    async def probe_cluster(self, request: ProbeClusterInput) -> ClusterFacts:
        log.info("probing cluster", cluster_id=str(request.cluster_id), kind=request.spec.kind)
        backend = self.backends[request.spec.kind]
        try:
            return await backend.probe(request.spec, heartbeat=activity.heartbeat)
        except InventoryMismatch as error:
            raise ApplicationError(str(error), type="InventoryMismatch", non_retryable=True) from error

    @activity.defn
    async def set_cluster_status(self, update: ClusterStatusUpdate) -> None:
        async with self.pool.acquire() as conn:
            await clusters.update_status(conn, update.cluster_id, update.status, update.facts, update.error)
        log.info("cluster status", cluster_id=str(update.cluster_id), status=update.status.value)
