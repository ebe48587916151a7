"""Activities of the autoscaler: store the spec and its decisions, and sample the load of an endpoint's replicas."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.endpoints import serving_release
from activities.replica_metrics import scrape_ready_replicas
from clusters.resolver import BackendResolver
from control.payloads.autoscaling import AutoscalingRecord, LoadSample
from control.payloads.deployments import EndpointRef, Resources
from control.store import clusters, endpoints

# vLLM's gauges whose sum over replicas is inference_queue_depth
QUEUE_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running")
FINISHED_COUNTER = "vllm:request_success"  # requests a replica finished (by finish reason)
CPU_SAMPLE_S = 1.0


def queue_depth(metrics_text: str) -> float:
    """Requests waiting plus running in one replica's Prometheus exposition."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name in QUEUE_GAUGES:
            total += sum(sample.value for sample in family.samples)
    return total


def requests_finished(metrics_text: str) -> float:
    """Requests one replica finished since it started (its vLLM success counter, over every finish reason)."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == FINISHED_COUNTER:
            total += sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return total


class AutoscalingActivities:
    def __init__(self, pool: asyncpg.Pool, backends: BackendResolver, http: httpx.AsyncClient):
        self.pool = pool
        self.backends = backends
        self.http = http

    @activity.defn
    async def record_autoscaling(self, record: AutoscalingRecord) -> str:
        """Store the spec (and reset the shown state); returns the cluster kind, which decides who scales."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, record.endpoint_id)
            if endpoint is None:
                raise ApplicationError(f"endpoint {record.endpoint_id} no longer exists", non_retryable=True)
            cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
            await endpoints.set_autoscaling(conn, record.endpoint_id, record.spec.model_dump(mode="json"), record.state)
        return cluster.kind

    @activity.defn
    async def record_autoscaling_state(self, record: AutoscalingRecord) -> None:
        async with self.pool.acquire() as conn:
            await endpoints.set_autoscaling_state(conn, record.endpoint_id, record.state)

    @activity.defn
    async def sample_load(self, ref: EndpointRef) -> LoadSample:
        """Queue depth and finished requests from every ready replica's /metrics, CPU use of the local replica
        processes, and when the gateway last saw a request for the endpoint."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, ref.endpoint_id)
            last_request = await endpoints.last_request_at(conn, ref.endpoint_id) if endpoint else None
        if endpoint is None:
            return LoadSample(endpoint_status="DELETED", replicas=0)
        sample = LoadSample(endpoint_status=endpoint.status, replicas=endpoint.replicas,
                            ready_replicas=endpoint.ready_replicas,
                            last_request_at=last_request.timestamp() if last_request else None)
        if endpoint.status != "RUNNING":
            return sample
        texts = await scrape_ready_replicas(self.pool, self.http, ref.endpoint_id)
        if texts:
            sample.queue_depth = sum(queue_depth(text) for text in texts)
            sample.requests_finished = sum(requests_finished(text) for text in texts)
        if endpoint.replicas == 0:
            return sample
        cores = Resources.model_validate(endpoint.resources).cpu_cores or 1.0
        # Only local endpoints are sampled (Kubernetes has its HPA): their replicas are processes of this host.
        usage = await asyncio.to_thread(self.backends.local.replica_cpu_percent, serving_release(endpoint),
                                        CPU_SAMPLE_S)
        if usage:
            sample.cpu_utilization = sum(usage) / len(usage) / cores
        activity.heartbeat()
        return sample
