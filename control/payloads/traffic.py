"""Routes and traffic shifts (versioning: blue-green and A/B).

A route is the model name clients send; it spreads requests over endpoints by weight (the gateway reads it from
PostgreSQL). A TrafficShift moves a route's traffic to a new endpoint: at once (blue-green, after validating the
new one) or in steps gated on the new endpoint's live SLOs, rolling back when they fail or when asked to.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RouteBackendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_id: UUID
    weight: int = Field(ge=0, le=100)


class RouteUpdate(BaseModel):
    """Body of `PUT /api/routes/{name}`: the whole set of endpoints behind the name; weights add up to 100."""

    model_config = ConfigDict(extra="forbid")

    backends: list[RouteBackendIn] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _weights(self) -> "RouteUpdate":
        if len({b.endpoint_id for b in self.backends}) != len(self.backends):
            raise ValueError("each endpoint appears once")
        if sum(b.weight for b in self.backends) != 100:
            raise ValueError("weights must add up to 100")
        return self


class Slo(BaseModel):
    """What the new endpoint must hold at each step; the defaults are the alert thresholds (TTFT p99 500 ms, latency p99 2 s)."""

    model_config = ConfigDict(extra="forbid")

    max_ttft_p99_ms: float = Field(default=500, gt=0)
    max_latency_p99_ms: float = Field(default=2000, gt=0)
    min_requests: int = Field(default=0, ge=0, description="fewer requests than this in a step fail it: no evidence")


class ShiftRequest(BaseModel):
    """Body of `POST /api/routes/{name}/shift`."""

    model_config = ConfigDict(extra="forbid")

    to_endpoint_id: UUID
    strategy: Literal["blue-green", "gradual"] = "gradual"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1, max_length=20,
                             description="the new endpoint's weight after each step (gradual)")
    step_interval_s: float = Field(default=60, ge=0, le=86_400)
    slo: Slo = Field(default_factory=Slo)
    drain_s: float = Field(default=30, ge=0, le=3600, description="wait before removing the old endpoints")
    remove_old: bool = False

    @model_validator(mode="after")
    def _steps(self) -> "ShiftRequest":
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps are increasing weights between 1 and 100")
        if self.steps[-1] != 100:
            raise ValueError("the last step sends the new endpoint all traffic (100)")
        return self


class ShiftStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


class Weights(BaseModel):
    route_name: str
    weights: dict[UUID, int] = Field(description="endpoint id -> weight; endpoints not named leave the route")


class TrafficShiftInput(BaseModel):
    route_name: str
    project_id: UUID
    request: ShiftRequest


class ShiftPlan(BaseModel):
    """What the shift starts from: the route's weights now (restored on rollback) and the new endpoint."""

    route_name: str
    original: dict[UUID, int]
    to_endpoint_id: UUID
    to_endpoint_name: str


class SloProbe(BaseModel):
    endpoint_id: UUID
    baseline: dict[str, float] = Field(default_factory=dict, description="counters at the start of the step")


class SloReading(BaseModel):
    """The new endpoint's replicas' vLLM histograms: cumulative counters now, and the step's p99s from them."""

    counters: dict[str, float]
    requests: int = 0
    ttft_p99_ms: float | None = None
    latency_p99_ms: float | None = None
    replicas_read: int = 0


class ShiftRecord(BaseModel):
    route_name: str
    state: dict
