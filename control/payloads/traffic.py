"""Routes and traffic shifts (versioning: blue-green and A/B).

A route is the model name clients send; it spreads requests over endpoints by weight (the gateway reads it from
PostgreSQL). A TrafficShift moves a route's traffic to a new endpoint: at once (blue-green, after validating the
new one) or in steps, each judged by a canary analysis against the version it replaces, rolling back when one
fails or when asked to.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from control.payloads.common import RequestBody


# A provider's model name as its API spells it (org/model:tag and the like): printable, no spaces.
ProviderModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]


class BackendTarget(BaseModel):
    """One backend: an endpoint of the project (`endpoint_id`), or a model of one of its external providers
    (`provider_id` and `model`, a model the provider lists)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: UUID | None = None
    provider_id: UUID | None = None
    model: ProviderModelName | None = Field(default=None, description="with provider_id: the provider's model name")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.endpoint_id is None) == (self.provider_id is None):
            raise ValueError("give either endpoint_id, or provider_id and model")
        if self.provider_id is not None and self.model is None:
            raise ValueError("a provider backend names its model")
        if self.endpoint_id is not None and self.model is not None:
            raise ValueError("model goes with provider_id, not endpoint_id")
        return self

    @property
    def target(self) -> UUID | tuple[UUID, str]:
        """What the backend is, for telling duplicates apart: the endpoint id, or (provider id, model)."""
        return self.endpoint_id if self.endpoint_id is not None else (self.provider_id, self.model)


class RouteBackendIn(BackendTarget):
    weight: int = Field(ge=0, le=100)


class RouteFallbackIn(BackendTarget):
    """A backend that takes the route's requests only when the primaries cannot: none ready, one failed before
    its first byte, or each of their replicas holding more than spill_queue_depth of the gateway's requests in
    flight. Tried in the order given: the first fallback with a usable replica takes the request, the next one
    only when it cannot."""


class RouteUpdate(BaseModel):
    """Body of `PUT /api/routes/{name}`: the whole set of primary backends behind the name (endpoints and provider
    models; weights add up to 100), and optionally the fallbacks and when to spill to them. Fallbacks or
    spill_queue_depth left out keep their current value."""

    model_config = ConfigDict(extra="forbid")

    backends: list[RouteBackendIn] = Field(min_length=1, max_length=16)
    fallbacks: list[RouteFallbackIn] | None = Field(default=None, max_length=16, description=(
        "tried in this order when the primaries cannot take a request; [] removes them all"))
    spill_queue_depth: int | None = Field(default=None, ge=0, le=1_000_000, description=(
        "spill to the fallbacks while every primary replica already has more than this many requests in flight "
        "from the gateway: each gateway counts its own requests in flight per replica (not the queue the replicas "
        "report, nor other gateways' requests), so with several gateways a replica may hold up to this many from "
        "each; null: not on requests in flight"))

    @model_validator(mode="after")
    def _weights(self) -> "RouteUpdate":
        primaries = [b.target for b in self.backends]
        if len(set(primaries)) != len(primaries):
            raise ValueError("each backend appears once")
        if sum(b.weight for b in self.backends) != 100:
            raise ValueError("weights must add up to 100")
        fallbacks = [f.target for f in self.fallbacks or []]
        if len(set(fallbacks)) != len(fallbacks):
            raise ValueError("each fallback appears once")
        if set(fallbacks) & set(primaries):
            raise ValueError("a backend is either primary or fallback, not both")
        return self


class Slo(RequestBody):
    """How each step of a gradual shift is judged. The canary (the new endpoint) is compared with the stable version
    (the endpoints it replaces) over the step, from the gateway's per-request timings: its TTFT p99 must stay within
    stable x (1 + tolerance) + slack_ms, its TPOT p50 within stable x (1 + tolerance) + tpot_slack_ms, its error
    rate within stable + error_rate_slack, its queue depth within stable x (1 + tolerance) + queue_slack; the
    absolute maxima are a floor whatever the stable version does. A step needs min_requests canary requests: with
    fewer it waits for traffic up to traffic_wait_s, then the shift fails."""

    model_config = ConfigDict(extra="forbid")

    max_ttft_p99_ms: float = Field(default=500, gt=0, le=3_600_000)
    max_latency_p99_ms: float = Field(default=2000, gt=0, le=3_600_000)
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="5xx answers and aborted requests, 0-1")
    min_requests: int = Field(default=20, ge=1, le=1_000_000,
                              description="canary requests a step needs before it is judged")
    traffic_wait_s: float = Field(default=300, ge=0, le=86_400, description=(
        "how long past step_interval_s a step waits for min_requests canary requests before the shift fails"))
    tolerance: float = Field(default=0.1, ge=0, le=10, description="relative noise band against the stable version")
    slack_ms: float = Field(default=20, ge=0, le=60_000, description="absolute noise band on TTFT p99")
    tpot_slack_ms: float = Field(default=5, ge=0, le=60_000, description="absolute noise band on TPOT p50")
    error_rate_slack: float = Field(default=0.01, ge=0, le=1, description="error rate the canary may add")
    queue_slack: float = Field(default=2, ge=0, le=100_000, description="queued requests per replica it may add")


class ShiftRequest(RequestBody):
    """Body of `POST /api/routes/{name}/shift`."""

    model_config = ConfigDict(extra="forbid")

    to_endpoint_id: UUID
    strategy: Literal["blue-green", "gradual"] = "gradual"
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=20,
        description="the new endpoint's weight after each step (gradual): strictly increasing, the last one 100")
    step_interval_s: float = Field(default=60, ge=0, le=86_400)
    slo: Slo = Field(default_factory=Slo)
    drain_s: float = Field(default=30, ge=0, le=3600, description="wait before removing the old endpoints")
    remove_old: bool = False

    @model_validator(mode="after")
    def _steps(self) -> "ShiftRequest":
        if self.steps != sorted(set(self.steps)):
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


class StepProbe(BaseModel):
    """One step's window of the route, for the canary analysis."""

    project_id: UUID
    route_name: str
    weight: int
    canary_id: UUID
    stable_ids: list[UUID]
    window_from: datetime
    window_to: datetime
    slo: Slo


class ShiftRecord(BaseModel):
    route_name: str
    state: dict
