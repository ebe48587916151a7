"""Measurements: the performance one serving config showed under one workload, as a benchmark run, a production
window or an imported file saw it. Every field is bounded; GPU types and precisions are the platform's one
vocabulary (core/gpu_types.py, core/precision.py), runtimes are budsim's names."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from budsim.schemas import RUNTIMES
from control.payloads.common import IDENTIFIER_PATTERN
from core.gpu_types import canonical_gpu_type
from core.precision import find_precision

MAX_IMPORT_ROWS = 10_000
MAX_IMPORT_BYTES = 8 * 1024 * 1024
MAX_MS = 3_600_000.0  # an hour per token or to the first one is no measurement of a serving config
MAX_TOKENS = 10_000_000
RUNTIME_ALIASES = {"trtllm": "tensorrt-llm", "tensorrt_llm": "tensorrt-llm", "trt-llm": "tensorrt-llm"}

Millis = Annotated[float, Field(ge=0, le=MAX_MS, allow_inf_nan=False)]
Label = Annotated[str, Field(min_length=1, max_length=200)]


class SourceKind(str, Enum):
    BENCHMARK = "benchmark"  # a BenchmarkEndpoint run (source_id: the run id)
    PRODUCTION = "production"  # a window of an endpoint's live traffic (window_start, window_end)
    IMPORT = "import"  # rows a caller imported (source_id: the file or batch name, if given)


def storable_text(value):
    """Text PostgreSQL can store: no NUL character, no lone surrogate (JSON can spell both)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode text") from None
    return value


class MeasurementSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value):
        return storable_text(value)

    kind: SourceKind = SourceKind.IMPORT
    id: str | None = Field(default=None, min_length=1, max_length=200, description="run id, file name, batch name")
    window_start: datetime | None = None
    window_end: datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> "MeasurementSource":
        if (self.window_start is None) != (self.window_end is None):
            raise ValueError("window_start and window_end come together")
        if self.window_start is not None and self.window_end is not None and self.window_end < self.window_start:
            raise ValueError("window_end is before window_start")
        return self


class MeasurementCreate(BaseModel):
    """One measurement as a caller imports it (JSON), or as one CSV row maps onto it."""

    model_config = ConfigDict(extra="forbid")

    model_id: UUID | None = Field(default=None, description="a registered model of the project, when there is one")
    model_name: Label = Field(description="the model as measured, e.g. meta-llama/Llama-3.1-8B-Instruct")
    architecture: str | None = Field(default=None, max_length=64, pattern=IDENTIFIER_PATTERN)
    parameter_count: int | None = Field(default=None, ge=1, le=100_000_000_000_000)
    gpu_type: str = Field(max_length=64, description="a GPU type or alias of the catalog; stored canonical")
    runtime: str = Field(max_length=32, description="vllm | sglang | tensorrt-llm (trtllm)")
    runtime_version: str | None = Field(default=None, max_length=64)
    precision: str | None = Field(default=None, max_length=32, description="bf16, fp8, fp4, int4, ...")
    quantization: str | None = Field(default=None, max_length=40, description="gemm quantization, e.g. fp8_block")
    tp: int = Field(default=1, ge=1, le=64)
    pp: int = Field(default=1, ge=1, le=64)
    max_num_seqs: int | None = Field(default=None, ge=1, le=65_536)
    max_num_batched_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    input_tokens: int = Field(ge=1, le=MAX_TOKENS)
    output_tokens: int = Field(ge=1, le=MAX_TOKENS)
    concurrency: int = Field(ge=1, le=100_000)
    ttft_p50_ms: Millis
    ttft_p99_ms: Millis | None = None
    tpot_p50_ms: Millis
    tpot_p99_ms: Millis | None = None
    throughput_tps: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False,
                                         description="output tokens per second")
    request_count: int | None = Field(default=None, ge=0, le=100_000_000)
    source: MeasurementSource = Field(default_factory=MeasurementSource)

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type(cls, value: str) -> str:
        return canonical_gpu_type(value)

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        name = value.strip().lower()
        name = RUNTIME_ALIASES.get(name, name)
        if name not in RUNTIMES:
            raise ValueError(f"unknown runtime {value[:32]!r}; known: {', '.join(RUNTIMES)}")
        return name

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        precision = find_precision(value)
        if precision is None:
            raise ValueError(f"unknown precision {value[:32]!r}; known: bf16, fp16, fp32, fp8, int8, fp4, int4")
        return precision.name

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value):
        return storable_text(value)

    @model_validator(mode="after")
    def _percentiles(self) -> "MeasurementCreate":
        if self.ttft_p99_ms is not None and self.ttft_p99_ms < self.ttft_p50_ms:
            raise ValueError("ttft_p99_ms is below ttft_p50_ms")
        if self.tpot_p99_ms is not None and self.tpot_p99_ms < self.tpot_p50_ms:
            raise ValueError("tpot_p99_ms is below tpot_p50_ms")
        return self


class MeasurementOut(BaseModel):
    id: UUID
    project_id: UUID
    model_id: UUID | None
    model_name: str
    architecture: str | None
    parameter_count: int | None
    gpu_type: str
    runtime: str
    runtime_version: str | None
    precision: str | None
    quantization: str | None
    tp: int
    pp: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    input_tokens: int
    output_tokens: int
    concurrency: int
    ttft_p50_ms: float
    ttft_p99_ms: float | None
    tpot_p50_ms: float
    tpot_p99_ms: float | None
    throughput_tps: float | None
    request_count: int | None
    source: MeasurementSource
    created_at: datetime


class MeasurementPage(BaseModel):
    items: list[MeasurementOut]
    next_cursor: str | None


class ImportResult(BaseModel):
    imported: int
    ids: list[UUID]
