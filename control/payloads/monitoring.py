"""Monitoring and continuous optimization: what Reoptimize observes of a RUNNING endpoint and concludes."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from budsim.schemas import OptimizationRequest


class ReoptimizeInput(BaseModel):
    """One endpoint, or (None) every RUNNING endpoint, as the schedule starts it."""

    endpoint_id: UUID | None = None
    window_s: int = Field(default=300, ge=10, le=86_400, description="the metrics window (PromQL range)")
    optimizer_queue: str = "bud-optimizer"


class ObserveRequest(BaseModel):
    endpoint_id: UUID
    window_s: int


class LiveMetrics(BaseModel):
    """The serving metrics over the window, from Prometheus (None where nothing was measured)."""

    requests_per_s: float | None = None
    requests: float | None = Field(default=None, description="requests finished in the window")
    ttft_mean_ms: float | None = Field(default=None, description="mean TTFT: the histogram's sum / count")
    tpot_mean_ms: float | None = Field(default=None, description="mean TPOT: the histogram's sum / count")
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    inference_latency_p99_ms: float | None = None
    throughput_tps: float | None = Field(default=None, description="generated tokens per second")
    queue_depth: float | None = Field(default=None, description="requests waiting, average over the window")
    running: float | None = Field(default=None, description="requests running, average over the window")
    gpu_utilization: float | None = Field(default=None, description="percent (DCGM), where an exporter reports it")
    prompt_tokens_per_request: float | None = None
    output_tokens_per_request: float | None = None


class Expectation(BaseModel):
    """What the platform expects of this endpoint: the predictor's TTFT and TPOT with their P10-P90 for the deployed
    config under the load the window saw (else the optimizer's prediction it was chosen on), and the user's targets."""

    predicted_ttft_ms: float | None = None
    predicted_tpot_ms: float | None = None
    ttft_p10_ms: float | None = None
    ttft_p90_ms: float | None = None
    tpot_p10_ms: float | None = None
    tpot_p90_ms: float | None = None
    basis: str = Field(default="", description="which prediction: under the measured load (calibrated or not), or "
                       "the one the config was chosen on")
    targets: dict = Field(default_factory=dict)


class Observation(BaseModel):
    endpoint_id: UUID
    endpoint_name: str
    window_s: int
    metrics: LiveMetrics
    expectation: Expectation
    alerts: list[str] = Field(default_factory=list)
    drift: dict[str, float] = Field(default_factory=dict, description="measured / predicted means (ttft, tpot)")
    reoptimize_because: list[str] = Field(default_factory=list)
    no_advice: str | None = Field(default=None, description="why the window gives no advice (too few requests)")
    measurement_id: UUID | None = Field(default=None, description="the window, stored as a production measurement")
    reoptimization: OptimizationRequest | None = None
    project_id: UUID | None = None
    model_id: UUID | None = None
    cluster_id: UUID | None = None


class NewOptimization(BaseModel):
    project_id: UUID
    model_id: UUID
    cluster_id: UUID
    request: OptimizationRequest


class MonitoringRecord(BaseModel):
    endpoint_id: UUID
    snapshot: dict
