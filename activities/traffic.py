"""Activities of traffic shifts: check the plan, move route weights, and analyse each step of the canary."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.endpoints import invalid
from activities.replica_metrics import scrape_ready_replicas
from core.logging import get_logger
from control.payloads.deployments import EndpointRef, EndpointStatus
from control import canary
from control.payloads.traffic import ShiftPlan, ShiftRecord, StepProbe, TrafficShiftInput, Weights
from control.store import canary as canary_store
from control.store import endpoints, routes

log = get_logger(__name__)
QUEUE_GAUGE = "vllm:num_requests_waiting"
# The gateway writes its usage rows in batches about every second: a window is read once this much has passed
# since its end.
USAGE_SETTLE_S = 1.5


def waiting_per_replica(texts: list[str]) -> float | None:
    """Mean requests waiting per replica over the replicas' expositions (None when none answered)."""
    if not texts:
        return None
    waiting = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name == QUEUE_GAUGE:
                waiting += sum(sample.value for sample in family.samples)
    return waiting / len(texts)


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
    async def analyze_step(self, probe: StepProbe) -> dict:
        """The step's canary analysis: the canary's and stable version's figures over the window and the decision
        (what the route's shift record and the workflow history show)."""
        settle = (probe.window_to - datetime.now(UTC)).total_seconds() + USAGE_SETTLE_S
        if settle > 0:
            await asyncio.sleep(settle)
        async with self.pool.acquire() as conn:
            canary_side, stable_side = await canary_store.window_stats(
                conn, probe.project_id, probe.route_name, probe.canary_id, probe.stable_ids, probe.window_from,
                probe.window_to)
        canary_texts, *stable_texts = await asyncio.gather(
            scrape_ready_replicas(self.pool, self.http, probe.canary_id),
            *(scrape_ready_replicas(self.pool, self.http, endpoint) for endpoint in probe.stable_ids))
        canary_side = canary_side.model_copy(update={"queue_depth": waiting_per_replica(canary_texts)})
        stable_side = stable_side.model_copy(update={
            "queue_depth": waiting_per_replica([text for texts in stable_texts for text in texts])})
        decision = canary.decide(canary_side, stable_side, probe.slo)
        return {"weight": probe.weight, "window_s": round((probe.window_to - probe.window_from).total_seconds(), 1),
                "verdict": decision.verdict, "reasons": decision.reasons,
                "requests": canary_side.requests, "ttft_p99_ms": canary_side.figures()["ttft_p99_ms"],
                "canary": canary_side.figures(), "stable": stable_side.figures(),
                "baseline": None if decision.baseline is None else decision.baseline.figures(),
                "baseline_from": decision.baseline_from}
