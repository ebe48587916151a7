"""Data crossing budsim's boundary (API, workflows, CLI): pydantic v2 models, JSON-serialisable."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from budsim.calibration import Calibration
from core.model_facts import ModelArchitecture

RUNTIMES = ("vllm", "sglang", "tensorrt-llm")


def _normalize_runtime(value: str) -> str:
    name = (value or "").strip().lower()
    return {"trtllm": "tensorrt-llm", "tensorrt_llm": "tensorrt-llm", "trt-llm": "tensorrt-llm"}.get(name, name)


class ServingConfig(BaseModel):
    """What a deployment runs: parallelism, batching and memory knobs (vLLM names), and how many replicas."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    max_num_seqs: int = Field(default=256, ge=1, description="sequences one replica runs at once")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="token budget of one scheduler step")
    max_model_len: int = Field(default=8192, ge=1, description="longest prompt + answer one sequence may hold")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    replicas: int = Field(default=1, ge=1)
    runtime: str = Field(default="vllm", description="vllm | sglang | tensorrt-llm")

    @field_validator("runtime")
    @classmethod
    def _runtime_alias(cls, value: str) -> str:
        return _normalize_runtime(value)

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_replica * self.replicas


class Workload(BaseModel):
    """Steady closed-loop load: `concurrency` clients in total, each sending a prompt and awaiting the answer."""

    input_tokens: int = Field(default=1024, ge=1)
    output_tokens: int = Field(default=256, ge=1)
    concurrency: int = Field(default=16, ge=1, description="concurrent requests across all replicas")


class Prediction(BaseModel):
    """Predicted steady-state performance and cost of a config under a workload."""

    ttft_ms: float = Field(description="mean time to first token, queueing included")
    tpot_ms: float = Field(description="mean time per output token after the first")
    e2e_latency_ms: float = Field(description="ttft + (output_tokens - 1) * tpot")
    output_throughput_tps: float = Field(
        description="output tokens per second, all replicas, at the workload's concurrency"
    )
    max_throughput_tps: float = Field(
        description="capacity: output tokens per second with every replica's max_num_seqs slots busy"
    )
    cost_per_hour: float = Field(description="USD per hour for every GPU of every replica")
    cost_per_million_tokens: float = Field(description="USD per million output tokens at that throughput")
    roofline_ttft_ms: float = Field(description="the analytic model's TTFT before the learned correction")
    roofline_tpot_ms: float = Field(description="the analytic model's TPOT before the learned correction")
    running_per_replica: float = Field(description="sequences a replica runs at once (max_num_seqs, KV cache)")
    queued: bool = Field(description="whether some requests wait for a free slot")
    ttft_p10_ms: float | None = Field(default=None, description="P10 of the TTFT the predictor's errors allow")
    ttft_p90_ms: float | None = Field(default=None, description="P90 of the TTFT the predictor's errors allow")
    tpot_p10_ms: float | None = Field(default=None, description="P10 of the TPOT the predictor's errors allow")
    tpot_p90_ms: float | None = Field(default=None, description="P90 of the TPOT the predictor's errors allow")
    e2e_latency_p10_ms: float | None = Field(default=None, description="ttft_p10 + (output_tokens - 1) * tpot_p10")
    e2e_latency_p90_ms: float | None = Field(default=None, description="ttft_p90 + (output_tokens - 1) * tpot_p90")
    calibrated: bool = Field(default=False, description="whether a group calibration (measurements) was applied")
    calibration_warning: str | None = Field(
        default=None, description="set when the calibration found its measurements inconsistent"
    )


class Method(str, Enum):
    REGRESSOR = "REGRESSOR"  # NSGA-II over the predictor
    HEURISTIC = "HEURISTIC"  # direct search over the same space
    MANUAL = "MANUAL"  # predict and check the caller's config


# Every target lies in this range: past it a shortfall in percent would overflow a float (1e-300 ms), and nothing
# served is measured below a microsecond or above 1e12 of anything.
TARGET_MIN = 1e-3
TARGET_MAX = 1e12


class Targets(BaseModel):
    """Performance targets; every one optional. Validated by the optimizer (a negative value is InvalidRequest)."""

    max_latency_ms: float | None = Field(default=None, description="end-to-end latency per request")
    max_ttft_ms: float | None = None
    min_throughput_tps: float | None = Field(default=None, description="output tokens/s, all replicas")
    max_cost_per_hour: float | None = None
    confidence: Literal["expected", "high"] = Field(
        default="expected",
        description="expected: a config meets a target when its predicted value does; high: when the pessimistic "
        "side of its P10-P90 interval does (P90 TTFT and latency, the throughput they give)",
    )


class ProductionCalibration(BaseModel):
    """Measured / predicted ratios from a deployment in production (monitoring): later predictions for the same model,
    GPU and runtime are scaled by them."""

    ttft_scale: float = Field(default=1.0, gt=0.01, lt=100)
    tpot_scale: float = Field(default=1.0, gt=0.01, lt=100)


class OptimizationRequest(BaseModel):
    model: ModelArchitecture
    gpu_type: str = Field(description="catalog name or alias, e.g. 'nvidia-h100-80gb' or 'h100_sxm'")
    available_gpus: int = Field(description="free GPUs of that type in the cluster")
    runtime: str = "vllm"
    method: Method = Method.REGRESSOR
    targets: Targets = Field(default_factory=Targets)
    workload: Workload = Field(default_factory=Workload)
    config: ServingConfig | None = Field(default=None, description="the config to check (MANUAL only)")
    max_model_len: int | None = Field(default=None, description="context to provision; default: the workload's")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    price_per_hour: float | None = Field(default=None, description="USD per GPU-hour; default: the catalog's")
    calibration: ProductionCalibration = Field(default_factory=ProductionCalibration)
    group_calibration: Calibration | None = Field(
        default=None,
        description="the model / GPU type / runtime / precision's correction fitted from its measurements "
        "(budsim.calibration.calibrate); every prediction of the search uses it",
    )
    seed: int = 0
    population_size: int = Field(default=48, ge=8, le=400)
    generations: int = Field(default=25, ge=1, le=400)

    @field_validator("runtime")
    @classmethod
    def _runtime_alias(cls, value: str) -> str:
        return _normalize_runtime(value)


class Candidate(BaseModel):
    config: ServingConfig
    prediction: Prediction


class TargetMiss(BaseModel):
    """One target a config fails, and by how much."""

    target: str
    limit: float
    predicted: float
    shortfall_pct: float = Field(description="how far past the limit, in percent of the limit")
    basis: Literal["expected", "p90"] = Field(
        default="expected", description="judged on the predicted value, or (confidence high) its pessimistic side"
    )


class Recommendation(BaseModel):
    config: ServingConfig
    prediction: Prediction
    meets_targets: bool
    failed_targets: list[TargetMiss] = Field(default_factory=list)
    reason: str


class RejectedConfig(BaseModel):
    config: ServingConfig
    reasons: list[str]


class OptimizationResult(BaseModel):
    method: Method
    gpu_type: str
    meets_targets: bool
    recommendation: Recommendation | None = Field(description="None only when no config can run at all")
    pareto: list[Candidate] = Field(default_factory=list, description="throughput vs latency vs cost front")
    rejected: list[RejectedConfig] = Field(default_factory=list)
    evaluated: int = Field(default=0, description="distinct configs predicted")
    message: str = ""
    calibration: Calibration | None = Field(
        default=None, description="the group calibration every prediction used: its measurements and coefficients"
    )


class SearchState(BaseModel):
    """A resumable NSGA-II search: the request, the population and the archive, as plain JSON lists.

    `advance_search` runs whole generations from it; `finish_search` turns it into an OptimizationResult.
    """

    request: OptimizationRequest
    generation: int = 0
    population: list[list[int]] = Field(default_factory=list, description="genes (indices into the choice lists)")
    rng_state: list[int] = Field(default_factory=list, description="numpy bit-generator words, to resume exactly")
    archive: list[list[int]] = Field(default_factory=list, description="every distinct gene vector evaluated")
    done: bool = False
