"""Monitoring activities: read an endpoint's live metrics from Prometheus, judge them against the alert thresholds and
the optimizer's prediction, and store what was found."""

from __future__ import annotations

import asyncio
import math
from uuid import UUID

import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.endpoints import release_name
from budsim.schemas import Method, OptimizationRequest, ProductionCalibration
from core.logging import get_logger
from control.monitoring import alerts, drift, reasons_to_reoptimize
from control.errors import DomainError
from control.payloads.deployments import EndpointStatus, Resources, WorkloadSpec
from control.payloads.monitoring import (
    Expectation,
    LiveMetrics,
    MonitoringRecord,
    NewOptimization,
    Observation,
    ObserveRequest,
    ReoptimizeInput,
)
from control.planning import optimization_request
from control.store import clusters, endpoints, models, optimizations
from control.store.endpoints import EndpointRow
from core.settings import Settings

log = get_logger(__name__)


def queries(release: str, window: str) -> dict[str, str]:
    """PromQL for the serving metrics of one release (replicas carry `release` from the backend's service discovery)."""
    selector = f'{{release="{release}"}}'

    def quantile(q: float, histogram: str) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{selector}[{window}])))"

    return {
        "requests_per_s": f"sum(rate(vllm:request_success_total{selector}[{window}]))",
        "ttft_p50_ms": quantile(0.5, "vllm:time_to_first_token_seconds") + " * 1000",
        "ttft_p99_ms": quantile(0.99, "vllm:time_to_first_token_seconds") + " * 1000",
        "tpot_p50_ms": quantile(0.5, "vllm:time_per_output_token_seconds") + " * 1000",
        "inference_latency_p99_ms": quantile(0.99, "vllm:e2e_request_latency_seconds") + " * 1000",
        "throughput_tps": f"sum(rate(vllm:generation_tokens_total{selector}[{window}]))",
        "queue_depth": f"sum(avg_over_time(vllm:num_requests_waiting{selector}[{window}]))",
        "running": f"sum(avg_over_time(vllm:num_requests_running{selector}[{window}]))",
        "gpu_utilization": f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{selector}[{window}]))",
        "prompt_tokens_per_request": f"sum(rate(vllm:prompt_tokens_total{selector}[{window}])) / "
                                     f"sum(rate(vllm:request_success_total{selector}[{window}]))",
        "output_tokens_per_request": f"sum(rate(vllm:generation_tokens_total{selector}[{window}])) / "
                                     f"sum(rate(vllm:request_success_total{selector}[{window}]))",
    }


class MonitoringActivities:
    def __init__(self, pool: asyncpg.Pool, http: httpx.AsyncClient, settings: Settings):
        self.pool = pool
        self.http = http
        self.settings = settings

    @activity.defn
    async def running_endpoints(self, request: ReoptimizeInput) -> list[UUID]:
        async with self.pool.acquire() as conn:
            return await endpoints.ids_with_status(conn, EndpointStatus.RUNNING)

    async def _query(self, promql: str) -> float | None:
        try:
            response = await self.http.get(f"{self.settings.prometheus_url}/api/v1/query", params={"query": promql},
                                           timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as error:  # retried: Prometheus restarting is transient
            raise ApplicationError(f"Prometheus at {self.settings.prometheus_url} did not answer: {error}",
                                   type="PrometheusUnavailable") from error
        result = response.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None

    @activity.defn
    async def observe(self, request: ObserveRequest) -> Observation:
        """The endpoint's metrics over the window, its alerts, measured vs predicted, and (when warranted) the
        optimization request that looks for a better config under the load it really gets."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id)
            if endpoint is None:
                raise ApplicationError(f"endpoint {request.endpoint_id} no longer exists", non_retryable=True)
        promql = queries(release_name(endpoint.id), f"{request.window_s}s")
        values = await asyncio.gather(*(self._query(query) for query in promql.values()))
        metrics = LiveMetrics(**dict(zip(promql, values)))
        prediction = ((endpoint.recommendation or {}).get("recommendation") or {}).get("prediction") or {}
        expectation = Expectation(predicted_ttft_ms=prediction.get("ttft_ms"), predicted_tpot_ms=prediction.get("tpot_ms"),
                                  targets={k: v for k, v in (endpoint.performance_targets or {}).items() if v})
        firing = alerts(metrics, expectation)
        ratios = drift(metrics, expectation)
        reasons = reasons_to_reoptimize(firing, ratios)
        observation = Observation(endpoint_id=endpoint.id, endpoint_name=endpoint.name, window_s=request.window_s,
                                  metrics=metrics, expectation=expectation, alerts=firing, drift=ratios,
                                  reoptimize_because=reasons, project_id=endpoint.project_id,
                                  model_id=endpoint.model_id, cluster_id=endpoint.cluster_id)
        if reasons and endpoint.resources is not None and metrics.requests_per_s:
            observation.reoptimization = await self._reoptimization(endpoint, metrics, ratios)
        log.info("endpoint observed", endpoint=endpoint.name, alerts=firing, drift=ratios,
                 reoptimize=bool(observation.reoptimization))
        return observation

    async def _reoptimization(self, endpoint: EndpointRow, metrics: LiveMetrics,
                              ratios: dict[str, float]) -> OptimizationRequest:
        """The search for the endpoint's model, GPU type and targets under the load it really gets, with the
        predictor scaled by the measured / predicted ratios (the same builder the API uses)."""
        measured = WorkloadSpec(
            input_tokens=max(1, round(metrics.prompt_tokens_per_request or 1)),
            output_tokens=max(1, round(metrics.output_tokens_per_request or 1)),
            concurrency=max(1, round((metrics.running or 0) + (metrics.queue_depth or 0))),
        )
        calibration = ProductionCalibration(ttft_scale=min(max(ratios.get("ttft", 1.0), 0.02), 50),
                                            tpot_scale=min(max(ratios.get("tpot", 1.0), 0.02), 50))
        async with self.pool.acquire() as conn:
            model = await models.get_model(conn, endpoint.model_id)
            cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
            try:
                return await optimization_request(
                    conn, model=model, cluster=cluster, endpoint_id=endpoint.id, runtime=endpoint.runtime,
                    method=Method.REGRESSOR, targets=endpoint.performance_targets, workload=measured,
                    gpu_type=Resources.model_validate(endpoint.resources).gpu_type, calibration=calibration)
            except DomainError as error:  # e.g. the model was quarantined since: no advice, say why
                raise ApplicationError(f"no re-optimization: {error.message}", type="CannotReoptimize",
                                       non_retryable=True) from error

    @activity.defn
    async def create_optimization(self, request: NewOptimization) -> UUID:
        async with self.pool.acquire() as conn:
            row = await optimizations.insert(conn, request.project_id, None, request.model_id, request.cluster_id,
                                             request.request.model_dump(mode="json"))
        return row.id

    @activity.defn
    async def record_monitoring(self, record: MonitoringRecord) -> None:
        async with self.pool.acquire() as conn:
            await endpoints.set_monitoring(conn, record.endpoint_id, record.snapshot)
