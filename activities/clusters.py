"""Activities of RegisterCluster: probe through the cluster backend, record the status in PostgreSQL."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.releases import backend_errors
from clusters.resolver import BackendResolver
from core.logging import get_logger
from control.payloads.clusters import ClusterFacts, ClusterStatusUpdate, ProbeClusterInput
from control.store import clusters

log = get_logger(__name__)


class ClusterActivities:
    def __init__(self, pool: asyncpg.Pool, backends: BackendResolver):
        self.pool = pool
        self.backends = backends

    @activity.defn
    async def probe_cluster(self, request: ProbeClusterInput) -> ClusterFacts:
        log.info("probing cluster", cluster_id=str(request.cluster_id), kind=request.spec.kind)
        with backend_errors():
            backend = self.backends.for_cluster(request.cluster_id, request.spec.kind, request.spec.kubeconfig)
            return await backend.probe(request.spec, heartbeat=activity.heartbeat)

    @activity.defn
    async def set_cluster_status(self, update: ClusterStatusUpdate) -> None:
        async with self.pool.acquire() as conn:
            await clusters.update_status(conn, update.cluster_id, update.status, update.facts, update.error)
        log.info("cluster status", cluster_id=str(update.cluster_id), status=update.status.value)
