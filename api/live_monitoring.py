"""What Prometheus says about an endpoint right now: the alerts its rules fire (monitoring/rules/bud-alerts.yml) and
the GPU rows (DCGM exporter's series), and the endpoints' throughput targets as a metric those rules compare with."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

import asyncpg
import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, Field

from control.releases import release_name
from core.logging import get_logger

log = get_logger(__name__)

NOT_MEASURED = "not measured"
TARGET_METRIC = "bud_endpoint_target_throughput_tps"
MAX_ALERTS = 100  # an endpoint's alerts are a handful; bound what one response carries


class PrometheusAlert(BaseModel):
    name: str
    state: Literal["firing", "pending"] = Field(description="pending: the threshold is broken, its `for` not over")
    severity: str | None
    release: str = Field(description="the release (an endpoint, or one color of it) the alert is about")
    summary: str | None
    description: str | None
    active_since: str | None
    value: float | None


class EndpointAlerts(BaseModel):
    """The endpoint's alerts from Prometheus's alerts API; `error` says why none could be read."""

    source: str = Field(description="the Prometheus asked")
    firing: list[PrometheusAlert]
    pending: list[PrometheusAlert]
    error: str | None = None


Measured = float | Literal["not measured"]


class GpuRows(BaseModel):
    """The endpoint's GPUs now, from DCGM exporter's series: "not measured" where no exporter reports the figure."""

    gpus: Measured = Field(description="GPUs reporting utilization")
    utilization_percent: Measured = Field(description="average over the GPUs")
    memory_used_mib: Measured = Field(description="framebuffer used, summed over the GPUs")
    memory_free_mib: Measured = Field(description="framebuffer free, summed over the GPUs")
    power_w: Measured = Field(description="power draw, summed over the GPUs")


def release_matcher(endpoint_id) -> str:
    """The endpoint's releases: ep-<id8> and its colors ep-<id8>-<color> during a blue-green shift (release names
    hold only letters, digits and dashes: nothing to escape in the regex)."""
    return f'release=~"{release_name(endpoint_id)}(-.+)?"'


def _belongs(labels: dict[str, str], endpoint_id) -> bool:
    release = labels.get("release", "")
    base = release_name(endpoint_id)
    return release == base or release.startswith(base + "-")


def _alert(raw: dict[str, Any]) -> PrometheusAlert:
    labels, annotations = raw.get("labels") or {}, raw.get("annotations") or {}
    try:
        value = float(raw.get("value"))
    except (TypeError, ValueError):
        value = None
    return PrometheusAlert(name=labels.get("alertname", "?"), state=raw["state"], severity=labels.get("severity"),
                           release=labels.get("release", ""), summary=annotations.get("summary"),
                           description=annotations.get("description"), active_since=raw.get("activeAt"),
                           value=value if value is not None and math.isfinite(value) else None)


async def endpoint_alerts(http: httpx.AsyncClient, prometheus_url: str, endpoint_id) -> EndpointAlerts:
    try:
        response = await http.get(f"{prometheus_url}/api/v1/alerts", timeout=5)
        response.raise_for_status()
        raw_alerts = response.json()["data"]["alerts"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        return EndpointAlerts(source=prometheus_url, firing=[], pending=[],
                              error=f"Prometheus at {prometheus_url} did not answer: {error or type(error).__name__}")
    mine = [_alert(raw) for raw in raw_alerts
            if raw.get("state") in ("firing", "pending") and _belongs(raw.get("labels") or {}, endpoint_id)]
    mine.sort(key=lambda alert: (alert.name, alert.release))
    return EndpointAlerts(source=prometheus_url, firing=[a for a in mine if a.state == "firing"][:MAX_ALERTS],
                          pending=[a for a in mine if a.state == "pending"][:MAX_ALERTS])


async def _measured(http: httpx.AsyncClient, prometheus_url: str, query: str) -> Measured:
    try:
        response = await http.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=5)
        response.raise_for_status()
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return NOT_MEASURED
    value = float(result[0]["value"][1]) if result else math.nan
    return value if math.isfinite(value) else NOT_MEASURED


async def gpu_rows(http: httpx.AsyncClient, prometheus_url: str, endpoint_id) -> GpuRows:
    selector = "{" + release_matcher(endpoint_id) + "}"
    promql = {
        "gpus": f"count(DCGM_FI_DEV_GPU_UTIL{selector})",
        "utilization_percent": f"avg(DCGM_FI_DEV_GPU_UTIL{selector})",
        "memory_used_mib": f"sum(DCGM_FI_DEV_FB_USED{selector})",
        "memory_free_mib": f"sum(DCGM_FI_DEV_FB_FREE{selector})",
        "power_w": f"sum(DCGM_FI_DEV_POWER_USAGE{selector})",
    }
    values = await asyncio.gather(*(_measured(http, prometheus_url, query) for query in promql.values()))
    return GpuRows(**dict(zip(promql, values)))


async def prometheus_view(prometheus_url: str, endpoint_id) -> dict[str, Any]:
    """The endpoint's alerts and GPU rows now; when Prometheus does not answer, the alerts say so and every GPU
    figure is not measured (without waiting on it five more times)."""
    async with httpx.AsyncClient() as http:
        alerts = await endpoint_alerts(http, prometheus_url, endpoint_id)
        if alerts.error:
            gpu = GpuRows(**{name: NOT_MEASURED for name in GpuRows.model_fields})
        else:
            gpu = await gpu_rows(http, prometheus_url, endpoint_id)
    return {"alerts": alerts, "gpu": gpu}


async def throughput_targets_exposition(pool: asyncpg.Pool) -> bytes:
    """The throughput target of every endpoint that has one, as a gauge labelled with the endpoint's release (the
    label its replicas' series carry), for the ThroughputBelowTarget rule."""
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, (performance_targets->>'min_throughput_tps')::float8 AS target FROM endpoints "
                "WHERE status <> 'DELETED' AND (performance_targets->>'min_throughput_tps') IS NOT NULL")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        log.warning("throughput targets not exported: PostgreSQL did not answer", error=str(error))
        return b""  # the request metrics are still scraped
    gauge = GaugeMetricFamily(TARGET_METRIC, "The endpoint's min_throughput_tps target (output tokens/s, all "
                              "replicas).", labels=["release"])
    for row in rows:
        if row["target"] is not None and math.isfinite(row["target"]) and row["target"] > 0:
            gauge.add_metric([release_name(row["id"])], row["target"])

    class _Targets:
        def collect(self):
            yield gauge

    registry = CollectorRegistry()
    registry.register(_Targets())
    return generate_latest(registry)
