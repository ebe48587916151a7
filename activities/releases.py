"""Activities on a cluster backend: apply a release, wait for it, delete it (local processes or Kubernetes + Helm)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clusters.base import ClusterBackend, DeploymentFailed
from clusters.drain import wait_drained
from clusters.kubernetes import InventoryMismatch
from clusters.resolver import BackendResolver, MissingKubeconfig, UnknownClusterKind, UnusableKubeconfig
from control import routing
from control.payloads.deployments import DeploymentSpec, DeploymentState, ReleaseRequest, WarmUpInput, WarmUpReport
from control.store import clusters, endpoints
from core.logging import get_logger

log = get_logger(__name__)
STOP_ROOM_S = 180  # of an attempt's start-to-close time, kept for stopping the replicas after their drain

# Backend errors no retry can fix; anything else (ClusterUnreachable, OSError, ...) is transient and retried.
WARMUP_PROMPT = [{"role": "user", "content": "Warm up: reply with a few words."}]
WARMUP_TIMEOUT_S = 60.0

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
    def __init__(self, pool: asyncpg.Pool, backends: BackendResolver, drain_timeout_s: float = 30):
        self.pool = pool
        self.backends = backends
        self.drain_timeout_s = drain_timeout_s

    async def drain(self, backend: ClusterBackend, spec: DeploymentSpec, deleting: bool) -> list[str]:
        """The one drain step before replicas stop: the replicas that applying `spec` (or deleting its release)
        stops leave the route (endpoint_replicas.ready = false, so the gateways drop them), then their in-flight
        requests get up to the drain timeout to finish, heartbeating meanwhile. Returns what happened to each (a
        tripped timeout says so: the replica is stopped anyway). Running it again finds nothing left to drain."""
        leaving = backend.leaving(spec, deleting)
        if not leaving:
            return []
        async with self.pool.acquire() as conn:
            await endpoints.mark_replicas_unready(conn, spec.endpoint_id, [url for _, url in leaving])
            # Count in-flight requests only once every live gateway has dropped the replicas from its table.
            propagation = await routing.wait_for_gateways(conn, on_wait=activity.heartbeat)
        if not propagation.propagated:
            log.warning("draining before every gateway dropped the replicas", detail=routing.describe(propagation))
        timeout_s = spec.drain_timeout_s or self.drain_timeout_s
        budget = activity.info().start_to_close_timeout
        room_s = budget.total_seconds() - STOP_ROOM_S if budget else 0
        if room_s > 0:  # the stop after the drain must still fit in this attempt
            timeout_s = min(timeout_s, room_s)
        outcomes = await wait_drained(leaving, timeout_s, activity.heartbeat)
        notes = [outcome.describe(timeout_s) for outcome in outcomes]
        log.info("drained before stopping", release=spec.release, notes=notes)
        return notes

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
        drained = await self.drain(backend, request.spec, deleting=False)
        with backend_errors():
            state = await backend.apply(request.spec, heartbeat=activity.heartbeat)
        return state.model_copy(update={"drain": drained}) if drained else state

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
    async def delete_release(self, request: ReleaseRequest) -> list[str]:
        """Drain, then remove the release; returns how each replica drained."""
        backend = await self.backend_for(request.cluster_id)
        drained = await self.drain(backend, request.spec, deleting=True)
        await backend.delete(request.spec, heartbeat=activity.heartbeat)
        return drained

    @activity.defn
    async def warm_up(self, request: WarmUpInput) -> WarmUpReport:
        """The gate before new replicas join the route: each answers `requests` streamed completions as a client
        would send them (200, tokens, [DONE]), and every one after the first (which may pay for compiling and
        caches) has its first token within `max_ttft_ms`. Ready on /health is not enough. A request not answered
        fails the attempt (the workflow tries a few times); a TTFT above the target fails for good, with the numbers."""
        body = {"model": request.served_model_name, "messages": WARMUP_PROMPT, "max_tokens": 8, "stream": True}
        report: dict[str, list[float]] = {}
        async with httpx.AsyncClient(timeout=WARMUP_TIMEOUT_S) as client:
            for url in request.urls:
                timings = []
                for attempt in range(request.requests):
                    ttft_ms = await _streamed_ttft_ms(client, f"{url}/v1/chat/completions", body)
                    activity.heartbeat()
                    if attempt > 0:
                        timings.append(round(ttft_ms, 2))
                report[url] = timings
                worst = max(timings)
                if worst > request.max_ttft_ms:
                    raise ApplicationError(
                        f"warm-up: replica {url} answered with TTFT {worst:.0f} ms, above the target "
                        f"{request.max_ttft_ms:g} ms (timed requests: {timings})", type="WarmUpFailed",
                        non_retryable=True)
        return WarmUpReport(ttft_ms=report)


async def _streamed_ttft_ms(client: httpx.AsyncClient, url: str, body: dict) -> float:
    """One streamed completion; its time to the first token in ms. A non-200, an error or a stream that does not
    end with [DONE] fails the warm-up."""
    started, first = time.perf_counter(), None
    try:
        async with client.stream("POST", url, json=body) as stream:
            if stream.status_code != 200:
                text = (await stream.aread()).decode(errors="replace")[:200]
                raise ApplicationError(f"warm-up: {url} answered HTTP {stream.status_code}: {text}",
                                       type="WarmUpUnanswered")
            done = False
            async for line in stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                json.loads(line[len("data: "):])
                if first is None:
                    first = time.perf_counter()
    except httpx.HTTPError as error:
        raise ApplicationError(f"warm-up: {url} failed: {type(error).__name__}: {error}",
                               type="WarmUpUnanswered") from error
    if not done or first is None:
        raise ApplicationError(f"warm-up: the stream from {url} ended without tokens and [DONE]",
                               type="WarmUpUnanswered")
    return (first - started) * 1000
