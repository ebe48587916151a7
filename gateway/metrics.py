"""The gateway's Prometheus metrics (one registry per gateway instance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNKNOWN = "_unknown"  # label for models that have no route: client-chosen strings must not become label values

M = TypeVar("M", Counter, Gauge, Histogram)


class _Labelled(Generic[M]):
    """A labelled metric whose child per label set is looked up once: prometheus_client's labels() validates the
    values and takes a lock on every call, several times per proxied request. The label values are bounded (routes of
    the table, projects of loaded keys, statuses), and prometheus_client keeps every child anyway."""

    __slots__ = ("metric", "_children")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class _StateGauges(Collector):
    """Route count and per-replica outstanding requests, read at scrape time."""

    def __init__(self, route_count: Callable[[], int], outstanding: Callable[[], dict[str, int]]) -> None:
        self._route_count = route_count
        self._outstanding = outstanding

    def collect(self) -> Iterable[Metric]:
        routes = GaugeMetricFamily("bud_gateway_routes", "Model names the gateway currently routes.")
        routes.add_metric([], float(self._route_count()))
        yield routes
        outstanding = GaugeMetricFamily(
            "bud_gateway_replica_outstanding_requests", "Requests in flight per replica.", labels=["replica"]
        )
        for replica, count in sorted(self._outstanding().items()):
            outstanding.add_metric([replica], float(count))
        yield outstanding


class GatewayMetrics:
    def __init__(self, route_count: Callable[[], int], outstanding: Callable[[], dict[str, int]]) -> None:
        self.registry = reg = CollectorRegistry()
        self.requests = _Labelled(Counter(
            "bud_gateway_requests",
            "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=reg,
        ))
        self.upstream_latency = _Labelled(Histogram(
            "bud_gateway_upstream_latency_seconds",
            "From sending a request upstream to its first response byte (the TTFT of a stream).",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ))
        self.duration = _Labelled(Histogram(
            "bud_gateway_request_duration_seconds",
            "From request arrival to the last byte relayed.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ))
        self.in_flight = _Labelled(
            Gauge("bud_gateway_requests_in_flight", "Requests being proxied now.", ["model"], registry=reg)
        )
        self.upstream_errors = _Labelled(Counter(
            "bud_gateway_upstream_errors",
            "Upstream failures by endpoint and kind (connect, protocol, timeout).",
            ["endpoint", "kind"],
            registry=reg,
        ))
        # Metering by who used what: project id, route and backend (endpoint id or provider/model). Only routes of
        # the table and projects of loaded keys become label values (client-chosen strings never do).
        self.project_requests = _Labelled(Counter(
            "bud_gateway_project_requests",
            "Requests by project, route, backend and HTTP status (401s under project _none).",
            ["project", "route", "backend", "status"],
            registry=reg,
        ))
        self.prompt_tokens = _Labelled(Counter(
            "bud_gateway_prompt_tokens", "Prompt tokens of completed answers.", ["project", "route", "backend"],
            registry=reg,
        ))
        self.completion_tokens = _Labelled(Counter(
            "bud_gateway_completion_tokens", "Completion tokens of completed answers.", ["project", "route", "backend"],
            registry=reg,
        ))
        self.limit_store_errors = Counter(
            "bud_gateway_limit_store_errors",
            "Redis calls of the limiter that failed (requests were admitted without limits: fail open).",
            registry=reg,
        )
        self.rate_limited = _Labelled(Counter(
            "bud_gateway_rate_limited", "Requests refused with 429, by limit (rpm, tpm, quota).", ["limit"],
            registry=reg,
        ))
        self.usage_rows_written = Counter(
            "bud_gateway_usage_rows_written", "Usage rows written to PostgreSQL.", registry=reg
        )
        self.usage_rows_dropped = Counter(
            "bud_gateway_usage_rows_dropped",
            "Usage rows dropped because the buffer was full while PostgreSQL was unreachable.",
            registry=reg,
        )
        self.auth_failures = Counter(
            "bud_gateway_auth_failures", "Requests refused with 401 (missing, unknown, revoked or expired key).",
            registry=reg,
        )
        reg.register(_StateGauges(route_count, outstanding))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
