"""Draining replicas before they stop: wait until each has no request in flight, bounded by a drain timeout.

The caller first takes the replicas out of the route (endpoint_replicas.ready = false), so the gateway stops sending
them new requests once it reloads its route table. A replica's in-flight count is what vLLM (and the simulated
runtime) reports on /metrics: vllm:num_requests_running + vllm:num_requests_waiting. A replica counts as drained once
that sum is 0 and the gateways have had ROUTE_SETTLE_S to drop it (a request routed just before the reload is still
waited for). A replica that does not answer /metrics has nothing left to lose and counts as drained once the gateways
had that time (a Kubernetes Service, unreachable from here, drains through its pods' preStop hook). When the drain
timeout trips the replica is stopped anyway, and the outcome says so.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from core.logging import get_logger

log = get_logger(__name__)
ROUTE_SETTLE_S = 1.5  # gateways reload their routes each second: after this a drained replica gets no new requests
POLL_S = 0.2
METRICS_TIMEOUT_S = 2.0
_IN_FLIGHT = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DrainOutcome:
    name: str
    url: str
    drained: bool  # False: the drain timeout tripped with requests still in flight
    in_flight: int  # requests in flight when the wait ended (0 when drained)
    waited_s: float

    def describe(self, timeout_s: float) -> str:
        if self.drained:
            return f"replica {self.name} drained in {self.waited_s:.1f}s"
        return (f"replica {self.name}: drain timeout {timeout_s:g}s tripped with {self.in_flight} request(s) in "
                "flight; stopped anyway")


def in_flight(metrics_text: str) -> int:
    """vllm:num_requests_running + vllm:num_requests_waiting from a Prometheus exposition (every label set)."""
    return int(sum(float(value) for value in _IN_FLIGHT.findall(metrics_text)))


async def _in_flight_of(client: httpx.AsyncClient, url: str) -> int | None:
    """The replica's in-flight count; None when it does not answer (stopped already, or unreachable from here)."""
    try:
        response = await client.get(f"{url.rstrip('/')}/metrics", timeout=METRICS_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return in_flight(response.text)


async def wait_drained(replicas: list[tuple[str, str]], timeout_s: float, heartbeat: Callable[..., None],
                       settle_s: float = ROUTE_SETTLE_S) -> list[DrainOutcome]:
    """Wait until every (name, url) in `replicas` has no request in flight, at most `timeout_s` (heartbeating with
    the counts); the replicas must already be out of the route."""
    started = time.monotonic()
    deadline = started + timeout_s
    pending = dict(replicas)
    counts: dict[str, int] = {}
    outcomes: list[DrainOutcome] = []
    async with httpx.AsyncClient() as client:
        while pending:
            now = time.monotonic()
            settled = now - started >= min(settle_s, timeout_s)
            answers = await asyncio.gather(*(_in_flight_of(client, url) for url in pending.values()))
            for (name, url), count in zip(list(pending.items()), answers):
                counts[name] = count or 0
                if settled and not count:
                    outcomes.append(DrainOutcome(name, url, True, 0, round(time.monotonic() - started, 3)))
                    del pending[name]
            heartbeat({"draining": {name: counts[name] for name in pending}})
            if not pending:
                break
            if time.monotonic() >= deadline:
                for name, url in pending.items():
                    outcomes.append(DrainOutcome(name, url, False, counts[name], round(time.monotonic() - started, 3)))
                    log.warning("drain timeout tripped; stopping the replica anyway", replica=name,
                                in_flight=counts[name], timeout_s=timeout_s)
                break
            await asyncio.sleep(POLL_S)
    for outcome in outcomes:
        if outcome.drained:
            log.info("replica drained", replica=outcome.name, waited_s=outcome.waited_s)
    return outcomes
