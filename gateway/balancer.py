"""Choosing where one request goes: an endpoint by weight, then that endpoint's least busy replica.

Endpoints are chosen by smooth weighted round robin (nginx's algorithm): over any window the split follows the weights
exactly and picks interleave (90/10 gives nine A's spread around each B, not runs). A replica that refused a
connection is skipped for `down_for_s`, then tried again. A fallback takes its turn whatever its weight (the
control plane stores fallbacks at weight 0): among fallbacks without weights the first usable one is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from gateway.routes import Backend


@dataclass(frozen=True)
class Choice:
    backend: Backend
    replica: str


class Balancer:
    def __init__(self, down_for_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.down_for_s = down_for_s
        self._clock = clock
        self._outstanding: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._current_weight: dict[tuple[str, str], float] = {}  # (route, endpoint_id) -> SWRR running weight
        self._tie_breaker = 0

    def outstanding(self, replica: str) -> int:
        return self._outstanding.get(replica, 0)

    def outstanding_by_replica(self) -> dict[str, int]:
        return dict(self._outstanding)

    def is_up(self, replica: str) -> bool:
        until = self._down_until.get(replica)
        return until is None or until <= self._clock()

    def mark_down(self, replica: str) -> None:
        self._down_until[replica] = self._clock() + self.down_for_s

    def acquire(self, replica: str) -> None:
        self._outstanding[replica] = self._outstanding.get(replica, 0) + 1

    def release(self, replica: str) -> None:
        left = self._outstanding.get(replica, 0) - 1
        if left > 0:
            self._outstanding[replica] = left
        else:
            self._outstanding.pop(replica, None)

    def forget_except(self, route_names: Collection[str], replicas: Collection[str]) -> None:
        """Drop state for routes and replicas that left the table (in-flight counts stay until released)."""
        self._down_until = {url: t for url, t in self._down_until.items() if url in replicas}
        self._current_weight = {k: w for k, w in self._current_weight.items() if k[0] in route_names}

    def choose(
        self,
        route: str,
        backends: Sequence[Backend],
        exclude: Collection[str] = (),
        max_outstanding: int | None = None,
    ) -> Choice | None:
        """An endpoint with a usable replica, by weight, and its replica with the fewest requests in flight.

        With `max_outstanding`, a replica that already has more requests in flight than that is not usable."""
        candidates: list[tuple[Backend, list[str]]] = []
        for backend in backends:
            if backend.weight <= 0 and not backend.fallback:
                continue
            usable = [url for url in backend.replicas if url not in exclude and self.is_up(url)]
            if max_outstanding is not None:
                usable = [url for url in usable if self._outstanding.get(url, 0) <= max_outstanding]
            if usable:
                candidates.append((backend, usable))
        if not candidates:
            return None
        backend, usable = self._pick_weighted(route, candidates)
        return Choice(backend, self._least_outstanding(usable))

    def _pick_weighted(self, route: str, candidates: list[tuple[Backend, list[str]]]) -> tuple[Backend, list[str]]:
        if len(candidates) == 1:
            return candidates[0]
        total = 0.0
        best: tuple[Backend, list[str]] | None = None
        best_weight = float("-inf")
        for candidate in candidates:
            backend = candidate[0]
            key = (route, backend.endpoint_id)
            weight = self._current_weight.get(key, 0.0) + backend.weight
            self._current_weight[key] = weight
            total += backend.weight
            if weight > best_weight:
                best, best_weight = candidate, weight
        assert best is not None
        self._current_weight[(route, best[0].endpoint_id)] -= total
        return best

    def _least_outstanding(self, replicas: list[str]) -> str:
        if len(replicas) == 1:
            return replicas[0]
        # Ties rotate, so idle replicas share a trickle of traffic instead of the first one taking it all.
        self._tie_breaker += 1
        start = self._tie_breaker % len(replicas)
        ordered = replicas[start:] + replicas[:start]
        return min(ordered, key=self.outstanding)
