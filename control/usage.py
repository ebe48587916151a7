"""What serving cost, from the gateway's usage rows and the endpoints' GPU time: pure arithmetic, no I/O.

An endpoint's cost over a window is the GPU time its replicas held in it (each lifetime's overlap with the window
x its GPUs x the GPU's price per hour: the cluster's override, else the GPU catalog's price); its realized price is
that cost over the tokens it served, per million. A provider backend costs its tokens at the provider's input and
output prices. When usage is grouped by key or route, an endpoint's GPU cost is shared among the groups by the
tokens each had from it; GPU time no request used (an idle endpoint) is reported apart as unattributed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from budsim.catalog import get_gpu
from budsim.errors import InvalidRequest

MAX_WINDOW = timedelta(days=93)
MIN_STEP_S, MAX_STEP_S = 60, 86_400
MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Lifetime:
    """One replica's hold on GPUs: from started_at until stopped_at (None: still running)."""

    endpoint_id: UUID
    gpus: int
    gpu_type: str
    started_at: datetime
    stopped_at: datetime | None
    price_per_hour: float | None = None  # the cluster's override for this GPU type, if any


@dataclass(frozen=True)
class UsageCell:
    """Usage of one group on one backend in one bucket (bucket 0 without a step)."""

    group: str
    bucket: int
    backend_kind: str
    backend_id: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, cell: UsageCell, cost: float) -> None:
        self.requests += cell.requests
        self.errors += cell.errors
        self.prompt_tokens += cell.prompt_tokens
        self.completion_tokens += cell.completion_tokens
        self.cost_usd += cost

    @property
    def realized_usd_per_mtok(self) -> float | None:
        return per_mtok(self.cost_usd, self.prompt_tokens + self.completion_tokens)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd,
                "realized_usd_per_mtok": self.realized_usd_per_mtok}


@dataclass
class GroupUsage:
    group: str
    totals: Totals = field(default_factory=Totals)
    buckets: dict[int, Totals] = field(default_factory=dict)


def catalog_price(gpu_type: str) -> float:
    """USD per GPU-hour of a GPU type from the GPU catalog (the one price source a cluster may override); a type
    the catalog does not know costs nothing rather than failing the whole report."""
    try:
        return get_gpu(gpu_type).price_per_hour
    except InvalidRequest:
        return 0.0


def overlap_hours(start: datetime, stop: datetime, window_from: datetime, window_to: datetime) -> float:
    """Hours of [start, stop) inside [window_from, window_to)."""
    seconds = (min(stop, window_to) - max(start, window_from)).total_seconds()
    return max(seconds, 0.0) / 3600


def gpu_cost(lifetimes: Iterable[Lifetime], window_from: datetime, window_to: datetime, now: datetime,
             price_of: Callable[[str], float] = catalog_price) -> float:
    """USD of the GPU time the lifetimes held inside the window (a running one counts until `now`)."""
    total = 0.0
    for life in lifetimes:
        price = life.price_per_hour if life.price_per_hour is not None else price_of(life.gpu_type)
        hours = overlap_hours(life.started_at, life.stopped_at or now, window_from, window_to)
        total += hours * life.gpus * price
    return total


def per_mtok(cost_usd: float, tokens: int) -> float | None:
    """USD per million tokens (None when nothing was served)."""
    return cost_usd / (tokens / 1e6) if tokens > 0 else None


def provider_cost(prompt_tokens: int, completion_tokens: int, input_per_mtok: float, output_per_mtok: float) -> float:
    return prompt_tokens / 1e6 * input_per_mtok + completion_tokens / 1e6 * output_per_mtok


def bucket_count(window_from: datetime, window_to: datetime, step_s: int | None) -> int:
    if step_s is None:
        return 1
    return max(1, math.ceil((window_to - window_from).total_seconds() / step_s))


def bucket_window(index: int, window_from: datetime, window_to: datetime,
                  step_s: int | None) -> tuple[datetime, datetime]:
    if step_s is None:
        return window_from, window_to
    start = window_from + timedelta(seconds=index * step_s)
    if (window_to - start).total_seconds() <= step_s:  # the last bucket (and no overflow near datetime.max)
        return start, window_to
    return start, start + timedelta(seconds=step_s)


@dataclass
class UsageReport:
    groups: list[GroupUsage]
    totals: Totals
    unattributed_gpu_usd: float


def aggregate(cells: list[UsageCell], lifetimes: list[Lifetime], provider_prices: dict[str, tuple[float, float]],
              window_from: datetime, window_to: datetime, now: datetime, step_s: int | None,
              idle_cost_group: Callable[[UUID], str | None] = lambda _: None,
              price_of: Callable[[str], float] = catalog_price) -> UsageReport:
    """Each group's usage and cost (and per bucket with a step).

    `provider_prices` maps a provider backend_id ("<provider_id>/<model>") to its (input, output) USD per Mtok;
    `idle_cost_group(endpoint_id)` names the group that carries an endpoint's GPU cost no request used (the project
    when grouping by project, the endpoint's backend when grouping by backend), None to report it unattributed."""
    by_endpoint: dict[str, list[Lifetime]] = {}
    for life in lifetimes:
        by_endpoint.setdefault(str(life.endpoint_id), []).append(life)
    endpoint_cost: dict[tuple[str, int], float] = {}
    for endpoint, lives in by_endpoint.items():
        for index in range(bucket_count(window_from, window_to, step_s)):
            start, stop = bucket_window(index, window_from, window_to, step_s)
            cost = gpu_cost(lives, start, stop, now, price_of)
            if cost > 0:
                endpoint_cost[(endpoint, index)] = cost
    endpoint_tokens: dict[tuple[str, int], int] = {}
    for cell in cells:
        if cell.backend_kind == "endpoint":
            key = (cell.backend_id, cell.bucket)
            endpoint_tokens[key] = endpoint_tokens.get(key, 0) + cell.tokens

    groups: dict[str, GroupUsage] = {}
    totals = Totals()

    def charge(cell: UsageCell, cost: float) -> None:
        group = groups.setdefault(cell.group, GroupUsage(cell.group))
        group.totals.add(cell, cost)
        if step_s is not None:
            group.buckets.setdefault(cell.bucket, Totals()).add(cell, cost)
        totals.add(cell, cost)

    for cell in cells:
        cost = 0.0
        if cell.backend_kind == "endpoint":
            key = (cell.backend_id, cell.bucket)
            served = endpoint_tokens.get(key, 0)
            if served > 0:
                cost = endpoint_cost.get(key, 0.0) * cell.tokens / served
        elif cell.backend_kind == "provider" and cell.backend_id in provider_prices:
            cost = provider_cost(cell.prompt_tokens, cell.completion_tokens, *provider_prices[cell.backend_id])
        charge(cell, cost)

    unattributed = 0.0
    for (endpoint, index), cost in sorted(endpoint_cost.items()):
        if endpoint_tokens.get((endpoint, index), 0) > 0:
            continue
        group = idle_cost_group(UUID(endpoint))
        if group is None:
            unattributed += cost
        else:
            charge(UsageCell(group, index, "endpoint", endpoint, 0, 0, 0, 0), cost)
    return UsageReport(groups=sorted(groups.values(), key=lambda g: g.group), totals=totals,
                       unattributed_gpu_usd=unattributed)
