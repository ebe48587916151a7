"""The dashboard: static files calling the same /api as everything else, with links into the Temporal Web UI.
The page holds no data of its own: every call it makes carries the user's token. Two routes serve it beyond the
files: the one-time sign-in link `bud dev up` prints (traded once for a token), and the time series of an endpoint's
serving metrics its charts draw (from Prometheus, over every release of the endpoint: a rolling update's or a
shift's new replicas included)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from uuid import UUID

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field

from api.bootstrap import DEFAULT_PROJECT
from api.deps import PoolDep, PrincipalDep, SettingsDep
from api.errors import ApiError, not_found
from api.routers.endpoints import owned_endpoint
from control.errors import invalid_field
from control.releases import release_selector
from control.store import projects
from core.login_links import CODE_PATTERN, redeem_code

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = {"app.js": "text/javascript", "charts.js": "text/javascript", "style.css": "text/css"}
SIGN_IN_TOKEN_TTL = timedelta(hours=12)
MAX_POINTS = 240

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui", include_in_schema=False)
@router.get("/ui/login", include_in_schema=False)  # the page reads ?code= and trades it (POST below)
async def dashboard() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html")


@router.get("/ui/config.json", include_in_schema=False)
async def dashboard_config(settings: SettingsDep) -> dict:
    return {"temporal_ui_url": f"http://127.0.0.1:{settings.temporal_ui_port}",
            "temporal_namespace": settings.temporal_namespace}


@router.get("/ui/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the URL ever reaches the file system
        raise not_found("asset", name)
    return FileResponse(DASHBOARD_DIR / name, media_type=ASSETS[name])


class SignInCode(BaseModel):
    code: str = Field(min_length=1, max_length=200)


class SignedIn(BaseModel):
    token: str
    project_id: UUID
    expires_at: datetime


@router.post("/ui/login", response_model=SignedIn, include_in_schema=False)
async def sign_in_with_code(body: SignInCode, pool: PoolDep, settings: SettingsDep) -> dict:
    """Trade a one-time code from `bud dev up` for an admin token of the default project, valid for 12 hours.
    A code works once and for 15 minutes."""
    if not CODE_PATTERN.match(body.code):
        raise invalid_field("code", "is not a sign-in code (copy the whole link `bud dev up` printed)")
    if not redeem_code(settings.state_dir, body.code):
        raise ApiError(401, "code: this sign-in link was used already or has expired; `bud dev up` prints a new one "
                            "(or sign in with the token in .bud/admin-token)")
    expires_at = datetime.now(UTC) + SIGN_IN_TOKEN_TTL
    async with pool.acquire() as conn:
        project = await projects.get_project_by_name(conn, DEFAULT_PROJECT)
        if project is None:
            raise ApiError(409, "code: the default project does not exist yet; start the API once first")
        row, token = await projects.issue_token(conn, project.id, "dashboard sign-in", projects.TokenRole.ADMIN,
                                                expires_at)
    return {"token": token, "project_id": project.id, "expires_at": row.expires_at or expires_at}


def series_queries(endpoint_id: UUID, window: str) -> dict[str, str]:
    """PromQL for each chart, from the simulated and real runtimes' vLLM metric names."""
    selector = "{" + release_selector(endpoint_id) + "}"

    def p99(histogram: str) -> str:
        return f"histogram_quantile(0.99, sum by (le) (rate({histogram}_bucket{selector}[{window}]))) * 1000"

    return {
        "ttft_p99_ms": p99("vllm:time_to_first_token_seconds"),
        "inference_latency_p99_ms": p99("vllm:e2e_request_latency_seconds"),
        "throughput_tps": f"sum(rate(vllm:generation_tokens_total{selector}[{window}]))",
        "requests_per_s": f"sum(rate(vllm:request_success_total{selector}[{window}]))",
        "queue_depth": f"sum(vllm:num_requests_waiting{selector})",
        "replicas": f"count(up{selector} == 1)",
    }


SERIES_UNITS = {"ttft_p99_ms": "ms", "inference_latency_p99_ms": "ms", "throughput_tps": "tokens/s",
                "requests_per_s": "requests/s", "queue_depth": "requests", "replicas": "replicas"}


class MetricsSeries(BaseModel):
    """Serving metrics of one endpoint over time: for each metric, [unix seconds, value] points (gaps where
    nothing was measured)."""

    endpoint_id: UUID
    start: datetime
    end: datetime
    step_s: int
    units: dict[str, str]
    series: dict[str, list[tuple[float, float]]]


@router.get("/api/endpoints/{endpoint_id}/metrics/series", response_model=MetricsSeries)
async def endpoint_metrics_series(
        endpoint_id: UUID, pool: PoolDep, settings: SettingsDep, principal: PrincipalDep,
        minutes: Annotated[int, Query(ge=1, le=1440, description="how far back from now")] = 15) -> dict:
    """TTFT and end-to-end latency p99, throughput, requests/s, queue depth and replicas scraped, from Prometheus,
    at most 240 points each (the step grows with the range)."""
    async with pool.acquire() as conn:
        endpoint = await owned_endpoint(conn, endpoint_id, principal.project_id)
    end = time.time()
    start = end - minutes * 60
    step = max(5, math.ceil(minutes * 60 / MAX_POINTS))
    promql = series_queries(endpoint.id, f"{max(2 * step, 30)}s")
    series = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, query in promql.items():
            try:
                response = await http.get(f"{settings.prometheus_url}/api/v1/query_range",
                                          params={"query": query, "start": start, "end": end, "step": step})
                response.raise_for_status()
            except httpx.HTTPError as error:
                raise ApiError(503, f"Prometheus at {settings.prometheus_url} did not answer: {error}") from None
            result = response.json()["data"]["result"]
            points = [(float(t), float(v)) for t, v in (result[0]["values"] if result else [])]
            series[name] = [(t, v) for t, v in points if math.isfinite(v)]
    return {"endpoint_id": endpoint_id, "start": datetime.fromtimestamp(start, UTC),
            "end": datetime.fromtimestamp(end, UTC), "step_s": step, "units": SERIES_UNITS, "series": series}
