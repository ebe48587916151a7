"""The autoscaling block (an autoscaling/v2 HPA, in its camelCase spelling) and the autoscaler's payloads.

    autoscaling:
      enabled: true
      min_replicas: 2
      max_replicas: 10
      metrics:
        - type: Resource
          resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
        - type: External
          external: {metric: {name: inference_queue_depth}, target: {type: Value, value: 100}}

On Kubernetes the block becomes a HorizontalPodAutoscaler; on the local cluster the AutoscaleEndpoint workflow runs
the same algorithm itself. `inference_queue_depth` is the number of requests in the endpoint's replicas (waiting
plus running, vLLM's `num_requests_waiting + num_requests_running`), summed over replicas.

Scale to zero (local cluster): with `min_replicas: 0` the endpoint stops its last replica once no request arrived
for `scale_to_zero_after_s` (default 300) and none is in its replicas; it stays RUNNING with 0 replicas, and the
first request the gateway sees for it brings one replica back at the autoscaler's next sync. Requests are known from
the gateway's demand record (`endpoint_demand.last_request_at`); the replicas' own queues keep it awake too.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.payloads.common import RequestBody, SmallJsonObject

QUEUE_DEPTH_METRIC = "inference_queue_depth"
DEFAULT_SCALE_DOWN_WINDOW_S = 300  # autoscaling/v2's default: scale down on the highest recommendation of 5 min
DEFAULT_SCALE_TO_ZERO_AFTER_S = 300
MAX_SCALE_TO_ZERO_AFTER_S = 86_400


class MetricTarget(RequestBody):
    model_config = ConfigDict(extra="forbid")

    type: Literal["Utilization", "Value", "AverageValue"] = Field(
        description="names the figure the target carries: averageUtilization, value or averageValue")
    averageUtilization: int | None = Field(default=None, ge=1, le=1000)  # noqa: N815 (autoscaling/v2's spelling)
    value: float | None = Field(default=None, gt=0)
    averageValue: float | None = Field(default=None, gt=0)  # noqa: N815

    @model_validator(mode="after")
    def _one_matching_figure(self) -> "MetricTarget":
        needed = {"Utilization": "averageUtilization", "Value": "value", "AverageValue": "averageValue"}[self.type]
        if getattr(self, needed) is None:
            raise ValueError(f"a target of type {self.type} needs {needed}")
        return self


class ResourceMetric(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: Literal["cpu"]
    target: MetricTarget

    @model_validator(mode="after")
    def _utilization(self) -> "ResourceMetric":
        if self.target.type != "Utilization":
            raise ValueError("a cpu target is a Utilization (averageUtilization, percent of the requested cores)")
        return self


class ExternalMetricName(RequestBody):
    model_config = ConfigDict(extra="forbid")

    name: Literal["inference_queue_depth"]
    selector: SmallJsonObject | None = None


class ExternalMetric(RequestBody):
    model_config = ConfigDict(extra="forbid")

    metric: ExternalMetricName
    target: MetricTarget

    @model_validator(mode="after")
    def _value(self) -> "ExternalMetric":
        if self.target.type == "Utilization":
            raise ValueError(f"{QUEUE_DEPTH_METRIC} targets a Value or an AverageValue, not a Utilization")
        return self


class MetricSpec(RequestBody):
    model_config = ConfigDict(extra="forbid")

    type: Literal["Resource", "External"] = Field(
        description="names the one block the metric carries: resource (cpu, a Utilization target) or external "
                    "(inference_queue_depth, a Value or AverageValue target)")
    resource: ResourceMetric | None = None
    external: ExternalMetric | None = None

    @model_validator(mode="after")
    def _matching_block(self) -> "MetricSpec":
        block = self.resource if self.type == "Resource" else self.external
        other = self.external if self.type == "Resource" else self.resource
        if block is None or other is not None:
            raise ValueError(f"a {self.type} metric carries exactly one '{self.type.lower()}' block")
        return self


class ScalingPolicy(RequestBody):
    model_config = ConfigDict(extra="forbid")

    type: Literal["Pods", "Percent"]
    value: int = Field(ge=1, le=10_000)
    periodSeconds: int = Field(ge=1, le=1800)  # noqa: N815 (autoscaling/v2's spelling)


class ScalingRules(RequestBody):
    model_config = ConfigDict(extra="forbid")

    stabilizationWindowSeconds: int | None = Field(default=None, ge=0, le=3600)  # noqa: N815
    selectPolicy: Literal["Max", "Min", "Disabled"] | None = None  # noqa: N815
    policies: list[ScalingPolicy] | None = Field(default=None, max_length=10)


class Behavior(RequestBody):
    """autoscaling/v2's HPA behavior: per direction, a stabilization window and rate policies (Kubernetes applies
    the policies; the local autoscaler uses the windows)."""

    model_config = ConfigDict(extra="forbid")

    scaleUp: ScalingRules | None = None  # noqa: N815
    scaleDown: ScalingRules | None = None  # noqa: N815


def seed_metrics() -> list[MetricSpec]:
    """The default: 80 % CPU, or 100 requests in the endpoint's queues."""
    return [
        MetricSpec.model_validate(
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
        ),
        MetricSpec.model_validate(
            {
                "type": "External",
                "external": {"metric": {"name": QUEUE_DEPTH_METRIC}, "target": {"type": "Value", "value": 100}},
            }
        ),
    ]


class AutoscalingSpec(RequestBody):
    """Body of `PUT /api/endpoints/{id}/autoscaling`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_replicas: int = Field(default=1, ge=0, le=1000, description=(
        "0 lets the endpoint scale to zero when idle (local cluster only; a HorizontalPodAutoscaler keeps one)"))
    max_replicas: int = Field(default=4, ge=1, le=1000, description="at least min_replicas")
    metrics: list[MetricSpec] = Field(default_factory=seed_metrics, max_length=8,
                                      description="at least one while enabled")
    behavior: Behavior | None = None
    scale_to_zero_after_s: int = Field(
        default=DEFAULT_SCALE_TO_ZERO_AFTER_S, ge=1, le=MAX_SCALE_TO_ZERO_AFTER_S, description=(
            "with min_replicas 0: seconds without a request before the last replica stops (at least 60, the "
            "server's BUD_SCALE_TO_ZERO_MIN_S)"))

    @model_validator(mode="after")
    def _sane(self) -> "AutoscalingSpec":
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        if self.enabled and not self.metrics:
            raise ValueError("an enabled autoscaler needs at least one metric")
        return self

    def stabilization_window_s(self, direction: Literal["scaleUp", "scaleDown"]) -> float:
        default = DEFAULT_SCALE_DOWN_WINDOW_S if direction == "scaleDown" else 0
        rules = getattr(self.behavior, direction) if self.behavior else None
        window = rules.stabilizationWindowSeconds if rules else None
        return float(default if window is None else window)


class LoadSample(BaseModel):
    """What the replicas of an endpoint report at one instant."""

    endpoint_status: str
    replicas: int = Field(description="the endpoint's desired replica count")
    ready_replicas: int = 0
    last_request_at: float | None = Field(
        default=None, description="when the gateway last saw a request for the endpoint, seconds since the epoch")
    requests_finished: float | None = Field(
        default=None, description="requests the ready replicas finished since they started, summed (a counter)")
    queue_depth: float | None = Field(default=None, description="requests waiting + running, summed over replicas")
    cpu_utilization: float | None = Field(
        default=None, description="average CPU use of the ready replicas, percent of their requested cores"
    )


class Recommendation(BaseModel):
    at: float  # workflow time, seconds since the epoch
    replicas: int


class AutoscaleInput(BaseModel):
    """Start (or continue-as-new) of one endpoint's autoscaler."""

    endpoint_id: UUID
    spec: AutoscalingSpec | None = Field(
        default=None, description="None on a first start: the spec arrives as the `update` signal (signal-with-start)"
    )
    sync_period_s: float = Field(default=15.0, gt=0, le=3600)
    history: list[Recommendation] = Field(default_factory=list)
    last_active_at: float | None = Field(
        default=None, description="the last time a request arrived or was in the replicas (None: when it started)")


class AutoscalingRecord(BaseModel):
    endpoint_id: UUID
    spec: AutoscalingSpec
    state: dict[str, Any] = Field(default_factory=dict, description="last decision, shown by GET /api/endpoints/{id}")
