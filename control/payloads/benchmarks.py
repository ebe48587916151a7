"""BenchmarkEndpoint: a bounded load sweep against a RUNNING endpoint through the gateway, level by level, each
level's measured TTFT/TPOT beside the optimizer's prediction for the same config and workload."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control.payloads.common import RequestBody

MAX_LEVELS = 16
MAX_CONCURRENCY = 1024
MAX_REQUESTS_PER_LEVEL = 10_000
MAX_DURATION_S = 3600
MAX_INPUT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 100_000


class BenchmarkRequest(RequestBody):
    """The sweep: one level per concurrency, `requests_per_level` streamed completions each (default: four per
    concurrent client, at least 8), the whole run bounded by `max_duration_s`."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(ge=1, le=MAX_INPUT_TOKENS, description="prompt tokens per request (sent as token ids)")
    output_tokens: int = Field(ge=1, le=MAX_OUTPUT_TOKENS, description="tokens generated per request")
    concurrency: list[Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]] = Field(
        min_length=1, max_length=MAX_LEVELS, json_schema_extra={"uniqueItems": True},
        description="concurrent clients of each level, e.g. [1, 4, 16]; each level once")
    requests_per_level: int | None = Field(default=None, ge=1, le=MAX_REQUESTS_PER_LEVEL)
    max_duration_s: float = Field(default=600, gt=0, le=MAX_DURATION_S, allow_inf_nan=False,
                                  description="the whole sweep; a level still running then stops and is reported")

    @field_validator("concurrency")
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        if len(set(levels)) != len(levels):
            raise ValueError("a concurrency appears twice")
        return levels

    def requests_for(self, concurrency: int) -> int:
        if self.requests_per_level is not None:
            return max(self.requests_per_level, concurrency)
        return min(MAX_REQUESTS_PER_LEVEL, max(8, 4 * concurrency))


class BenchmarkStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class BenchmarkInput(BaseModel):
    run_id: UUID
    endpoint_id: UUID
    project_id: UUID
    request: BenchmarkRequest


class Predicted(BaseModel):
    ttft_ms: float
    tpot_ms: float
    throughput_tps: float
    calibrated_on: int = Field(default=0, description="measurements of the group it was calibrated on (0: cold)")


class LevelPlan(BaseModel):
    index: int
    concurrency: int
    requests: int
    predicted: Predicted | None


class MeasuredConfig(BaseModel):
    """What each level's measurement records about the endpoint's deployment."""

    model_id: UUID
    model_name: str
    architecture: str | None
    parameter_count: int | None
    gpu_type: str
    runtime: str
    precision: str | None
    tp: int
    pp: int
    replicas: int
    max_num_seqs: int
    max_num_batched_tokens: int | None


class BenchmarkPlan(BaseModel):
    run_id: UUID
    endpoint_id: UUID
    project_id: UUID
    endpoint_name: str
    input_tokens: int
    output_tokens: int
    max_duration_s: float
    config: MeasuredConfig
    levels: list[LevelPlan]


class LevelInput(BaseModel):
    """One level to run: the activity mints (and revokes) its own short-lived key of the endpoint's project."""

    run_id: UUID
    project_id: UUID
    endpoint_name: str
    index: int
    concurrency: int
    requests: int
    input_tokens: int
    output_tokens: int
    budget_s: float


class LevelResult(BaseModel):
    index: int
    concurrency: int
    requests: int = Field(description="requests the level was to send")
    completed: int = Field(description="requests answered in full")
    errors: int
    error_sample: str | None = None
    timed_out: bool = False
    attempts: int = Field(default=1, description="activity attempts the level took (more after a worker died)")
    resumed_requests: int = Field(default=0, description="requests an earlier attempt had finished (kept)")
    duration_s: float
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p99_ms: float | None = None
    throughput_tps: float | None = Field(default=None, description="output tokens per second, all requests")
    predicted: Predicted | None = None
    measurement_id: UUID | None = None


class LevelRecord(BaseModel):
    plan: BenchmarkPlan
    result: LevelResult


class RunProgress(BaseModel):
    run_id: UUID
    project_id: UUID
    status: BenchmarkStatus
    step: str | None = None
    error: str | None = None


class BenchmarkRunOut(BaseModel):
    id: UUID
    endpoint_id: UUID
    status: BenchmarkStatus
    step: str | None
    request: dict[str, Any]
    levels: list[dict[str, Any]]
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime
