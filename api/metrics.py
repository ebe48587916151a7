"""Prometheus metrics of the API: request counts and latency per route template, and the endpoints' throughput
targets, served at /metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from api.live_monitoring import throughput_targets_exposition


def install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter("bud_api_requests_total", "API requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("bud_api_request_seconds", "API request latency", ["method", "route"], registry=registry)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        requests.labels(request.method, template, str(response.status_code)).inc()
        latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # The endpoints' throughput targets ride along: the alert rules compare each release's throughput with them.
        targets = await throughput_targets_exposition(request.app.state.pool)
        return Response(generate_latest(registry) + targets, media_type=CONTENT_TYPE_LATEST)
