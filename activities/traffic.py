"""Activities of traffic shifts: check the plan, move route weights, and read the new endpoint's live latency."""

from __future__ import annotations

import asyncio
import math

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.endpoints import invalid
from activities.replica_metrics import scrape_ready_replicas
from core.logging import get_logger
from control.payloads.deployments import EndpointRef, EndpointStatus
from control.payloads.traffic import ShiftPlan, ShiftRecord, SloProbe, SloReading, TrafficShiftInput, Weights
from control.store import endpoints, routes

log = get_logger(__name__)
# vLLM's histograms the SLO gate reads (seconds): time to first token and whole-request latency
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
LATENCY_HISTOGRAM = "vllm:e2e_request_latency_seconds"


def histogram_counters(metrics_text: str) -> dict[str, float]:
    """Cumulative bucket counts of the two histograms, keyed '<histogram>|<le>', from one exposition."""
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in (TTFT_HISTOGRAM, LATENCY_HISTOGRAM):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = f"{family.name}|{sample.labels['le']}"
                counters[key] = counters.get(key, 0.0) + sample.value
    return counters


def p99_ms(delta: dict[str, float], histogram: str) -> tuple[float | None, int]:
    """(upper bound of the bucket holding the 99th percentile in ms, requests) over a window of bucket deltas."""
    buckets = sorted(((float(key.split("|")[1]), count) for key, count in delta.items()
                      if key.startswith(histogram + "|")), key=lambda b: b[0])
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None, 0
    finite = [bound for bound, _ in buckets if math.isfinite(bound)]
    for bound, count in buckets:
        if count >= 0.99 * total:
            # past the last finite bucket the p99 is at least that bound (JSON has no infinity)
            return (bound if math.isfinite(bound) else (finite[-1] if finite else 0.0)) * 1000.0, int(total)
    return (finite[-1] if finite else 0.0) * 1000.0, int(total)


class TrafficActivities:
    def __init__(self, pool: asyncpg.Pool, http: httpx.AsyncClient):
        self.pool = pool
        self.http = http

    @activity.defn
    async def load_shift_plan(self, request: TrafficShiftInput) -> ShiftPlan:
        async with self.pool.acquire() as conn:
            route = await routes.get_route(conn, request.route_name, request.project_id)
            target = await endpoints.get_endpoint(conn, request.request.to_endpoint_id, request.project_id)
        if route is None:
            raise invalid(f"route {request.route_name} does not exist")
        if target is None or target.status != EndpointStatus.RUNNING:
            state = "does not exist" if target is None else f"is {target.status}, not RUNNING"
            raise invalid(f"endpoint {request.request.to_endpoint_id} {state}")
        original = {backend.endpoint_id: backend.weight for backend in route.backends}
        return ShiftPlan(route_name=request.route_name, original=original, to_endpoint_id=target.id,
                         to_endpoint_name=target.name)

    @activity.defn
    async def check_endpoint_serves(self, ref: EndpointRef) -> int:
        """Every ready replica of the new endpoint answers /health now (validating the new version)."""
        async with self.pool.acquire() as conn:
            urls = await endpoints.ready_replica_urls(conn, ref.endpoint_id)
        if not urls:
            raise invalid("the new endpoint has no ready replica")
        answers = await asyncio.gather(*(self.http.get(f"{url}/health", timeout=5) for url in urls),
                                       return_exceptions=True)
        failing = [url for url, answer in zip(urls, answers)
                   if isinstance(answer, BaseException) or answer.status_code != 200]
        if failing:
            raise ApplicationError(f"replicas not healthy: {', '.join(failing)}", type="Unhealthy")
        return len(urls)

    @activity.defn
    async def set_route_weights(self, request: Weights) -> None:
        """Set the weights in one transaction. An endpoint deleted meanwhile is left out (it must not get traffic
        back); failing when no RUNNING endpoint would carry traffic."""
        async with self.pool.acquire() as conn:
            route = await routes.get_route(conn, request.route_name)
            if route is None:
                raise invalid(f"route {request.route_name} no longer exists")
            status_of = await endpoints.statuses(conn, list(request.weights))
            live = {endpoint for endpoint, state in status_of.items()
                    if state not in (EndpointStatus.DELETING, EndpointStatus.DELETED)}
            weights = {endpoint: weight for endpoint, weight in request.weights.items() if endpoint in live}
            running = {endpoint for endpoint, state in status_of.items() if state == EndpointStatus.RUNNING}
            if not any(weight > 0 and endpoint in running for endpoint, weight in weights.items()):
                raise invalid(f"no RUNNING endpoint would carry route {request.route_name}'s traffic")
            await routes.set_weights(conn, request.route_name, route.project_id, weights)
        log.info("route weights", route=request.route_name, weights={str(k): v for k, v in weights.items()})

    @activity.defn
    async def record_shift(self, record: ShiftRecord) -> None:
        async with self.pool.acquire() as conn:
            await routes.set_shift(conn, record.route_name, record.state)

    @activity.defn
    async def read_slo(self, probe: SloProbe) -> SloReading:
        """The new endpoint's latency histograms summed over its replicas, and the p99s since `probe.baseline`."""
        texts = await scrape_ready_replicas(self.pool, self.http, probe.endpoint_id)
        counters: dict[str, float] = {}
        for text in texts:
            for key, value in histogram_counters(text).items():
                counters[key] = counters.get(key, 0.0) + value
        delta = {key: max(value - probe.baseline.get(key, 0.0), 0.0) for key, value in counters.items()}
        ttft, requests = p99_ms(delta, TTFT_HISTOGRAM)
        latency, _ = p99_ms(delta, LATENCY_HISTOGRAM)
        return SloReading(counters=counters, requests=requests, ttft_p99_ms=ttft, latency_p99_ms=latency,
                          replicas_read=len(texts))
