"""Monitoring activities: read an endpoint's live metrics from Prometheus, judge them against the alert thresholds and
the predictor's interval for the deployed config under the load the window saw, keep a window with enough requests
as a production measurement, and store what was found."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from uuid import UUID

import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.endpoints import serving_release
from budsim.errors import InvalidRequest
from budsim.predictor import predict
from budsim.schemas import Method, OptimizationRequest, Workload
from core.logging import get_logger
from control.benchmarks import measured_config
from control.measurements import group_calibration
from control.monitoring import alerts, drift, drifting, reasons_to_reoptimize, too_few_requests
from control.errors import DomainError
from control.payloads.deployments import EndpointStatus, Resources, RuntimeConfig, WorkloadSpec
from control.payloads.measurements import MeasurementCreate, MeasurementSource, SourceKind
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
from control.store import clusters, endpoints, measurements, models, optimizations
from control.store.endpoints import EndpointRow
from control.store.models import ModelRow
from control.translate import serving_config
from core.model_facts import ModelArchitecture
from core.settings import Settings

log = get_logger(__name__)


def queries(release: str, window: str) -> dict[str, str]:
    """PromQL for the serving metrics of one release (replicas carry `release` from the backend's service discovery)."""
    selector = f'{{release="{release}"}}'

    def quantile(q: float, histogram: str) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{selector}[{window}])))"

    def mean(histogram: str) -> str:  # exact, however far below the finest bucket the values lie
        return f"sum(rate({histogram}_sum{selector}[{window}])) / sum(rate({histogram}_count{selector}[{window}]))"

    return {
        "requests_per_s": f"sum(rate(vllm:request_success_total{selector}[{window}]))",
        "requests": f"sum(increase(vllm:request_success_total{selector}[{window}]))",
        "ttft_mean_ms": mean("vllm:time_to_first_token_seconds") + " * 1000",
        "tpot_mean_ms": mean("vllm:time_per_output_token_seconds") + " * 1000",
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
        """The endpoint's metrics over the window, its alerts, measured vs the predicted interval, and (when
        warranted and the window saw enough requests) the window as a measurement and the optimization request that
        looks for a better config under the load it really gets, calibrated on the group's measurements."""
        async with self.pool.acquire() as conn:
            endpoint = await endpoints.get_endpoint(conn, request.endpoint_id)
            if endpoint is None:
                raise ApplicationError(f"endpoint {request.endpoint_id} no longer exists", non_retryable=True)
            model = await models.get_model(conn, endpoint.model_id)
        window_end = datetime.now(timezone.utc)
        promql = queries(serving_release(endpoint), f"{request.window_s}s")
        values = await asyncio.gather(*(self._query(query) for query in promql.values()))
        metrics = LiveMetrics(**dict(zip(promql, values)))
        expectation = await self._expectation(endpoint, model, metrics)
        firing = alerts(metrics, expectation)
        ratios = drift(metrics, expectation)
        no_advice = too_few_requests(metrics, request.window_s)
        reasons = reasons_to_reoptimize(firing, drifting(metrics, expectation))
        observation = Observation(endpoint_id=endpoint.id, endpoint_name=endpoint.name, window_s=request.window_s,
                                  metrics=metrics, expectation=expectation, alerts=firing, drift=ratios,
                                  reoptimize_because=reasons, no_advice=no_advice, project_id=endpoint.project_id,
                                  model_id=endpoint.model_id, cluster_id=endpoint.cluster_id)
        if no_advice is None and model is not None and endpoint.resources is not None:
            observation.measurement_id = await self._record_window(
                endpoint, model, metrics, window_end - timedelta(seconds=request.window_s), window_end)
            if reasons:
                observation.reoptimization = await self._reoptimization(endpoint, metrics)
        log.info("endpoint observed", endpoint=endpoint.name, alerts=firing, drift=ratios, no_advice=no_advice,
                 reoptimize=bool(observation.reoptimization))
        return observation

    @staticmethod
    def _measured_workload(metrics: LiveMetrics) -> WorkloadSpec:
        return WorkloadSpec(
            input_tokens=max(1, round(metrics.prompt_tokens_per_request or 1)),
            output_tokens=max(1, round(metrics.output_tokens_per_request or 1)),
            concurrency=max(1, round((metrics.running or 0) + (metrics.queue_depth or 0))),
        )

    async def _expectation(self, endpoint: EndpointRow, model: ModelRow | None, metrics: LiveMetrics) -> Expectation:
        """The deployed config predicted, with its P10-P90, under the load the window saw, calibrated on the
        group's measurements where there are some; without a measured load (or readable facts), the prediction
        the config was chosen on."""
        targets = {k: v for k, v in (endpoint.performance_targets or {}).items() if v}
        chosen = ((endpoint.recommendation or {}).get("recommendation") or {}).get("prediction") or {}
        fallback = Expectation(predicted_ttft_ms=chosen.get("ttft_ms"), predicted_tpot_ms=chosen.get("tpot_ms"),
                               ttft_p10_ms=chosen.get("ttft_p10_ms"), ttft_p90_ms=chosen.get("ttft_p90_ms"),
                               tpot_p10_ms=chosen.get("tpot_p10_ms"), tpot_p90_ms=chosen.get("tpot_p90_ms"),
                               basis="the prediction the config was chosen on", targets=targets)
        if model is None or not metrics.requests or metrics.prompt_tokens_per_request is None \
                or endpoint.resources is None or endpoint.config is None:
            return fallback
        try:
            facts = ModelArchitecture.model_validate(model.facts)
            gpu_type = Resources.model_validate(endpoint.resources).gpu_type
            serving = serving_config(RuntimeConfig.model_validate(endpoint.config), endpoint.replicas,
                                     endpoint.runtime, model.context_length)
        except (ValueError, TypeError):
            return fallback
        load = self._measured_workload(metrics)
        workload = Workload(input_tokens=load.input_tokens, output_tokens=load.output_tokens,
                            concurrency=load.concurrency)
        try:
            async with self.pool.acquire() as conn:
                calibration = await group_calibration(conn, endpoint.project_id, model.id, model.name, facts, gpu_type,
                                                      endpoint.runtime)
            p = await asyncio.to_thread(predict, facts, gpu_type, serving, workload, None, calibration)
        except (InvalidRequest, ValueError):
            return fallback
        basis = (f"the deployed config under the measured load ({workload.concurrency} running, "
                 f"{workload.input_tokens} in / {workload.output_tokens} out tokens), "
                 + (f"calibrated on {calibration.n} measurement(s)" if calibration else "uncalibrated"))
        return Expectation(predicted_ttft_ms=p.ttft_ms, predicted_tpot_ms=p.tpot_ms, ttft_p10_ms=p.ttft_p10_ms,
                           ttft_p90_ms=p.ttft_p90_ms, tpot_p10_ms=p.tpot_p10_ms, tpot_p90_ms=p.tpot_p90_ms,
                           basis=basis, targets=targets)

    async def _record_window(self, endpoint: EndpointRow, model: ModelRow, metrics: LiveMetrics,
                             window_start: datetime, window_end: datetime) -> UUID | None:
        """The window as a production measurement (once per Reoptimize run): the means from the histograms' sums
        and counts, the load it saw, the deployed config."""
        if metrics.ttft_mean_ms is None or metrics.tpot_mean_ms is None or metrics.prompt_tokens_per_request is None:
            return None
        try:
            config = measured_config(endpoint, model)
        except ValueError:
            return None
        load = self._measured_workload(metrics)

        def at_least_mean(p99: float | None, mean: float) -> float | None:
            return p99 if p99 is not None and p99 >= mean else None  # a bucket bound below the mean says nothing

        measurement = MeasurementCreate(
            model_id=config.model_id, model_name=config.model_name[:200], architecture=config.architecture,
            parameter_count=config.parameter_count, gpu_type=config.gpu_type, runtime=config.runtime,
            precision=config.precision, tp=config.tp, pp=config.pp, max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens, input_tokens=load.input_tokens,
            output_tokens=load.output_tokens, concurrency=load.concurrency,
            ttft_p50_ms=metrics.ttft_mean_ms, ttft_p99_ms=at_least_mean(metrics.ttft_p99_ms, metrics.ttft_mean_ms),
            tpot_p50_ms=metrics.tpot_mean_ms, throughput_tps=metrics.throughput_tps,
            request_count=round(metrics.requests or 0),
            source=MeasurementSource(kind=SourceKind.PRODUCTION, id=f"endpoint:{endpoint.id}",
                                     window_start=window_start, window_end=window_end))
        key = f"production:{endpoint.id}:{activity.info().workflow_run_id}"
        async with self.pool.acquire() as conn:
            row = await measurements.record_measurement(conn, endpoint.project_id, measurement, key)
        return row.id

    async def _reoptimization(self, endpoint: EndpointRow, metrics: LiveMetrics) -> OptimizationRequest:
        """The search for the endpoint's model, GPU type and targets under the load it really gets (the same
        builder the API uses); OptimizeDeployment calibrates it on the group's measurements, this window's
        included."""
        async with self.pool.acquire() as conn:
            model = await models.get_model(conn, endpoint.model_id)
            cluster = await clusters.get_cluster(conn, endpoint.cluster_id)
            try:
                return await optimization_request(
                    conn, model=model, cluster=cluster, endpoint_id=endpoint.id, runtime=endpoint.runtime,
                    method=Method.REGRESSOR, targets=endpoint.performance_targets,
                    workload=self._measured_workload(metrics),
                    gpu_type=Resources.model_validate(endpoint.resources).gpu_type)
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
