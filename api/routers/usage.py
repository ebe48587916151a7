"""Usage and realized cost of the caller's project at the gateway: requests, errors, tokens and USD per group
(project, key, route or backend), optionally as a time series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import PoolDep, PrincipalDep
from control import usage
from control.errors import invalid_field
from control.store import usage as usage_store

router = APIRouter(prefix="/api/usage", tags=["usage"])
GroupBy = Literal["project", "key", "route", "backend"]


class UsageFigures(BaseModel):
    requests: int
    errors: int = Field(description="requests answered with a status of 400 or more")
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = Field(description=(
        "endpoint backends: their GPU time in the window (GPU-hours x the GPU's price), shared by tokens served; "
        "provider backends: tokens x the provider's input and output prices"))
    realized_usd_per_mtok: float | None = Field(description="cost_usd per million tokens; null when none were served")


class UsageBucket(UsageFigures):
    start: datetime
    end: datetime


class UsageGroup(UsageFigures):
    group: str = Field(description=(
        "project id, key id ('' for requests without a key), route name, or backend as 'endpoint:<id>' / "
        "'provider:<provider_id>/<model>' / 'none:'"))
    name: str | None = Field(description="the key's, endpoint's, provider's or project's name where known")
    buckets: list[UsageBucket] | None = Field(description="with step: the buckets that saw usage or cost")


class UsageOut(BaseModel):
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    group_by: GroupBy
    step_s: int | None
    groups: list[UsageGroup]
    totals: UsageFigures
    unattributed_gpu_usd: float = Field(description=(
        "GPU time of the project's endpoints that no request in the group_by used (idle replicas); included in "
        "the groups' cost when grouping by project or backend"))

    model_config = {"populate_by_name": True}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@router.get("", response_model=UsageOut, response_model_by_alias=True)
async def get_usage(
    pool: PoolDep, principal: PrincipalDep,
    window_from: Annotated[datetime | None,
                           Query(alias="from", description="ISO time; default: 24 h before `to`")] = None,
    to: Annotated[datetime | None, Query(description="ISO time (exclusive); default: now")] = None,
    group_by: Annotated[GroupBy, Query()] = "project",
    step: Annotated[int | None, Query(ge=usage.MIN_STEP_S, le=usage.MAX_STEP_S,
                                      description="seconds per bucket for a time series")] = None,
) -> dict:
    now = datetime.now(UTC)
    window_to = _aware(to) if to is not None else now
    try:
        start = _aware(window_from) if window_from is not None else window_to - timedelta(hours=24)
    except OverflowError:
        raise invalid_field("to", "too early for a default window: give `from`") from None
    if start >= window_to:
        raise invalid_field("from", "must be before `to`")
    if window_to - start > usage.MAX_WINDOW:
        raise invalid_field("from", f"the window is at most {usage.MAX_WINDOW.days} days")
    if step is not None and usage.bucket_count(start, window_to, step) > usage.MAX_BUCKETS:
        raise invalid_field("step", f"at most {usage.MAX_BUCKETS} buckets per window: choose a larger step")
    async with pool.acquire() as conn:
        cells = await usage_store.usage_cells(conn, principal.project_id, group_by, start, window_to, step)
        lifetimes = await usage_store.lifetimes(conn, principal.project_id, start, window_to)
        prices = await usage_store.provider_prices(conn, principal.project_id)
        labels = await usage_store.names(conn, principal.project_id)

    def idle_group(endpoint_id) -> str | None:
        if group_by == "project":
            return str(principal.project_id)
        if group_by == "backend":
            return f"endpoint:{endpoint_id}"
        return None

    report = usage.aggregate(cells, lifetimes, prices, start, window_to, now, step, idle_cost_group=idle_group)
    groups = []
    for group in report.groups:
        buckets = None
        if step is not None:
            buckets = []
            for index, figures in sorted(group.buckets.items()):
                bucket_start, bucket_end = usage.bucket_window(index, start, window_to, step)
                buckets.append({**figures.as_dict(), "start": bucket_start, "end": bucket_end})
        groups.append({**group.totals.as_dict(), "group": group.group, "name": labels.get(group.group),
                       "buckets": buckets})
    return {"from": start, "to": window_to, "group_by": group_by, "step_s": step, "groups": groups,
            "totals": report.totals.as_dict(), "unattributed_gpu_usd": report.unattributed_gpu_usd}
