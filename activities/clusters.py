"""Activities of RegisterCluster: probe through the cluster backend, record the status in PostgreSQL."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.releases import backend_errors
from clusters.kubernetes import KubernetesBackend
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
        """The workflow's spec carries no kubeconfig: the sealed copy is read here and opened by the resolver."""
        log.info("probing cluster", cluster_id=str(request.cluster_id), kind=request.spec.kind)
        sealed = None
        if request.spec.kind == "kubernetes":
            async with self.pool.acquire() as conn:
                stored = await clusters.get_cluster_with_kubeconfig(conn, request.cluster_id)
            sealed = stored.kubeconfig if stored is not None else None
        with backend_errors():
            backend = self.backends.for_cluster(request.cluster_id, request.spec.kind, sealed)
            spec = request.spec
            if isinstance(backend, KubernetesBackend):
                spec = spec.model_copy(update={"kubeconfig": backend.kubeconfig})
            return await backend.probe(spec, heartbeat=activity.heartbeat)

    @activity.defn
    async def set_cluster_status(self, update: ClusterStatusUpdate) -> None:
        async with self.pool.acquire() as conn:
            await clusters.update_status(conn, update.cluster_id, update.status, update.facts, update.error)
        log.info("cluster status", cluster_id=str(update.cluster_id), status=update.status.value)
