"""The gateway's Prometheus metrics (one registry per gateway instance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNKNOWN = "_unknown"  # label for models that have no route: client-chosen strings must not become label values


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
        self.requests = Counter(
            "bud_gateway_requests",
            "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=reg,
        )
        self.upstream_latency = Histogram(
            "bud_gateway_upstream_latency_seconds",
            "From sending a request upstream to its first response byte (the TTFT of a stream).",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.duration = Histogram(
            "bud_gateway_request_duration_seconds",
            "From request arrival to the last byte relayed.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge("bud_gateway_requests_in_flight", "Requests being proxied now.", ["model"], registry=reg)
        self.upstream_errors = Counter(
            "bud_gateway_upstream_errors",
            "Upstream failures by endpoint and kind (connect, protocol, timeout).",
            ["endpoint", "kind"],
            registry=reg,
        )
        reg.register(_StateGauges(route_count, outstanding))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
